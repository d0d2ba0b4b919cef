"""The training loop's own rules: the EMA update, and DDP decisions taken on rank 0's clock (budget, timed checkpoints)."""

import json
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
from progsr.training.loop import update_ema

REPO = Path(__file__).resolve().parent.parent


def test_ema_follows_its_ramp_then_its_beta():
    ema, model = torch.nn.Linear(2, 2), torch.nn.Linear(2, 2)
    ema.register_buffer("count", torch.zeros(1))
    model.register_buffer("count", torch.ones(1))
    before = [p.detach().clone() for p in ema.parameters()]
    update_ema(ema, model, it=0, ema_beta=0.999)  # the ramp: beta = 1/10 at the first iteration
    for old, new, target in zip(before, ema.parameters(), model.parameters()):
        assert torch.allclose(new, 0.1 * old + 0.9 * target)
    assert torch.equal(ema.count, model.count)  # buffers are copied, not averaged
    before = [p.detach().clone() for p in ema.parameters()]
    update_ema(ema, model, it=100000, ema_beta=0.99)  # late: beta is ema_beta
    for old, new, target in zip(before, ema.parameters(), model.parameters()):
        assert torch.allclose(new, 0.99 * old + 0.01 * target)


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
