import dataclasses
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

from progsr.errors import UserError
from progsr.export import main as export_main
from progsr.metrics import psnr
from progsr.paths import shared_dir
from progsr.resize import imresize
from progsr.train import main
from progsr.training.checkpoints import MetricsLog, list_checkpoints, load_checkpoint, save_atomic, weights_digest
from progsr.training.config import (PRESETS, TrainConfig, apply_overrides, check_config, learning_rate, load_config,
                                    schedule, stage_boundaries)

REPO = Path(__file__).resolve().parent.parent

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    """A small training folder (two skimage photos, reduced) and a validation folder."""
    root = tmp_path_factory.mktemp("data")
    (root / "train").mkdir()
    (root / "val").mkdir()
    Image.fromarray(skdata.astronaut()[::4, ::4]).save(root / "train" / "astronaut.png")  # 128x128
    Image.fromarray(skdata.chelsea()[::3, ::3]).save(root / "train" / "chelsea.webp", lossless=True)
    Image.fromarray(skdata.coffee()[100:164, 200:296]).save(root / "val" / "coffee.png")  # 64x96
    return root


def _run(folders, out, *extra):
    return main(["--config", "tiny", "--data", str(folders / "train"), "--val", str(folders / "val"),
                 "--out", str(out), "--device", "cpu", *extra])


def _records(out):
    return [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]


def _assert_same(a, b, path="checkpoint"):
    """Every tensor equal (torch.equal) and every other value equal, except wall-clock time and the
    validation history (a stopped run also validates where it stops)."""
    if isinstance(a, torch.Tensor):
        assert isinstance(b, torch.Tensor) and a.dtype == b.dtype and torch.equal(a, b), path
    elif isinstance(a, dict):
        assert a.keys() == b.keys(), path
        for key in a:
            if key not in ("train_seconds", "time", "validation"):
                _assert_same(a[key], b[key], f"{path}.{key}")
    elif isinstance(a, (list, tuple)):
        assert len(a) == len(b), path
        for i, (x, y) in enumerate(zip(a, b)):
            _assert_same(x, y, f"{path}[{i}]")
    else:
        assert a == b, path


# ------------------------------------------------------------------------------------------ pure functions


def test_schedule_boundaries():
    cfg = TrainConfig(stage1_iters=10, fade_iters=(4, 5), stable_iters=(3, 2), iters=40)
    assert schedule(0, cfg) == (1, 1.0)
    assert schedule(9, cfg) == (1, 1.0)
    assert schedule(10, cfg) == (2, 0.25)  # first fade iteration: alpha 1/4, never 0
    assert schedule(12, cfg) == (2, 0.75)
    assert schedule(13, cfg) == (2, 1.0)  # last fade iteration reaches exactly 1
    assert schedule(16, cfg) == (2, 1.0)  # end of stable
    assert schedule(17, cfg) == (3, 0.2)
    assert schedule(21, cfg) == (3, 1.0)
    assert schedule(39, cfg) == (3, 1.0)  # the last stage runs on
    assert schedule(1000, cfg) == (3, 1.0)
    assert stage_boundaries(cfg) == {10, 14, 17, 22}
    simultaneous = dataclasses.replace(cfg, schedule="simultaneous")
    assert schedule(0, simultaneous) == (3, 1.0) and stage_boundaries(simultaneous) == set()


def test_schedule_without_fades():
    cfg = TrainConfig(stage1_iters=2, fade_iters=(0, 0), stable_iters=(2, 0), iters=10)
    assert [schedule(i, cfg) for i in range(6)] == [(1, 1.0), (1, 1.0), (2, 1.0), (2, 1.0), (3, 1.0), (3, 1.0)]


def test_learning_rate_warmup_and_cosine():
    cfg = TrainConfig(lr=1e-3, lr_min=1e-5, warmup_iters=10, lr_decay_iters=110, iters=50)
    assert learning_rate(0, cfg.lr, cfg) == pytest.approx(1e-4)
    assert learning_rate(9, cfg.lr, cfg) == pytest.approx(1e-3)
    assert learning_rate(10, cfg.lr, cfg) == pytest.approx(1e-3)
    assert learning_rate(60, cfg.lr, cfg) == pytest.approx((1e-3 + 1e-5) / 2)
    assert learning_rate(110, cfg.lr, cfg) == pytest.approx(1e-5)
    assert learning_rate(60, 2e-3, cfg) == pytest.approx((2e-3 + 2e-5) / 2)  # D's rate follows the same shape
    # a time-budgeted chunk: the cosine follows the chunk's elapsed fraction and ends at lr_min
    assert learning_rate(20, cfg.lr, cfg, budget_fraction=0.5) == pytest.approx((1e-3 + 1e-5) / 2)
    assert learning_rate(20, cfg.lr, cfg, budget_fraction=1.2) == pytest.approx(1e-5)


def test_presets_are_valid():
    for name, make in PRESETS.items():
        check_config(make())
    gan = load_config("x8_gan")
    assert gan.phase == "gan" and gan.adversarial_weight > 0 and gan.perceptual_weight > 0
    # trained on LPIPS-vgg, validated (and benchmarked) on LPIPS-alex: the benchmark is not the objective
    assert gan.perceptual_net == "vgg" and gan.val_lpips


def test_the_real_world_preset_degrades_its_inputs_and_replays_no_fade():
    real = load_config("x8_real")
    assert real.degradation and real.schedule == "simultaneous" and real.phase == "psnr"
    with pytest.raises(UserError, match="degradation: noise_range"):
        check_config(apply_overrides(real, ['degradation={"noise_range": [9, 1]}']))


def test_overrides_are_typed():
    cfg = apply_overrides(TrainConfig(), ["batch_size=4", "lr=1e-3", "fade_iters=[1,2]", "amp=false",
                                          "generator.blocks=[1,1,1]", "schedule=simultaneous"])
    assert (cfg.batch_size, cfg.lr, cfg.fade_iters, cfg.amp, cfg.schedule) == (4, 1e-3, (1, 2), False, "simultaneous")
    assert cfg.generator == {"blocks": [1, 1, 1]}
    with pytest.raises(UserError, match="expected an integer"):
        apply_overrides(TrainConfig(), ["batch_size=4.5"])
    with pytest.raises(UserError, match="unknown config key"):
        apply_overrides(TrainConfig(), ["batchsize=4"])


# --------------------------------------------------------------------------------------- config errors


@pytest.mark.parametrize("make_args, message", [
    (lambda t, f: ["--config", str(t / "bad_key.json")], "unknown config key"),
    (lambda t, f: ["--config", str(t / "bad_type.json")], "batch_size: expected an integer"),
    (lambda t, f: ["--config", "nope"], "not a preset"),
    (lambda t, f: ["--config", "tiny", "--set", "generator.channelz=[1]"], "unknown config key.*did you mean channels"),
    (lambda t, f: ["--config", "tiny", "--set", "phase=psnr", "--set", "adversarial_weight=1"], "needs phase gan"),
    (lambda t, f: ["--config", "tiny", "--set", "lr_crop=[8,8]"], "lr_crop need 3 entries"),
    (lambda t, f: ["--config", "tiny", "--set", "scale_mix=[1,1,0]"], "top scale"),
    (lambda t, f: ["--config", "tiny", "--set", "fade_iters=[1]"], "2 entries"),
    (lambda t, f: ["--config", "tiny", "--set", "perceptual_layers=0"], "perceptual_layers must be 1 to 5"),
    (lambda t, f: ["--config", "tiny", "--set", "adversarial_loss=wgan"], "adversarial_loss must be one of"),
    (lambda t, f: ["--config", "tiny", "--set", "adversarial_stages=last"], "adversarial_stages must be one of"),
    (lambda t, f: ["--config", "tiny", "--set", "grid_weight=-1"], "loss weights must be >= 0.*grid_weight"),
    (lambda t, f: ["--config", "tiny", "--set", "high_frequency_scales=[16]"], "high_frequency_scales must be among"),
])
def test_bad_config_is_a_one_line_error_before_any_work(tmp_path, folders, make_args, message):
    (tmp_path / "bad_key.json").write_text(json.dumps({"base": "tiny", "learning_rate": 1}))
    (tmp_path / "bad_type.json").write_text(json.dumps({"base": "tiny", "batch_size": "big"}))
    out = tmp_path / "run"
    args = make_args(tmp_path, folders) + ["--data", str(folders / "train"), "--out", str(out), "--device", "cpu"]
    with pytest.raises(UserError, match=message) as err:
        main(args)
    assert "\n" not in str(err.value)
    assert not out.exists()


def test_missing_data_folder_is_an_error_before_any_work(tmp_path, folders):
    with pytest.raises(UserError, match="missing.*not found"):
        main(["--config", "tiny", "--data", str(tmp_path / "missing"), "--out", str(tmp_path / "run")])
    with pytest.raises(UserError, match="validation folder not found"):
        main(["--config", "tiny", "--data", str(folders / "train"), "--val", str(tmp_path / "nope"),
              "--out", str(tmp_path / "run")])
    assert not (tmp_path / "run").exists()


# ------------------------------------------------------------------------------------------- end to end


def test_tiny_degraded_run_validates_on_the_medium_level(tmp_path, folders):
    out = tmp_path / "real"
    assert _run(folders, out, "--set", 'degradation={"order": "shuffled"}', "--iters", "8") == 0
    records = _records(out)
    bicubic = records[0]
    from progsr.training.data import load_validation
    from progsr.training.validation import make_validation_set

    clean = make_validation_set(load_validation(str(folders / "val"))[1], [8])
    clean_bicubic = float(np.mean([psnr(imresize(lr, scale=8), hr, crop_border=8) for _, hr, lr in clean]))
    assert bicubic["val/bicubic_x8"] < clean_bicubic - 0.1  # the baseline is scored on degraded LR
    assert json.loads((out / "config.json").read_text())["degradation"] == {"order": "shuffled"}


def test_tiny_psnr_then_gan_end_to_end(tmp_path, folders):
    psnr_run = tmp_path / "psnr"
    assert _run(folders, psnr_run, "--set", "triplet_weight=0.5") == 0
    records = _records(psnr_run)
    val = [r for r in records if "val/psnr_x8" in r]
    assert [r["it"] for r in val] == [8, 16]
    assert all(np.isfinite(r["val/psnr_x2"]) for r in val)
    losses = [r for r in records if "loss/total" in r]
    assert {r["stage"] for r in losses} == {1, 2, 3}
    # the triplet term is on and reaches the total with its weight (tiny: pixel_weight 1)
    assert all(r["loss/triplet"] > 0 for r in losses)
    assert all(r["loss/total"] == pytest.approx(r["loss/pixel"] + 0.5 * r["loss/triplet"], rel=1e-5) for r in losses)
    assert sorted(p.name for p in (psnr_run / "samples").iterdir()) == ["it_00000008.png", "it_00000016.png"]
    grid = np.asarray(Image.open(psnr_run / "samples" / "it_00000016.png"))
    assert grid.shape == (64, 6 * 64, 3)  # one row (64 px crop), LR | bicubic | x2 | x4 | x8 | HR
    ckpts = list_checkpoints(psnr_run)
    assert [p.name for p in ckpts] == ["ckpt_00000008.pt", "ckpt_00000010.pt", "ckpt_00000016.pt"]  # keep 3

    # export: the EMA generator with its config and metadata
    weights = tmp_path / "psnr.safetensors"
    assert export_main([str(psnr_run), str(weights)]) == 0
    from progsr.models.io import load_generator

    model, meta = load_generator(weights)
    state = load_checkpoint(ckpts[-1])
    assert all(torch.equal(v, state["G_ema"][k]) for k, v in model.state_dict().items())
    assert meta["iterations"] == "16" and meta["phase"] == "psnr"
    assert json.loads(meta["training_data"]) == ["train"]
    assert json.loads(meta["validation"])["val/psnr_x8"] == pytest.approx(val[-1]["val/psnr_x8"])

    # gan phase from the exported PSNR weights, every term on (LPIPS only where the shared backbones are)
    gan_run = tmp_path / "gan"
    lpips = shared_dir() is not None and (shared_dir() / "backbones").is_dir()
    assert _run(folders, gan_run, "--set", "phase=gan", "--init", str(weights), "--iters", "8",
                "--set", "adversarial_weight=0.1", "--set", "triplet_weight=1", "--set", "triplet_distance=dfeat",
                "--set", f"perceptual_weight={0.5 if lpips else 0}", "--set", "perceptual_net=alex",
                "--set", "d_steps=2") == 0
    records = _records(gan_run)
    losses = [r for r in records if "loss/total" in r]
    assert all(np.isfinite(r["loss/adversarial"]) and np.isfinite(r["loss/d_loss"]) for r in losses)
    assert ("loss/perceptual" in losses[-1]) == lpips
    gan_state = load_checkpoint(list_checkpoints(gan_run)[-1])
    assert gan_state["D"] is not None and gan_state["opt_D"] is not None
    # fine-tuned from the PSNR weights with no fade replayed: every stage trained from the first iteration,
    # so every weight of G moved on from the PSNR file's
    assert gan_state["iteration"] == 8 and gan_state["config"]["schedule"] == "simultaneous"
    assert all(r["stage"] == 3 and r["alpha"] == 1.0 and "loss/pixel_x8" in r for r in losses)
    init = model.state_dict()
    assert all(not torch.equal(init[k], gan_state["G"][k]) for k in init)


def test_overfitting_one_image_beats_bicubic(tmp_path):
    """A one-stage x2 model fitted to one 32x32 textured crop for 60 iterations gains several dB over bicubic."""
    folder = tmp_path / "img"
    folder.mkdir()
    hr = np.ascontiguousarray(skdata.astronaut()[128:160, 160:192])
    Image.fromarray(hr).save(folder / "crop.png")
    out = tmp_path / "run"
    assert main(["--config", "tiny", "--data", str(folder), "--val", str(folder), "--out", str(out), "--device", "cpu",
                 "--set", 'generator={"channels": [32, 32], "blocks": [2]}', "--set", "fade_iters=[]",
                 "--set", "scale_mix=[1]", "--set", "lr_crop=[16]",
                 "--set", "stable_iters=[]", "--set", "lr=0.002", "--set", "lr_decay=constant",
                 "--set", "ema_half_life=0", "--set", "augment=false", "--set", "iters=60", "--set", "val_every=60"]) == 0
    bicubic = psnr(imresize(imresize(hr, scale=1 / 2), scale=2), hr, crop_border=2)
    final = [r for r in _records(out) if "val/psnr_x2" in r][-1]["val/psnr_x2"]
    assert [r for r in _records(out) if "val/bicubic_x2" in r][0]["val/bicubic_x2"] == pytest.approx(bicubic)
    assert final > bicubic + 2.0, (final, bicubic)


def test_resume_is_bit_identical(tmp_path, folders):
    """gan phase (G, D, both optimizers, EMA, triplet on D features): 12 iterations in one go == 5 + resume to 12."""
    extra = ["--set", "phase=gan", "--set", "adversarial_weight=0.1", "--set", "triplet_weight=1",
             "--set", "triplet_distance=dfeat", "--iters", "12", "--set", "val_every=0"]
    whole, split = tmp_path / "whole", tmp_path / "split"
    assert _run(folders, whole, *extra) == 0
    assert _run(folders, split, *extra, "--stop-after", "5") == 0
    assert load_checkpoint(list_checkpoints(split)[-1])["iteration"] == 5
    with pytest.raises(UserError, match="--resume auto"):
        _run(folders, split, *extra)  # no silent restart over an existing run
    assert main(["--out", str(split), "--resume", "auto", "--device", "cpu"]) == 0  # config and folders from the run
    a = load_checkpoint(list_checkpoints(whole)[-1])
    b = load_checkpoint(list_checkpoints(split)[-1])
    assert a["iteration"] == b["iteration"] == 12
    _assert_same(a, b)
    _assert_same(a["run"]["validation"][-1], b["run"]["validation"][-1])
    # the log has each iteration once, as if never interrupted
    its = lambda out: [r["it"] for r in _records(out) if "loss/total" in r]  # noqa: E731
    assert its(split) == its(whole)


def test_max_minutes_stops_cleanly_with_a_checkpoint(tmp_path, folders):
    out = tmp_path / "run"
    assert _run(folders, out, "--max-minutes", "1e-9") == 0
    state = load_checkpoint(list_checkpoints(out)[-1])
    assert state["iteration"] == 1
    assert [r["it"] for r in _records(out) if "val/psnr_x8" in r] == [1]  # validated at the stop


def test_ddp_two_cpu_processes_keep_identical_replicas(tmp_path, folders):
    out = tmp_path / "ddp"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
           "-m", "progsr.train", "--config", "tiny", "--data", str(folders / "train"), "--val", "none",
           "--out", str(out), "--device", "cpu", "--iters", "6", "--set", "ckpt_every=3",
           "--set", "phase=gan", "--set", "adversarial_weight=0.1"]
    proc = subprocess.run(cmd, env=env, cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    digests = [r["replica_sha256"] for r in _records(out) if "replica_sha256" in r]
    assert len(digests) >= 2  # checked at iterations 3, 4 (stage boundary), 6
    for per_rank in digests:
        assert len(per_rank) == 2 and per_rank[0] == per_rank[1]
    assert len({d[0] for d in digests}) == len(digests)  # the weights did change between checks
    # the digest rank 0 reported is that of the weights in its final checkpoint
    from progsr.models.discriminator import DiscriminatorConfig, ProgressiveDiscriminator
    from progsr.models.generator import GeneratorConfig, ProgressiveGenerator

    state = load_checkpoint(list_checkpoints(out)[-1])
    assert state["run"]["world_size"] == 2 and state["iteration"] == 6
    modules = []
    for key, make in (("G", lambda: ProgressiveGenerator(GeneratorConfig.from_dict(state["config"]["generator"]))),
                      ("G_ema", lambda: ProgressiveGenerator(GeneratorConfig.from_dict(state["config"]["generator"]))),
                      ("D", lambda: ProgressiveDiscriminator(DiscriminatorConfig.from_dict(state["config"]["discriminator"])))):
        module = make()
        module.load_state_dict(state[key])
        modules.append(module)
    assert weights_digest(*modules) == digests[-1][0]


def test_export_errors(tmp_path):
    with pytest.raises(UserError, match="no such checkpoint"):
        export_main([str(tmp_path / "missing.pt"), str(tmp_path / "out.safetensors")])
    with pytest.raises(UserError, match="no checkpoints"):
        export_main([str(tmp_path), str(tmp_path / "out.safetensors")])
    (tmp_path / "junk.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(UserError, match="not a readable training checkpoint"):
        export_main([str(tmp_path / "junk.pt"), str(tmp_path / "out.safetensors")])
    with pytest.raises(UserError, match=".safetensors"):
        export_main([str(tmp_path / "junk.pt"), str(tmp_path / "out.pt")])
    assert not (tmp_path / "out.safetensors").exists()


def test_export_grow_writes_the_same_function_with_more_blocks(tmp_path):
    from progsr.models.generator import GeneratorConfig, ProgressiveGenerator
    from progsr.models.io import load_generator, save_generator

    torch.manual_seed(0)
    small = ProgressiveGenerator(GeneratorConfig.tiny())
    src = save_generator(small, tmp_path / "small.safetensors", metadata={"phase": "psnr"})
    assert export_main([str(src), str(tmp_path / "grown.safetensors"), "--grow", "2", "3", "0"]) == 0
    grown, meta = load_generator(tmp_path / "grown.safetensors")
    assert list(grown.config.blocks) == [2, 3, 0] and meta["phase"] == "psnr"
    assert json.loads(meta["grown_from_blocks"]) == list(GeneratorConfig.tiny().blocks)
    x = torch.rand(1, 3, 9, 7)
    with torch.no_grad():
        for s in (2, 4, 8):
            assert torch.equal(grown(x, scale=s), small.eval()(x, scale=s))
    with pytest.raises(UserError, match="cannot grow"):
        export_main([str(tmp_path / "grown.safetensors"), str(tmp_path / "back.safetensors"), "--grow", "1", "1", "0"])
    with pytest.raises(UserError, match="already exists"):
        export_main([str(src), str(tmp_path / "grown.safetensors"), "--grow", "2", "3", "0"])
    assert not (tmp_path / "back.safetensors").exists()


def test_resume_drops_a_truncated_last_metrics_line(tmp_path):
    lines = [json.dumps({"it": i, "loss/total": 1.0 / i}) for i in (1, 2, 3)]
    (tmp_path / "metrics.jsonl").write_text("\n".join(lines) + '\n{"it": 4, "loss/to')  # killed mid-write
    log = MetricsLog(tmp_path, resume_iteration=2)
    log.write({"it": 3, "loss/total": 0.5})
    log.close()
    assert _records(tmp_path) == [json.loads(lines[0]), json.loads(lines[1]), {"it": 3, "loss/total": 0.5}]
    assert not any(p.name.startswith(".") for p in tmp_path.iterdir())  # no temp file left


def test_checkpoints_are_written_atomically_with_the_umask_mode(tmp_path):
    old = os.umask(0o022)
    try:
        save_atomic({"w": torch.arange(3)}, tmp_path / "ckpt.pt")
    finally:
        os.umask(old)
    assert (tmp_path / "ckpt.pt").stat().st_mode & 0o777 == 0o644
    assert torch.equal(torch.load(tmp_path / "ckpt.pt")["w"], torch.arange(3))
    class Unpicklable:
        def __reduce__(self):
            raise RuntimeError("cannot pickle")

    with pytest.raises(RuntimeError, match="cannot pickle"):
        save_atomic({"w": torch.arange(3), "bad": Unpicklable()}, tmp_path / "ckpt.pt")  # fails half-way
    assert [p.name for p in tmp_path.iterdir()] == ["ckpt.pt"]
    assert torch.equal(torch.load(tmp_path / "ckpt.pt")["w"], torch.arange(3))


# ------------------------------------------------------------------------------------- runs in chunks


def test_sigint_writes_a_checkpoint_that_resume_continues_from(tmp_path, folders):
    """Ctrl-C mid-run: exit 130 with a checkpoint at the iteration reached; --resume auto then finishes the run."""
    import signal
    import time

    out = tmp_path / "run"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}
    cmd = [sys.executable, "-m", "progsr.train", "--config", "tiny", "--data", str(folders / "train"), "--val", "none",
           "--out", str(out), "--device", "cpu", "--threads", "1", "--iters", "100000", "--set", "log_every=1",
           "--set", "ckpt_every=100000", "--set", "lr_decay_iters=100000", "--set", "stage1_iters=100000"]
    proc = subprocess.Popen(cmd, env=env, cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 120
    while time.time() < deadline and proc.poll() is None:  # wait until it is training, a few iterations in
        log = out / "metrics.jsonl"
        if log.exists() and sum(1 for line in log.read_text().splitlines() if '"loss/total"' in line) >= 3:
            break
        time.sleep(0.2)
    proc.send_signal(signal.SIGINT)
    _, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 130, stderr[-2000:]
    assert "SIGINT received" in stderr and "Traceback" not in stderr
    ckpts = list_checkpoints(out)
    assert len(ckpts) == 1
    reached = load_checkpoint(ckpts[0])["iteration"]
    assert reached >= 3
    assert main(["--out", str(out), "--resume", "auto", "--device", "cpu", "--iters", str(reached + 2)]) == 0
    assert load_checkpoint(list_checkpoints(out)[-1])["iteration"] == reached + 2
    its = [r["it"] for r in _records(out) if "loss/total" in r]
    assert its == list(range(1, reached + 3))  # every iteration logged once across the interruption


def test_extending_a_run_keeps_its_learning_rate_schedule(tmp_path, folders):
    """Stopping at 8 and extending with --iters 16 gives the same learning rates as one 16-iteration run."""
    extra = ["--set", "log_every=1", "--set", "val_every=0", "--set", "warmup_iters=2", "--set", "lr_decay_iters=16"]
    whole, chunked = tmp_path / "whole", tmp_path / "chunked"
    assert _run(folders, whole, *extra, "--iters", "16") == 0
    assert _run(folders, chunked, *extra, "--iters", "8") == 0
    assert main(["--out", str(chunked), "--resume", "auto", "--device", "cpu", "--iters", "16"]) == 0
    rates = lambda out: [r["lr"] for r in _records(out) if "lr" in r]  # noqa: E731
    assert len(rates(whole)) == 16 and rates(chunked) == pytest.approx(rates(whole))
    assert rates(whole)[-1] == pytest.approx(learning_rate(15, 1e-3, dataclasses.replace(load_config("tiny"), warmup_iters=2)))


def test_budget_mode_anneals_within_the_budget_and_checkpoints_on_time(tmp_path, folders):
    """The one-call GPU mode, on the CPU with a tiny budget: it stops at the budget with lr near lr_min."""
    out = tmp_path / "run"
    assert _run(folders, out, "--budget-minutes", "0.05", "--iters", "1000000", "--set", "log_every=1",
                "--set", "val_every=0", "--set", "ckpt_every=1000000", "--set", "ckpt_every_minutes=0.01",
                "--set", "keep_ckpts=100", "--set", "warmup_iters=0", "--set", "lr_decay_iters=1000000") == 0
    records = [r for r in _records(out) if "lr" in r]
    assert records[-1]["time"] >= 3.0  # ran for the budget (0.05 min of training time) ...
    assert records[-1]["lr"] < 0.02 * records[0]["lr"]  # ... and ended annealed, though lr_decay_iters is far away
    assert all(a["lr"] >= b["lr"] for a, b in zip(records, records[1:]))
    ckpts = list_checkpoints(out)
    assert len(ckpts) >= 3  # every 0.6 s of training, and at the end
    assert load_checkpoint(ckpts[-1])["iteration"] == records[-1]["it"]


def test_resume_auto_without_a_checkpoint_says_so(tmp_path, folders, capsys):
    out = tmp_path / "run"
    assert _run(folders, out, "--resume", "auto", "--iters", "2", "--set", "val_every=0") == 0
    assert "no checkpoint" in capsys.readouterr().err
    for ckpt in list_checkpoints(out):
        ckpt.unlink()
    with pytest.raises(UserError, match="metrics log but no checkpoint"):  # never a silent restart over a log
        _run(folders, out, "--resume", "auto")


def test_init_from_a_generator_with_fewer_blocks_grows_it(folders, tmp_path):
    from progsr.models import GeneratorConfig, ProgressiveGenerator, save_generator

    torch.manual_seed(0)
    small = ProgressiveGenerator(GeneratorConfig.tiny())
    weights = save_generator(small, tmp_path / "small.safetensors")
    out = tmp_path / "grown"
    assert _run(folders, out, "--init", str(weights), "--set", "generator.blocks=[2,2,0]", "--stop-after", "1",
                "--set", "lr=1e-12", "--set", "warmup_iters=0") == 0
    state = load_checkpoint(list_checkpoints(out)[-1])
    assert state["config"]["generator"]["blocks"] == [2, 2, 0]
    # one step at a negligible learning rate: every weight of the small model is still there, and more blocks
    kept = small.state_dict()
    assert all(torch.allclose(v, state["G"][k], atol=1e-9) for k, v in kept.items())
    assert set(state["G"]) > set(kept)
    with pytest.raises(UserError, match="they can only grow"):
        _run(folders, tmp_path / "wider", "--init", str(weights), "--set", "generator.channels=[8,8,4,4]")
