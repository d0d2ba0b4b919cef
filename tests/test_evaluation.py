import json
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import save_file
from skimage import data as skdata

from progsr import cli, evaluation
from progsr.errors import UserError
from progsr.metrics import psnr, ssim
from progsr.paths import REPO_ROOT
from progsr.resize import imresize, modcrop


@pytest.fixture(autouse=True)
def _offline(offline):
    """Every test here runs offline (see conftest.offline)."""


@pytest.fixture
def data_root(tmp_path):
    """A tiny dataset 'Tiny': an RGB image, a grey image and an RGBA image, with sizes not multiples of 4."""
    root = tmp_path / "data"
    (root / "Tiny").mkdir(parents=True)
    astronaut = skdata.astronaut()
    Image.fromarray(astronaut[60:101, 180:223]).save(root / "Tiny" / "a_rgb.png")  # 41x43
    Image.fromarray(skdata.camera()[200:238, 250:289]).save(root / "Tiny" / "b_grey.png")  # 38x39, mode L
    rgba = np.dstack([astronaut[150:190, 100:138], np.full((40, 38), 200, np.uint8)])  # 40x38
    Image.fromarray(rgba).save(root / "Tiny" / "c_rgba.png")
    (root / "Tiny" / "notes.txt").write_text("not an image; ignored")
    return root


def _run(args, capsys):
    rc = evaluation.main(args)
    return rc, capsys.readouterr()


def test_bicubic_end_to_end_on_a_synthetic_dataset(data_root, tmp_path, capsys):
    out = tmp_path / "res" / "r.json"
    rc, io = _run(["--datasets", "Tiny", "--scales", "2", "4", "--data-root", str(data_root), "--out", str(out)], capsys)
    assert rc == 0
    doc = json.loads(out.read_text())
    assert doc["method"]["name"] == "bicubic"
    assert doc["settings"]["scales"] == [2, 4] and doc["settings"]["padding"] == "symmetric"
    assert doc["settings"]["datasets"]["Tiny"]["images"] == 3
    assert doc["settings"]["lpips"] is None
    assert re.fullmatch(r"[0-9a-f]{40}|unknown", doc["git_commit"])
    assert doc["versions"]["torch"] == torch.__version__.split("+")[0]
    for s in (2, 4):
        entry = doc["results"]["Tiny"][f"x{s}"]
        assert sorted(entry["images"]) == ["a_rgb.png", "b_grey.png", "c_rgba.png"]
        for key in ("psnr", "ssim"):
            assert entry["mean"][key] == pytest.approx(np.mean([r[key] for r in entry["images"].values()]))
        assert 15 < entry["mean"]["psnr"] < 45 and 0.2 < entry["mean"]["ssim"] < 1

    # the protocol, recomputed by hand for the RGB image at x4: modcrop, MATLAB down and up, Y, shave 4
    hr = modcrop(np.asarray(Image.open(data_root / "Tiny" / "a_rgb.png")), 4)
    sr = imresize(imresize(hr, scale=1 / 4), scale=4)
    row = doc["results"]["Tiny"]["x4"]["images"]["a_rgb.png"]
    assert row["psnr"] == pytest.approx(psnr(sr, hr, 4)) and row["ssim"] == pytest.approx(ssim(sr, hr, 4))
    # grey is measured on raw grey levels, and alpha is dropped
    grey = modcrop(np.asarray(Image.open(data_root / "Tiny" / "b_grey.png")), 2)
    assert doc["results"]["Tiny"]["x2"]["images"]["b_grey.png"]["psnr"] == pytest.approx(
        psnr(imresize(imresize(grey, scale=0.5), scale=2), grey, 2)
    )

    table = io.out
    assert "| Scale | Tiny (3) |" in table and "Y-PSNR" in table
    mean4 = doc["results"]["Tiny"]["x4"]["mean"]
    assert f"| x4 | {mean4['psnr']:.2f} / {mean4['ssim']:.4f} |" in table
    assert str(out) in table
    assert not list(out.parent.glob(".*.tmp"))  # atomic write left no temp file


def test_ssim_mode_same_is_passed_through(data_root, tmp_path, capsys):
    out = tmp_path / "r.json"
    rc, io = _run(["--datasets", "Tiny", "--scales", "2", "--data-root", str(data_root), "--out", str(out),
                   "--ssim-mode", "same"], capsys)
    assert rc == 0 and "Y-SSIM (same)" in io.out
    doc = json.loads(out.read_text())
    assert doc["settings"]["ssim_mode"] == "same"
    hr = modcrop(np.asarray(Image.open(data_root / "Tiny" / "a_rgb.png")), 2)
    sr = imresize(imresize(hr, scale=1 / 2), scale=2)
    assert doc["results"]["Tiny"]["x2"]["images"]["a_rgb.png"]["ssim"] == pytest.approx(ssim(sr, hr, 2, mode="same"))


def test_data_root_from_environment_and_default_output_path(data_root, tmp_path, monkeypatch, capsys):
    fake_repo = tmp_path / "repo"
    (fake_repo / "benchmarks").mkdir(parents=True)
    monkeypatch.setattr(evaluation, "REPO_ROOT", fake_repo)
    monkeypatch.setenv("PROGSR_DATA", str(data_root))
    rc, _ = _run(["--datasets", "Tiny", "--scales", "2"], capsys)
    assert rc == 0
    written = list((fake_repo / "benchmarks" / "results").glob("bicubic-*.json"))
    assert len(written) == 1 and json.loads(written[0].read_text())["settings"]["data_root"] == str(data_root)


def _random_alex_backbone(path: Path) -> None:
    gen = torch.Generator().manual_seed(0)
    shapes = {0: (64, 3, 11, 11), 3: (192, 64, 5, 5), 6: (384, 192, 3, 3), 8: (256, 384, 3, 3), 10: (256, 256, 3, 3)}
    state = {}
    for i, shape in shapes.items():
        state[f"features.{i}.weight"] = torch.randn(shape, generator=gen) * 0.05
        state[f"features.{i}.bias"] = torch.zeros(shape[0])
    save_file(state, str(path))


def test_lpips_column(data_root, tmp_path, capsys):
    _random_alex_backbone(tmp_path / "alex.safetensors")
    out = tmp_path / "r.json"
    rc, io = _run(["--datasets", "Tiny", "--scales", "2", "--data-root", str(data_root), "--out", str(out),
                   "--lpips", "--backbones", str(tmp_path / "alex.safetensors")], capsys)
    assert rc == 0
    doc = json.loads(out.read_text())
    assert doc["settings"]["lpips"]["net"] == "alex"
    assert doc["settings"]["lpips"]["backbone"].endswith("alex.safetensors")
    rows = doc["results"]["Tiny"]["x2"]["images"].values()
    assert all(r["lpips"] > 0 for r in rows)
    assert "LPIPS-alex" in io.out and re.search(r"\| x2 \| [\d.]+ / [\d.]+ / [\d.]+ \|", io.out)


def test_generator_method(data_root, tmp_path, capsys):
    from progsr.models.generator import GeneratorConfig, ProgressiveGenerator
    from progsr.models.io import save_generator

    weights = save_generator(ProgressiveGenerator(GeneratorConfig(channels=(8, 4, 4), blocks=(1, 1))), tmp_path / "tiny.safetensors")
    out = tmp_path / "r.json"
    rc, io = _run(["--method", str(weights), "--datasets", "Tiny", "--scales", "2", "4",
                   "--data-root", str(data_root), "--out", str(out), "--device", "cpu"], capsys)
    assert rc == 0
    doc = json.loads(out.read_text())
    assert doc["method"]["name"] == "tiny" and doc["method"]["weights"] == str(weights)
    assert all(np.isfinite(r["psnr"]) for r in doc["results"]["Tiny"]["x4"]["images"].values())
    assert io.out.startswith("tiny:")
    with pytest.raises(UserError, match=r"upscales by \[2, 4\], not x8"):
        evaluation.main(["--method", str(weights), "--datasets", "Tiny", "--scales", "8", "--data-root", str(data_root)])


@pytest.mark.parametrize(
    "setup, args, message",
    [
        (None, ["--datasets", "Nope"], r"Nope: dataset folder not found \(folders in .*: Tiny\)"),
        ("empty", ["--datasets", "Empty"], r"Empty: no images in dataset folder"),
        ("corrupt", ["--datasets", "Tiny"], r"zz_broken.png: (not an image|corrupt)"),
        ("small", ["--datasets", "Tiny", "--scales", "4"], r"zz_small.png: 16x16 is too small for x4 .*19 px"),
        ("small", ["--datasets", "Tiny", "--scales", "2", "--lpips"], r"zz_small.png: 16x16 is too small for x2 .*35 px"),
        ("junk_weights", ["--datasets", "Tiny", "--method", "{tmp}/junk.safetensors"], r"junk.safetensors: not a"),
        (None, ["--datasets", "Tiny", "--method", "{tmp}/missing.safetensors"], r"missing.safetensors: --method must"),
        (None, ["--datasets", "Tiny", "--scales", "1"], r"--scales must be integers >= 2"),
    ],
)
def test_bad_input_is_a_one_line_user_error(data_root, tmp_path, setup, args, message):
    if setup == "empty":
        (data_root / "Empty").mkdir()
    elif setup == "corrupt":
        (data_root / "Tiny" / "zz_broken.png").write_bytes(b"\x89PNG\r\n\x1a\n garbage")
    elif setup == "small":
        Image.fromarray(np.zeros((16, 16, 3), np.uint8)).save(data_root / "Tiny" / "zz_small.png")
    elif setup == "junk_weights":
        (tmp_path / "junk.safetensors").write_bytes(b"\x00" * 64)
    args = [a.replace("{tmp}", str(tmp_path)) for a in args]
    with pytest.raises(UserError, match=message) as err:
        evaluation.main(args + ["--data-root", str(data_root), "--out", str(tmp_path / "r.json")])
    assert "\n" not in str(err.value)
    assert not (tmp_path / "r.json").exists()


def test_no_data_root_is_explained(monkeypatch):
    import progsr.paths

    monkeypatch.delenv("PROGSR_DATA", raising=False)
    monkeypatch.setattr(progsr.paths, "shared_dir", lambda: None)  # no ../shared beside the checkout either
    with pytest.raises(UserError, match="--data-root.*PROGSR_DATA"):
        evaluation.main(["--datasets", "Set5"])


def test_cli_and_script_print_one_line_without_traceback(tmp_path, capsys):
    assert cli.main(["bench", "--datasets", "Nope", "--data-root", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("progsr bench: error:") and err.count("\n") == 1
    run = subprocess.run([sys.executable, str(REPO_ROOT / "benchmarks" / "quality.py"), "--datasets", "Nope",
                          "--data-root", str(tmp_path)], capture_output=True, text=True, timeout=120)
    assert run.returncode == 2
    assert "dataset folder not found" in run.stderr and "Traceback" not in run.stderr


SET5_X4 = {"baby.png": 31.79, "bird.png": 30.19, "butterfly.png": 22.10, "head.png": 31.62, "woman.png": 26.47}


@pytest.mark.shared
def test_set5_x4_bicubic_matches_the_published_row(shared, tmp_path, capsys):
    out = tmp_path / "r.json"
    rc, _ = _run(["--datasets", "Set5", "--scales", "4", "--data-root", str(shared / "data" / "test"),
                  "--out", str(out)], capsys)
    assert rc == 0
    entry = json.loads(out.read_text())["results"]["Set5"]["x4"]
    assert entry["mean"]["psnr"] == pytest.approx(28.42, abs=0.05)
    assert entry["mean"]["ssim"] == pytest.approx(0.8104, abs=0.002)
    assert json.loads(out.read_text())["settings"]["ssim_mode"] == "valid"
    for name, value in SET5_X4.items():
        assert entry["images"][name]["psnr"] == pytest.approx(value, abs=0.05)


def test_results_json_gets_the_umask_mode_and_a_failed_write_leaves_nothing(tmp_path):
    import os

    path = tmp_path / "res" / "r.json"
    old = os.umask(0o022)
    try:
        evaluation.write_json({"a": 1}, path)
    finally:
        os.umask(old)
    assert path.stat().st_mode & 0o777 == 0o644 and json.loads(path.read_text()) == {"a": 1}
    with pytest.raises(TypeError):
        evaluation.write_json({"a": 2, "b": object()}, path)  # fails half-way through json.dump
    assert [p.name for p in path.parent.iterdir()] == ["r.json"] and json.loads(path.read_text()) == {"a": 1}
    with pytest.raises(TypeError):
        evaluation.write_json({"b": object()}, tmp_path / "new.json")
    assert not (tmp_path / "new.json").exists()


def test_make_lr_is_modcrop_then_matlab_bicubic():
    hr = skdata.astronaut()[:43, :41]
    for padding in ("symmetric", "replicate"):
        cropped, lr = evaluation.make_lr(hr, 4, padding)
        assert np.array_equal(cropped, hr[:40, :40])
        assert np.array_equal(lr, imresize(hr[:40, :40], scale=1 / 4, padding=padding))


@pytest.mark.shared
def test_the_readme_lpips_command_works_offline_with_the_data_beside_the_checkout(shared, tmp_path, monkeypatch,
                                                                                capsys):
    """No --data-root, no --backbones, no $PROGSR_DATA / $PROGSR_BACKBONES, no network: ../shared is found."""
    monkeypatch.delenv("PROGSR_DATA", raising=False)
    out = tmp_path / "r.json"
    rc, _ = _run(["--datasets", "Set5", "--scales", "4", "--lpips", "--out", str(out)], capsys)
    assert rc == 0
    entry = json.loads(out.read_text())["results"]["Set5"]["x4"]["mean"]
    assert entry["psnr"] == pytest.approx(28.42, abs=0.05) and 0 < entry["lpips"] < 1
