"""The scripts users run from a checkout: each benchmark script end to end on a tiny model and image, so a script
that no longer matches the code it measures fails here (they have no other tests of their own)."""

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from progsr.paths import REPO_ROOT


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """A tiny random generator's weights, and a data root holding one dataset ("Tiny") of one 40x48 PNG."""
    from helpers import random_tiny

    from progsr.models.io import save_generator

    root = tmp_path_factory.mktemp("tiny")
    weights = save_generator(random_tiny(1), root / "rand.safetensors")
    (root / "data" / "Tiny").mkdir(parents=True)
    rng = np.random.default_rng(0)
    hr = rng.integers(0, 256, (48, 40, 3), dtype=np.uint8)
    Image.fromarray(hr).save(root / "data" / "Tiny" / "a.png")
    return {"weights": weights, "data": root / "data", "image": root / "data" / "Tiny" / "a.png", "hr": hr}


def _script(name, *args, cwd, timeout=120):
    """Run benchmarks/NAME from an unrelated folder (imports must work from the script's own location)."""
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    done = subprocess.run([sys.executable, str(REPO_ROOT / "benchmarks" / name), *map(str, args)], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=timeout)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-3000:]
    assert "Traceback" not in done.stderr
    return done


def _bicubic_x2(hr):
    from progsr.resize import imresize

    return imresize(imresize(hr, scale=1 / 2), scale=2)


def _model_x2(weights, hr):
    from progsr.inference import Upscaler
    from progsr.resize import imresize

    up = Upscaler(str(weights), device="cpu", precision="fp32", max_pixels=None, max_output_pixels=None)
    return up.upscale_pixels(imresize(hr, scale=1 / 2), scale=2)


def test_app_script_help_runs_from_the_checkout(tmp_path):
    done = subprocess.run([sys.executable, str(REPO_ROOT / "app" / "app.py"), "--help"], cwd=tmp_path,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert "usage:" in done.stdout and "Traceback" not in done.stderr


def test_app_load_serves_every_request(tiny, tmp_path):
    """benchmarks/app_load.py: 2 clients x 1 request of a 16 px image against `progsr app` with the tiny model."""
    pytest.importorskip("gradio_client")
    out = tmp_path / "load.json"
    done = _script("app_load.py", "--clients", 2, "--requests", 1, "--size", 16, "--scale", "2x",
                   "--model", tiny["weights"], "--out", out, cwd=tmp_path, timeout=180)
    result = json.loads(out.read_text())
    assert (result["completed"], result["failed"], result["clients"]) == (2, 0, 2)
    assert result["model"] == str(tiny["weights"]) and result["input"] == "16x16"
    assert set(result["latency_s"]) == {"p50", "p90", "p99"} and result["server_rss_mb"]["peak"] > 0
    assert "2/2 requests completed" in done.stdout


def test_crops_sheet_has_bicubic_model_and_hr_tiles(tiny, tmp_path):
    """benchmarks/crops.py: one row of 16 px tiles, bicubic | the model | HR, each under a 14 px label, cut at
    the corner given (rounded down to the scale's grid)."""
    out = tmp_path / "crops.png"
    _script("crops.py", "--models", tiny["weights"], "--images", f"{tiny['image']}:9,10", "--scale", 2, "--size", 16,
            "--out", out, cwd=tmp_path)
    sheet = np.asarray(Image.open(out))
    assert sheet.shape == (14 + 16, 3 * 16, 3)
    tiles = [sheet[14:, 16 * k : 16 * (k + 1)] for k in range(3)]
    window = np.s_[10:26, 8:24]
    hr = tiny["hr"]
    np.testing.assert_array_equal(tiles[0], _bicubic_x2(hr)[window])
    np.testing.assert_array_equal(tiles[1], _model_x2(tiny["weights"], hr)[window])
    np.testing.assert_array_equal(tiles[2], hr[window])
    assert (sheet[:14] < 128).any()  # the labels are drawn


def test_crops_of_real_photos_upscale_the_photo_itself(tiny, tmp_path):
    """benchmarks/crops.py --photos: the photo is the LR (no downscale); bicubic | the model, cut at the corner."""
    out = tmp_path / "photos.png"
    _script("crops.py", "--photos", "--models", tiny["weights"], "--images", f"{tiny['image']}:4,6", "--scale", 2,
            "--size", 16, "--out", out, cwd=tmp_path)
    sheet = np.asarray(Image.open(out))
    assert sheet.shape == (14 + 16, 2 * 16, 3)
    from progsr.inference import Upscaler
    from progsr.resize import imresize

    window = np.s_[12:28, 8:24]  # the LR corner (4, 6) at x2; the 48x40 photo fits in one context window
    up = Upscaler(str(tiny["weights"]), device="cpu", precision="fp32", max_pixels=None, max_output_pixels=None)
    np.testing.assert_array_equal(sheet[14:, :16], imresize(tiny["hr"], scale=2)[window])
    np.testing.assert_array_equal(sheet[14:, 16:], up.upscale_pixels(tiny["hr"], scale=2)[window])


def test_memory_measures_the_upscale_it_names(tiny, tmp_path):
    """benchmarks/memory.py: one 24x16 x2 case through `progsr upscale --model` in a child process."""
    out = tmp_path / "memory.json"
    done = _script("memory.py", "--sizes", "24x16:2", "--model", tiny["weights"], "--out", out, cwd=tmp_path)
    (row,) = json.loads(out.read_text())["rows"]
    assert (row["input"], row["scale"], row["model"], row["threads"]) == ("24x16", 2, str(tiny["weights"]), 1)
    assert row["peak_rss_mb"] > 0 and row["seconds"] > 0
    assert "| 24x16 | x2 |" in done.stdout


def test_quality_scores_the_model_under_the_protocol(tiny, tmp_path):
    """benchmarks/quality.py on a data root with one dataset: the JSON and the table hold the model's Y-PSNR."""
    from progsr.metrics import psnr

    out = tmp_path / "quality.json"
    done = _script("quality.py", "--method", tiny["weights"], "--datasets", "Tiny", "--scales", 2,
                   "--data-root", tiny["data"], "--device", "cpu", "--out", out, cwd=tmp_path)
    doc = json.loads(out.read_text())
    assert doc["method"]["name"] == "rand" and doc["settings"]["scales"] == [2]
    x2 = doc["results"]["Tiny"]["x2"]
    assert list(x2["images"]) == ["a.png"] and x2["mean"] == x2["images"]["a.png"]
    expected = psnr(_model_x2(tiny["weights"], tiny["hr"]), tiny["hr"], crop_border=2)
    assert x2["mean"]["psnr"] == pytest.approx(expected, abs=1e-6)
    assert f"| x2 | {x2['mean']['psnr']:.2f} / {x2['mean']['ssim']:.4f} |" in done.stdout


def test_realworld_scores_each_level_and_writes_the_crop_sheet(tiny, tmp_path):
    """benchmarks/realworld.py: bicubic and the model at the clean and medium levels, x2, one image, crops."""
    from progsr.metrics import psnr

    out = tmp_path / "rw" / "x.json"
    done = _script("realworld.py", "--datasets", "Tiny", "--data-root", tiny["data"], "--methods", "bicubic",
                   tiny["weights"], "--levels", "clean", "medium", "--scales", 2, "--limit", 1, "--crops",
                   "--crop-size", 16, "--out", out, cwd=tmp_path)
    doc = json.loads(out.read_text())
    assert doc["methods"] == ["bicubic", "rand"] and doc["levels"] == ["clean", "medium"]
    levels = doc["results"]["Tiny"]["x2"]
    assert set(levels) == {"clean", "medium"}
    # clean is the benchmark protocol itself; the medium level's blur, noise and JPEG cost PSNR
    clean = levels["clean"]
    assert clean["bicubic"]["psnr"] == pytest.approx(psnr(_bicubic_x2(tiny["hr"]), tiny["hr"], crop_border=2), abs=1e-6)
    assert clean["rand"]["psnr"] == pytest.approx(psnr(_model_x2(tiny["weights"], tiny["hr"]), tiny["hr"],
                                                       crop_border=2), abs=1e-6)
    assert levels["medium"]["bicubic"]["psnr"] < clean["bicubic"]["psnr"]
    assert f"| clean | {clean['bicubic']['psnr']:.2f} | {clean['rand']['psnr']:.2f} |" in done.stdout
    (sheet,) = doc["crops"]
    sheet = np.asarray(Image.open(sheet))
    assert sheet.shape == (2 * 16, 4 * 16 + 3 * 4, 3)  # a row per level: LR | bicubic | rand | HR, 4 px gaps
    for row in (sheet[:16], sheet[16:]):
        np.testing.assert_array_equal(row[:, -16:], tiny["hr"][16:32, 12:28])  # the HR's centre


def test_speed_times_bicubic_and_the_model(tiny, tmp_path):
    """benchmarks/speed.py: one 16 px input at x2, automatic tiling, one timed run per row."""
    stem = tmp_path / "speed"
    _script("speed.py", "--devices", "cpu", "--sizes", 16, "--scales", 2, "--tiles", 0, "--repeats", 1, "--seconds", 0,
            "--model", tiny["weights"], "--out", stem, cwd=tmp_path)
    result = json.loads((tmp_path / "speed.json").read_text())
    assert result["model"] == str(tiny["weights"])
    rows = [(r["device"], r["method"], r["precision"], r["size"], r["scale"], r["tile"], r["tiles"], r["runs"])
            for r in result["rows"]]
    assert rows == [("cpu", "bicubic", "fp64", 16, 2, "-", 1, 1), ("cpu", "progsr", "fp32", 16, 2, "auto", 1, 1)]
    assert all(r["ms"] > 0 and r["peak_mib"] > 0 for r in result["rows"])
    table = (tmp_path / "speed.md").read_text()
    assert "| cpu | progsr | fp32 | 16x16 | x2 | 32x32 | auto | 1 |" in table


def test_validate_scores_the_forward_pass_and_the_upscaler(tiny, tmp_path):
    """benchmarks/validate.py on an HR folder: pre-pad 0 is the plain forward pass, pre-pad 8 is scored apart."""
    done = _script("validate.py", tiny["weights"], "--val", tiny["data"] / "Tiny", "--scales", 2, "--pre-pad", 0, 8,
                   cwd=tmp_path)
    results = json.loads(done.stdout.strip().splitlines()[-1])[str(tiny["weights"])]
    assert list(results) == ["forward", "upscaler_pad0", "upscaler_pad8"]
    assert set(results["forward"]) == {"val/psnr_x2", "val/grid_x2", "val/texture_x2", "val/colour_x2"}
    assert results["upscaler_pad0"] == pytest.approx(results["forward"], abs=1e-9)
    assert results["upscaler_pad8"]["val/psnr_x2"] != pytest.approx(results["forward"]["val/psnr_x2"], abs=1e-6)
    assert sum(line.startswith("| rand.safetensors |") for line in done.stdout.splitlines()) == 3


@pytest.mark.parametrize("model", ["psnr", "real"])
def test_gpu_train_script_runs_its_path_on_the_cpu_with_a_tiny_budget(tmp_path, model):
    """scripts/gpu_train.sh run: a budgeted chunk from the shipped weights, a checkpoint, an exported generator."""
    from skimage import data

    folder = tmp_path / "data"
    folder.mkdir()
    Image.fromarray(np.ascontiguousarray(data.astronaut()[::4, ::4])).save(folder / "a.png")
    out = tmp_path / "out"
    env = {**os.environ, "DEVICE": "cpu", "THREADS": "1", "PYTHON": sys.executable, "PROGSR_CACHE": str(tmp_path),
           "MODEL": model}
    done = subprocess.run(["bash", str(REPO_ROOT / "scripts" / "gpu_train.sh"), "run", str(out), "0.02",
                           "--data", str(folder), "--val", "none", "--set", "batch_size=4",
                           "--set", "lr_crop=[8,6,4]"], env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    from progsr.models.io import load_generator
    from progsr.training.checkpoints import list_checkpoints

    assert len(list_checkpoints(out / "run")) == 1  # keep_ckpts=1: the last one, what comes back from a device
    generator, meta = load_generator(out / f"progsr_x8_{model}.safetensors")
    assert generator.config.channels == (64, 16, 16, 16) and int(meta["iterations"]) >= 1
    config = json.loads((out / "run" / "config.json").read_text())
    assert bool(config["degradation"]) == (model == "real")
    assert Path(config["init"]).name == f"progsr_x8_{model}.safetensors"


def test_train_cost_times_the_training_step_of_each_variant(tmp_path):
    """benchmarks/train_cost.py runs train_step on synthetic batches; a variant's overrides reach its config."""
    out = tmp_path / "cost.json"
    done = _script("train_cost.py", "--config", "tiny", "--set", "phase=gan", "--set", "adversarial_weight=0.1",
                   "--iters", 2, "--warmup", 0, "--variant", "ragan", "--variant", "wgan", "adversarial_loss=wgan_gp",
                   "--out", out, cwd=tmp_path, timeout=300)
    rows = json.loads(out.read_text())["rows"]
    assert [(r["variant"], r["overrides"]) for r in rows] == [("ragan", []), ("wgan", ["adversarial_loss=wgan_gp"])]
    assert all(r["cpu_s"] > 0 and len(r["cpu_s_all"]) == 2 for r in rows)
    assert "| wgan | adversarial_loss=wgan_gp |" in done.stdout


def _fake_run(folder, schedule, seed, points):
    """A run folder as progsr train leaves it: config.json and a metrics log with bicubic and validation records."""
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
    _fake_run(tmp_path / "p", "progressive", 0, [(100, 300.0, 33.0, 24.0), (200, 600.0, 33.5, 25.0), (300, 900.0, 33.6, 25.2)])
    _fake_run(tmp_path / "s", "simultaneous", 0, [(100, 400.0, 33.2, 24.2), (200, 800.0, 33.4, 24.6), (300, 1200.0, 33.7, 25.1)])
    _script("schedule.py", "collect", tmp_path / "p", tmp_path / "s", "--out", tmp_path / "c", cwd=tmp_path)
    _script("schedule.py", "report", tmp_path / "c.json", cwd=tmp_path)
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


def test_ray_batch_script_times_each_engine_and_checks_their_bytes(tiny, tmp_path):
    pytest.importorskip("ray", reason="the ray extra is not installed")
    out = tmp_path / "ray.json"
    _script("ray_batch.py", "--images", tiny["data"] / "Tiny", "--count", 1, "--scale", 2, "--model", tiny["weights"],
            "--actors", 1, "--out", out, cwd=tmp_path, timeout=300)
    rows = json.loads(out.read_text())["rows"]
    assert [r["engine"] for r in rows] == ["local", "ray, 1 actor"]
    assert all(r["same_bytes_as_local"] and r["images"] == 1 and r["wall_s"] > 0 for r in rows)
    assert rows[0]["vs_local"] == 1.0


def test_onnx_quant_scores_each_graph_against_fp32(tiny, tmp_path):
    out = tmp_path / "quant.json"
    _script("onnx_quant.py", "--weights", tiny["weights"], "--scale", 2, "--val", tiny["data"] / "Tiny",
            "--calibration", 0, "--out", out, cwd=tmp_path, timeout=300)
    rows = json.loads(out.read_text())["rows"]
    assert list(rows) == ["fp32", "int8 dynamic", "fp16"]
    assert rows["fp32"]["delta_db"] == 0 and rows["fp32"]["offered"]
    assert rows["fp16"]["bytes"] < rows["fp32"]["bytes"]  # (on a tiny net, int8 scales and zero points outweigh its weights)
    for row in rows.values():  # the graph's own number, checked against the torch network under the protocol
        assert row["offered"] == (abs(row["delta_db"]) <= 0.05)
    from progsr.metrics import psnr
    from progsr.protocol import make_lr

    hr, _ = make_lr(tiny["hr"], 2)
    assert rows["fp32"]["y_psnr"] == pytest.approx(psnr(_model_x2(tiny["weights"], tiny["hr"]), hr, 2), abs=0.01)
