"""The scripts users run from a checkout start and parse their options (they have no other tests of their own)."""

import subprocess
import sys

import pytest

from progsr.paths import REPO_ROOT

SCRIPTS = ["benchmarks/quality.py", "benchmarks/speed.py", "benchmarks/crops.py", "benchmarks/app_load.py",
           "benchmarks/memory.py", "benchmarks/validate.py", "benchmarks/train_cost.py", "benchmarks/schedule.py",
           "app/app.py"]


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


def _fake_run(folder, schedule, seed, points):
    """A run folder as progsr train leaves it: config.json and a metrics log with bicubic and validation records."""
    import json

    from progsr.training.config import TrainConfig

    folder.mkdir()
    cfg = {**TrainConfig().__dict__, "schedule": schedule, "seed": seed}
    (folder / "config.json").write_text(json.dumps(cfg, default=list))
    lines = [{"it": 0, "val/bicubic_x2": 30.0, "val/bicubic_x4": 26.0, "val/bicubic_x8": 23.0},
             {"it": 10, "samples": 80, "loss/total": 0.1, "time": 1.0}]  # a training record, not a validation
    lines += [{"it": it, "samples": it * 8, "stage": 3, "alpha": 1.0, "time": t, "val/psnr_x2": x2,
               "val/psnr_x4": x2 - 4, "val/psnr_x8": x8} for it, t, x2, x8 in points]
    (folder / "metrics.jsonl").write_text("\n".join(json.dumps(r) for r in lines) + "\n")


def test_schedule_report_times_both_runs_to_the_lower_final_x8(tmp_path):
    import json

    _fake_run(tmp_path / "p", "progressive", 0, [(100, 300.0, 33.0, 24.0), (200, 600.0, 33.5, 25.0), (300, 900.0, 33.6, 25.2)])
    _fake_run(tmp_path / "s", "simultaneous", 0, [(100, 400.0, 33.2, 24.2), (200, 800.0, 33.4, 24.6), (300, 1200.0, 33.7, 25.1)])
    script = str(REPO_ROOT / "benchmarks" / "schedule.py")
    for args in (["collect", str(tmp_path / "p"), str(tmp_path / "s"), "--out", str(tmp_path / "c")],
                 ["report", str(tmp_path / "c.json")]):
        done = subprocess.run([sys.executable, script, *args], capture_output=True, text=True, timeout=120)
        assert done.returncode == 0, done.stderr
    assert (tmp_path / "c.csv").read_text().count("\n") == 7  # header and six validations, no training record
    row = json.loads((tmp_path / "c_report.json").read_text())["comparisons"][0]
    assert row["target_x8"] == 25.1  # the lower final value
    full = row["reach"][-1]
    assert full["fraction_of_gain"] == 1.0 and full["x8"] == pytest.approx(25.1)
    assert full["progressive_time_s"] == pytest.approx(600 + 300 * 0.1 / 0.2)  # between 25.0 and 25.2
    assert full["simultaneous_time_s"] == pytest.approx(1200.0)
    assert full["time_ratio_simultaneous_over_progressive"] == pytest.approx(1200 / 750)
    ninety = row["reach"][0]  # 23 + 0.9 * 2.1 = 24.89 dB
    assert ninety["progressive_time_s"] == pytest.approx(300 + 300 * 0.89)
    assert ninety["simultaneous_samples"] == pytest.approx(1600 + 800 * 0.29 / 0.5)
    assert row["equal_time_s"] == 900.0  # the progressive run's end; the other interpolated there
    assert row["simultaneous_at_equal_time_x8"] == pytest.approx(24.6 + 0.5 * 0.25)
    assert (tmp_path / "c.png").stat().st_size > 0
