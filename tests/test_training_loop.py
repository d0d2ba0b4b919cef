"""The training loop's own rules: the EMA update, and DDP decisions taken on rank 0's clock (budget, timed checkpoints)."""

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from skimage import data as skdata

from progsr.training.checkpoints import list_checkpoints, load_checkpoint
from progsr.training.config import TrainConfig, ema_beta
from progsr.training.loop import update_ema

REPO = Path(__file__).resolve().parent.parent


def test_ema_update_is_a_lerp_and_copies_buffers():
    ema, model = torch.nn.Linear(2, 2), torch.nn.Linear(2, 2)
    ema.register_buffer("count", torch.zeros(1))
    model.register_buffer("count", torch.ones(1))
    before = [p.detach().clone() for p in ema.parameters()]
    update_ema(ema, model, 0.9)
    for old, new, target in zip(before, ema.parameters(), model.parameters()):
        assert torch.allclose(new, 0.9 * old + 0.1 * target)
    assert torch.equal(ema.count, model.count)  # buffers are copied, not averaged


def test_ema_half_life_is_in_samples_whatever_the_batch():
    cfg = TrainConfig(ema_half_life=800.0)
    for batch in (4, 8, 32):
        beta = ema_beta(10**6, batch, cfg, ramp=False)
        assert beta ** (800 / batch) == pytest.approx(0.5)  # after 800 samples the old average weighs half


def test_a_fine_tune_has_its_full_half_life_from_the_first_update_and_a_fresh_run_ramps():
    cfg = TrainConfig(ema_half_life=800.0)
    assert ema_beta(8, 8, cfg, ramp=False) == pytest.approx(0.5 ** (8 / 800))  # fine-tune: the first update
    assert ema_beta(8, 8, cfg, ramp=True) < 1e-6  # random init: 5% of 8 samples, so the average is G
    assert ema_beta(16000, 8, cfg, ramp=True) == pytest.approx(0.5 ** (8 / 800))  # ramp over at 800 / 0.05 samples
    assert ema_beta(8, 8, TrainConfig(ema_half_life=0.0), ramp=False) == 0.0  # 0 copies G


def test_old_configs_migrate_to_the_half_life_and_refuse_removed_terms():
    from progsr.errors import UserError
    from progsr.training.config import config_from_dict

    cfg = config_from_dict({"ema_beta": 0.999, "batch_size": 8, "artifact_weight": 0.0,
                            "high_frequency_band": "2-4px"}, TrainConfig(), "checkpoint config")
    assert cfg.ema_half_life == pytest.approx(8 * math.log(0.5) / math.log(0.999))  # about 5542 samples
    with pytest.raises(UserError, match="artifact_weight, a term removed"):
        config_from_dict({"artifact_weight": 1.0}, TrainConfig(), "checkpoint config")
    # every PSNR checkpoint says perceptual_stages "all" with the term off: it loads; a GAN config with it does not
    config_from_dict({"perceptual_stages": "all", "perceptual_weight": 0.0}, TrainConfig(), "checkpoint config")
    config_from_dict({"perceptual_stages": "top", "perceptual_weight": 1.0}, TrainConfig(), "checkpoint config")
    with pytest.raises(UserError, match="perceptual_stages, a term removed"):
        config_from_dict({"perceptual_stages": "all", "perceptual_weight": 1.0}, TrainConfig(), "checkpoint config")


def test_fine_tuning_from_init_weights_runs_every_stage_from_the_first_iteration(tmp_path, train_folder):
    """No fade replay on trained weights: the progressive curriculum is skipped, and the log says so."""
    from helpers import random_tiny

    from progsr.models.io import save_generator
    from progsr.train import main

    weights = save_generator(random_tiny(3), tmp_path / "init.safetensors")
    out = tmp_path / "tune"
    assert main(["--config", "tiny", "--init", str(weights), "--data", str(train_folder), "--val", "none",
                 "--out", str(out), "--device", "cpu", "--iters", "6", "--set", "log_every=1"]) == 0
    records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    steps = [r for r in records if "loss/total" in r]
    assert [r["stage"] for r in steps] == [3] * 6 and all(r["alpha"] == 1.0 for r in steps)
    assert all(f"loss/pixel_x{s}" in steps[0] for s in (2, 4, 8))
    assert json.loads((out / "config.json").read_text())["schedule"] == "simultaneous"


@pytest.fixture(scope="module")
def train_folder(tmp_path_factory):
    root = tmp_path_factory.mktemp("ddp_data")
    Image.fromarray(skdata.astronaut()[::4, ::4]).save(root / "astronaut.png")
    Image.fromarray(skdata.chelsea()[::3, ::3]).save(root / "chelsea.png")
    return root


def test_ddp_budget_mode_with_timed_checkpoints_keeps_replicas_identical_and_finishes(tmp_path, train_folder):
    """Two gloo ranks, a 4-second budget and a timed checkpoint every 0.3 s of training.

    Each rank's own clock differs from the other's by a little every iteration: taking the learning rate
    from it makes the replicas drift (their digests differ at a checkpoint), and deciding a timed
    checkpoint from it sends one rank into all_gather_object while the other is in a gradient all-reduce
    (a hang, caught by the timeout). Both decisions must come from rank 0's clock.
    """
    out = tmp_path / "ddp"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
           "-m", "progsr.train", "--config", "tiny", "--data", str(train_folder), "--val", "none",
           "--out", str(out), "--device", "cpu", "--iters", "100000", "--budget-minutes", str(4 / 60),
           "--set", "ckpt_every=100000", "--set", "ckpt_every_minutes=0.005", "--set", "keep_ckpts=2",
           "--set", "lr_decay_iters=100000", "--set", "log_every=10"]
    try:
        proc = subprocess.run(cmd, env=env, cwd=tmp_path, capture_output=True, text=True, timeout=240)
    except subprocess.TimeoutExpired as err:
        pytest.fail(f"the DDP run hung (no exit in 240 s)\n{(err.stderr or b'')[-3000:]}")
    assert proc.returncode == 0, proc.stderr[-3000:]
    records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    digests = [r for r in records if "replica_sha256" in r]
    assert len(digests) >= 4  # timed checkpoints happened along the way, not only at the end
    for record in digests:
        assert record["replica_sha256"][0] == record["replica_sha256"][1], record
    state = load_checkpoint(list_checkpoints(out)[-1])
    assert 0 < state["iteration"] < 100000  # the budget ended the run
    lrs = [r["lr"] for r in records if "lr" in r]
    assert lrs[-1] < 0.2 * lrs[0] and np.all(np.diff(lrs[1:]) <= 0)  # the budget's cosine, annealed by the end


def test_discriminator_warm_up_trains_d_alone_on_the_frozen_generator(tmp_path, train_folder):
    from helpers import random_tiny

    from progsr.models.io import save_generator
    from progsr.train import main

    init = random_tiny(3)
    weights = save_generator(init, tmp_path / "init.safetensors")

    def run(out, iters):
        assert main(["--config", "tiny", "--init", str(weights), "--data", str(train_folder), "--val", "none",
                     "--out", str(out), "--device", "cpu", "--iters", str(iters), "--set", "phase=gan",
                     "--set", "adversarial_weight=0.1", "--set", "d_warmup_iters=3", "--set", "ckpt_every=1"]) == 0
        return {load_checkpoint(p)["iteration"]: load_checkpoint(p) for p in list_checkpoints(out)}

    states = run(tmp_path / "warm", 4)
    for k, v in init.state_dict().items():  # G frozen for 3 iterations (also its EMA), then trained
        assert torch.equal(v, states[3]["G"][k]) and torch.equal(v, states[3]["G_ema"][k])
    assert any(not torch.equal(v, states[4]["G"][k]) for k, v in init.state_dict().items())
    assert any(not torch.equal(states[2]["D"][k], states[3]["D"][k]) for k in states[3]["D"])  # D trains meanwhile


def test_init_takes_a_shipped_model_by_name(tmp_path, monkeypatch):
    from helpers import random_tiny

    from progsr.models.io import save_generator
    from progsr.training.checkpoints import read_init_weights

    model = random_tiny(5)
    save_generator(model, tmp_path / "progsr_x8_psnr.safetensors")
    monkeypatch.setenv("PROGSR_WEIGHTS", str(tmp_path))
    config, state = read_init_weights("psnr")
    assert config == model.config.to_dict() and all(torch.equal(v, state[k]) for k, v in model.state_dict().items())
