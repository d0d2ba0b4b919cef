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
