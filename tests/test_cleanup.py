"""The clean-up control's `auto`: JPEG quality from the file's table, noise from the pixels, the strength."""

import io

import numpy as np
import pytest
from PIL import Image
from skimage import data as skdata

from progsr.cleanup import estimate, ijg_table, jpeg_quality, noise_sigma
from progsr.degradations import LEVELS, degrade_level, level_table, pillow_table
from progsr.imageio import read_image


@pytest.mark.parametrize("quality", [10, 30, 50, 75, 90, 95, 100])
def test_jpeg_quality_comes_back_from_a_pillow_file(tmp_path, quality):
    Image.fromarray(skdata.chelsea()[:64, :64]).save(tmp_path / "a.jpg", quality=quality)
    table = read_image(tmp_path / "a.jpg").quantization
    assert table == pillow_table(quality) and jpeg_quality(table) == quality
    assert np.array_equal(np.sort(ijg_table(quality)), np.sort(table))


def test_only_jpeg_files_carry_a_table(tmp_path):
    Image.fromarray(skdata.chelsea()[:32, :32]).save(tmp_path / "a.png")
    assert read_image(tmp_path / "a.png").quantization is None


@pytest.mark.parametrize("sigma", [3.0, 8.0, 15.0])
def test_noise_sigma_reads_added_noise_within_fifteen_percent(sigma):
    y, x = np.mgrid[0:256, 0:256] / 256
    smooth = np.stack([40 + 160 * x, 40 + 160 * y, 120 + 60 * np.sin(6 * x)], axis=2)  # mid-range, no clipping
    noisy = np.clip(np.round(smooth + np.random.default_rng(1).normal(0, sigma, smooth.shape)), 0, 255).astype(np.uint8)
    assert abs(noise_sigma(noisy) / sigma - 1) < 0.15
    assert noise_sigma(np.round(smooth).astype(np.uint8)) < 0.5


def test_noise_sigma_skips_clipped_tiles_and_small_images():
    """Astronaut's black background is the flattest part of it, where clipping hides half the noise."""
    photo = skdata.astronaut()
    noisy = np.clip(np.round(photo + np.random.default_rng(1).normal(0, 10, photo.shape)), 0, 255).astype(np.uint8)
    assert abs(noise_sigma(noisy) / 10 - 1) < 0.2
    assert noise_sigma(noisy[:40, :40]) is None  # 25 tiles: too few to tell noise from texture
    assert estimate(noisy[:40, :40]).noise is None and "noise unknown" in estimate(noisy[:40, :40]).describe()


def test_auto_is_zero_on_clean_input_and_grows_with_the_damage():
    _, images = [None, [("astronaut", skdata.astronaut()), ("chelsea", skdata.chelsea())]]
    for scale in (2, 4):
        strengths = {level: np.mean([estimate(degrade_level(hr, scale, level, name)[1], level_table(level)).strength
                                     for name, hr in images]) for level in LEVELS}
        assert strengths["clean"] == 0.0
        assert 0.0 < strengths["light"] < strengths["medium"] <= strengths["heavy"] == 1.0
        assert strengths["jpeg"] == 1.0


def test_a_jpeg_saved_again_as_png_is_caught_by_its_blocks():
    img = skdata.chelsea()[:128, :128]
    buffer = io.BytesIO()
    Image.fromarray(img).save(buffer, format="JPEG", quality=15)
    rejpeg = np.asarray(Image.open(buffer))
    found = estimate(rejpeg)  # as pixels only: no table
    assert found.quality is None and found.strength > 0.5 and estimate(img).strength == 0.0
    assert "blockiness" in found.describe() and "clean-up auto" in found.describe()


@pytest.mark.shared
def test_auto_picks_zero_for_the_benchmark_lr_of_the_development_test_sets(shared):
    """The standard tables must not move: every bicubic LR of Set5/Set14/BSD100 at x2/x4/x8 gets strength 0."""
    from progsr.evaluation import dataset_files
    from progsr.protocol import make_lr, read_hr

    root = shared / "data" / "test"
    nonzero = []
    for dataset in ("Set5", "Set14", "BSD100"):
        for path in dataset_files(root, dataset):
            hr = read_hr(path)
            for scale in (2, 4, 8):
                found = estimate(make_lr(hr, scale)[1])
                if found.strength:
                    nonzero.append(f"{dataset}/{path.name} x{scale}: {found.describe()}")
    assert not nonzero, "\n".join(nonzero)


# ------------------------------------------------------------------------------------------ the control


@pytest.fixture
def four_shipped(tmp_path, monkeypatch):
    """A weights folder with tiny psnr, gan, real and realgan models of one architecture."""
    from helpers import random_tiny

    from progsr.models.io import save_generator

    folder = tmp_path / "weights"
    for seed, name in enumerate(("psnr", "gan", "real", "realgan"), start=1):
        save_generator(random_tiny(seed), folder / f"progsr_x8_{name}.safetensors")
    monkeypatch.setenv("PROGSR_WEIGHTS", str(folder))
    return folder


def _photo():
    return skdata.chelsea()[100:164, 150:230]  # 64x80


def _jpeg(path, quality):
    Image.fromarray(_photo()).save(path, quality=quality)
    return path


def test_the_two_controls_blend_the_four_models_bilinearly(four_shipped):
    from progsr.inference import Upscaler
    from progsr.models import ProgressiveGenerator, tiny_config
    from progsr.models.io import load_generator, save_generator

    img = _photo()
    states = {n: load_generator(four_shipped / f"progsr_x8_{n}.safetensors")[0].state_dict()
              for n in ("psnr", "gan", "real", "realgan")}
    mixed = ProgressiveGenerator(tiny_config())
    weights = {"psnr": 0.7 * 0.4, "gan": 0.7 * 0.6, "real": 0.3 * 0.4, "realgan": 0.3 * 0.6}  # c 0.3, r 0.6
    mixed.load_state_dict({k: sum(w * states[n][k] for n, w in weights.items()) for k in states["psnr"]})
    save_generator(mixed, four_shipped.parent / "mixed.safetensors")
    want = Upscaler(four_shipped.parent / "mixed.safetensors", device="cpu").upscale(img, scale=2)
    got = Upscaler(device="cpu", realism=0.6, clean=0.3).upscale(img, scale=2)
    assert np.abs(got.astype(int) - want).max() <= 1
    real = Upscaler(four_shipped / "progsr_x8_real.safetensors", device="cpu").upscale(img, scale=2)
    assert np.array_equal(Upscaler(device="cpu", clean=1).upscale(img, scale=2), real)


def test_auto_cleans_a_bad_jpeg_and_leaves_a_clean_image_alone(four_shipped, tmp_path):
    from progsr.inference import Upscaler

    up = Upscaler(device="cpu")  # clean-up auto is the default for the shipped models
    psnr = Upscaler(four_shipped / "progsr_x8_psnr.safetensors", device="cpu")
    real = Upscaler(four_shipped / "progsr_x8_real.safetensors", device="cpu")
    Image.fromarray(_photo()).save(tmp_path / "clean.png")
    assert np.array_equal(np.asarray(up.upscale(tmp_path / "clean.png", scale=2)),
                          psnr.upscale(_photo(), scale=2))
    bad = _jpeg(tmp_path / "bad.jpg", 30)
    result = up.upscale_file(bad, tmp_path / "out.png", scale=2)
    assert result.cleanup.quality == 30 and result.cleanup.strength == 1.0
    assert np.array_equal(np.asarray(Image.open(tmp_path / "out.png")), real.upscale(np.asarray(Image.open(bad)), 2))
    fine = up.upscale_file(_jpeg(tmp_path / "fine.jpg", 95), tmp_path / "out2.png", scale=2)
    assert fine.cleanup.quality == 95 and fine.cleanup.strength == 0.0


def test_auto_without_the_real_model_stays_at_zero_and_says_why(four_shipped, tmp_path):
    from progsr.errors import UserError
    from progsr.inference import Upscaler

    (four_shipped / "progsr_x8_real.safetensors").unlink()
    result = Upscaler(device="cpu").upscale_file(_jpeg(tmp_path / "bad.jpg", 30), tmp_path / "out.png", scale=2)
    assert result.cleanup.strength == 0.0 and "real model is not installed" in result.cleanup.describe()
    with pytest.raises(UserError, match="needs the shipped real model, which is not installed"):
        Upscaler(device="cpu", clean=0.5)


@pytest.mark.parametrize("args, message", [
    (["--clean", "1.5"], "--clean 1.5: must be 'auto' or a number from 0 to 1"),
    (["--clean", "lots"], "--clean lots: must be 'auto' or a number from 0 to 1"),
    (["--clean", "auto", "--model", "MODEL"], "cannot be used with --model PATH"),
])
def test_bad_clean_options_are_one_line_errors(four_shipped, tmp_path, capsys, args, message):
    from helpers import random_tiny

    from progsr.cli import main
    from progsr.models.io import save_generator

    save_generator(random_tiny(9), tmp_path / "model.safetensors")
    args = [str(tmp_path / "model.safetensors") if a == "MODEL" else a for a in args]
    Image.fromarray(_photo()).save(tmp_path / "a.png")
    rc = main(["upscale", str(tmp_path / "a.png"), "-o", str(tmp_path / "out"), *args])
    err = capsys.readouterr().err
    assert rc == 2 and message in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "out").exists()


def test_the_cli_prints_the_detected_quality_and_the_chosen_strength(four_shipped, tmp_path, capsys):
    from progsr.cli import main

    rc = main(["upscale", str(_jpeg(tmp_path / "web.jpg", 50)), "-o", str(tmp_path / "out"), "--scale", "2"])
    out = capsys.readouterr().out
    assert rc == 0 and "clean-up auto 1 (JPEG quality 50, noise" in out


def test_realism_says_that_it_overrides_the_named_model(four_shipped, tmp_path, capsys):
    from progsr.cli import main

    Image.fromarray(_photo()).save(tmp_path / "a.png")
    rc = main(["upscale", str(tmp_path / "a.png"), "-o", str(tmp_path / "out"), "--scale", "2", "--model", "gan",
               "--realism", "0.5"])
    err = capsys.readouterr().err
    assert rc == 0 and "--realism 0.5 sets the blend of the psnr and gan models; --model gan is ignored" in err
