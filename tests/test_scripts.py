"""The scripts users run from a checkout start and parse their options (they have no other tests of their own)."""

import subprocess
import sys

import pytest

from progsr.paths import REPO_ROOT

SCRIPTS = ["benchmarks/quality.py", "benchmarks/speed.py", "benchmarks/crops.py", "benchmarks/app_load.py",
           "benchmarks/memory.py", "benchmarks/validate.py", "benchmarks/train_cost.py", "app/app.py"]


@pytest.mark.parametrize("script", SCRIPTS)
def test_script_help_runs_from_the_checkout(script, tmp_path):
    # Run from an unrelated folder, as a user would, so imports must work from the script's own location.
    done = subprocess.run([sys.executable, str(REPO_ROOT / script), "--help"], cwd=tmp_path,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert "usage:" in done.stdout
    assert "Traceback" not in done.stderr


def test_gpu_train_script_runs_its_path_on_the_cpu_with_a_tiny_budget(tmp_path):
    """scripts/gpu_train.sh run: a budgeted chunk from the shipped weights, a checkpoint, an exported generator."""
    import os

    import numpy as np
    from PIL import Image
    from skimage import data

    folder = tmp_path / "data"
    folder.mkdir()
    Image.fromarray(np.ascontiguousarray(data.astronaut()[::4, ::4])).save(folder / "a.png")
    out = tmp_path / "out"
    env = {**os.environ, "DEVICE": "cpu", "THREADS": "1", "PYTHON": sys.executable, "PROGSR_CACHE": str(tmp_path)}
    done = subprocess.run(["bash", str(REPO_ROOT / "scripts" / "gpu_train.sh"), "run", str(out), "0.02",
                           "--data", str(folder), "--val", "none", "--set", "batch_size=4",
                           "--set", "lr_crop=[8,6,4]"], env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    from progsr.models.io import load_generator
    from progsr.training.checkpoints import list_checkpoints

    assert len(list_checkpoints(out / "run")) == 1  # keep_ckpts=1: the last one, what comes back from a device
    model, meta = load_generator(out / "progsr_x8_psnr.safetensors")
    assert model.config.channels == (64, 16, 16, 16) and int(meta["iterations"]) >= 1


def test_train_cost_times_the_training_step_of_each_variant(tmp_path):
    """benchmarks/train_cost.py runs train_step on synthetic batches; a variant's overrides reach its config."""
    import json

    out = tmp_path / "cost.json"
    done = subprocess.run([sys.executable, str(REPO_ROOT / "benchmarks" / "train_cost.py"), "--config", "tiny",
                           "--set", "phase=gan", "--set", "adversarial_weight=0.1", "--iters", "2", "--warmup", "0",
                           "--variant", "ragan", "--variant", "wgan", "adversarial_loss=wgan_gp", "--out", str(out)],
                          cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    rows = json.loads(out.read_text())["rows"]
    assert [(r["variant"], r["overrides"]) for r in rows] == [("ragan", []), ("wgan", ["adversarial_loss=wgan_gp"])]
    assert all(r["cpu_s"] > 0 and len(r["cpu_s_all"]) == 2 for r in rows)
    assert "| wgan | adversarial_loss=wgan_gp |" in done.stdout
