"""The real-world degradations: each operation's measured effect, determinism, sizes, and the fixed levels."""

import math
from dataclasses import replace

import numpy as np
import pytest
import torch

from progsr.cleanup import blockiness
from progsr.degradations import (LEVELS, DegradationConfig, Level, blur_kernel, degrade, degrade_batch,
                                 degrade_level, filter_image, gaussian_noise, jpeg, poisson_noise, resize, sinc_kernel)
from progsr.errors import UserError


def smooth_image(size=96, seed=0) -> torch.Tensor:
    """A smooth synthetic 3xHxW image in [0.2, 0.8]: a few low-frequency sinusoids per channel."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:size, 0:size] / size
    planes = [0.5 + 0.3 * np.sin(2 * np.pi * (rng.uniform(0.5, 2) * x + rng.uniform(0.5, 2) * y) + rng.uniform(0, 6))
              for _ in range(3)]
    return torch.from_numpy(np.stack(planes)).float()


def amplitude(img: torch.Tensor, cycles: int) -> float:
    """Amplitude of the horizontal cosine with `cycles` periods across the image (mean over rows)."""
    spectrum = torch.fft.rfft(img[0] - img[0].mean(), dim=-1).abs().mean(0)
    return float(spectrum[cycles]) * 2 / img.shape[-1]


def test_degrade_is_a_pure_function_of_seed_and_index():
    hr = smooth_image(64)
    cfg = DegradationConfig()
    a = degrade(hr, 4, cfg, seed=3, index=17)
    assert torch.equal(a, degrade(hr.clone(), 4, cfg, seed=3, index=17))
    assert not torch.equal(a, degrade(hr, 4, cfg, seed=3, index=18))
    assert not torch.equal(a, degrade(hr, 4, cfg, seed=4, index=17))
    batch = degrade_batch(torch.stack([hr, hr]), 4, cfg, 3, [17, 18])
    assert torch.equal(batch[0], a)


@pytest.mark.parametrize("order", ["second_order", "shuffled"])
@pytest.mark.parametrize("scale", [2, 4, 8])
def test_degrade_sizes_range_and_levels(scale, order):
    cfg = DegradationConfig(order=order)
    hr = smooth_image(96)
    for index in range(6):
        lr = degrade(hr, scale, cfg, seed=0, index=index)
        assert lr.shape == (3, 96 // scale, 96 // scale)
        assert torch.isfinite(lr).all() and lr.min() >= 0 and lr.max() <= 1
        assert torch.equal(lr, (lr * 255).round() / 255)  # 8-bit levels, as a file would hold


def test_degraded_lr_differs_from_a_plain_downscale():
    hr = smooth_image(96)
    plain = torch.nn.functional.interpolate(hr[None], size=(24, 24), mode="area")[0]
    errors = [float((degrade(hr, 4, DegradationConfig(), 0, i) - plain).abs().mean()) for i in range(8)]
    assert np.mean(errors) > 0.01


@pytest.mark.parametrize("scale", [2, 4, 8])
def test_antialiased_bicubic_downscale_is_matlabs_and_the_published_one_aliases(scale):
    """antialias=True: torch's bicubic matches progsr.resize.imresize (the benchmark's LR); False (Real-ESRGAN's)
    samples white noise sparsely, so its strength survives the downscale instead of falling by about the scale."""
    from progsr.resize import imresize

    noise = torch.rand(3, 96, 96, generator=torch.Generator().manual_seed(0))
    matlab = torch.from_numpy(imresize(noise.permute(1, 2, 0).double().numpy(), scale=1 / scale)).permute(2, 0, 1)
    aa = resize(noise, (96 // scale, 96 // scale), "bicubic", antialias=True).double()
    published = resize(noise, (96 // scale, 96 // scale), "bicubic").double()
    inside = (slice(None), slice(2, -2), slice(2, -2))  # the borders differ: torch clamps, MATLAB reflects
    assert float((aa - matlab)[inside].abs().max()) < 1e-5 < 0.1 < float((published - matlab)[inside].abs().max())
    assert float(published.std()) > 1.7 * float(aa.std())
    hr = smooth_image(96)  # and the pipeline uses it: same draws, other pixels
    cfg = DegradationConfig(resize_prob2=(0.0, 0.0, 1.0))
    lrs = [degrade(hr, scale, replace(cfg, antialias=on), 0, 5) for on in (False, True)]
    assert lrs[0].shape == lrs[1].shape and not torch.equal(*lrs)


def test_gaussian_noise_sigma_comes_back_within_ten_percent():
    flat = torch.full((3, 128, 128), 0.5)
    for sigma, gray in ((5 / 255, False), (20 / 255, True)):
        noisy = gaussian_noise(flat, sigma, gray, torch.Generator().manual_seed(1))
        assert abs(float((noisy - flat).std()) / sigma - 1) < 0.1
        same = torch.allclose(noisy[0], noisy[1])
        assert same == gray


def test_poisson_noise_grows_with_brightness_and_scale():
    gen = torch.Generator().manual_seed(0)
    ramp = torch.linspace(0, 1, 256).repeat(3, 64, 1)  # 256 levels, so the noise is at 256 levels too
    noise = poisson_noise(ramp, 1.0, False, gen) - ramp
    dark, bright = float(noise[..., :64].std()), float(noise[..., -64:].std())
    assert bright > 2 * dark
    expected = math.sqrt(0.9 / 256)  # shot noise std at the bright end: sqrt(x * levels) / levels
    assert abs(bright / expected - 1) < 0.15
    double = poisson_noise(ramp, 2.0, False, torch.Generator().manual_seed(0)) - ramp
    assert abs(float(double.std()) / float(noise.std()) - 2) < 0.01


@pytest.mark.parametrize("sigma", [1.0, 2.0])
def test_gaussian_blur_removes_the_frequencies_it_should(sigma):
    size = 128
    x = torch.arange(size) / size
    for cycles in (4, 12, 20):
        wave = (0.5 + 0.25 * torch.cos(2 * math.pi * cycles * x)).repeat(3, size, 1)
        blurred = filter_image(wave, blur_kernel("iso", 21, sigma, sigma, 0.0))
        frequency = cycles / size  # cycles per pixel
        expected = math.exp(-2 * math.pi**2 * sigma**2 * frequency**2)
        assert abs(amplitude(blurred, cycles) / 0.25 - expected) < 0.02


def test_kernel_shapes():
    aniso = blur_kernel("aniso", 21, 3.0, 0.5, 0.0)
    assert float(aniso.sum()) == pytest.approx(1.0, abs=1e-5)
    assert float(aniso[10, :].sum()) > 3 * float(aniso[:, 10].sum())  # wide along x, narrow along y
    rotated = blur_kernel("aniso", 21, 3.0, 0.5, math.pi / 2)
    assert torch.allclose(rotated, aniso.T, atol=1e-6)
    gauss, plateau = blur_kernel("iso", 21, 2.0, 2.0, 0.0), blur_kernel("plateau_iso", 21, 2.0, 2.0, 0.0, 2.0)
    assert plateau[10, 0] > gauss[10, 0]  # the plateau's heavy tails
    flat_top = blur_kernel("generalized_iso", 21, 2.0, 2.0, 0.0, 4.0)
    assert float(flat_top[10, 11] / flat_top[10, 10]) > float(gauss[10, 11] / gauss[10, 10])


def test_sinc_kernel_is_a_low_pass_at_its_cutoff():
    size = 128
    x = torch.arange(size) / size
    kernel = sinc_kernel(21, math.pi / 2)  # cutoff: 0.25 cycles per pixel
    for cycles, passes in ((8, True), (56, False)):  # 0.0625 and 0.4375 cycles per pixel
        wave = (0.5 + 0.25 * torch.cos(2 * math.pi * cycles * x)).repeat(3, size, 1)
        kept = amplitude(filter_image(wave, kernel), cycles) / 0.25
        assert (kept > 0.9) if passes else (kept < 0.1)


def test_jpeg_block_energy_falls_with_quality():
    img = smooth_image(128, seed=2)
    scores = [blockiness((jpeg(img, q) * 255).round().to(torch.uint8).permute(1, 2, 0).numpy()) for q in (10, 40, 95)]
    assert scores[0] > scores[1] > scores[2]
    assert scores[0] > 2.0 and scores[2] < 1.3
    assert blockiness((img * 255).round().to(torch.uint8).permute(1, 2, 0).numpy()) < 1.1


def test_config_rejects_bad_ranges():
    assert DegradationConfig.from_dict({"order": "shuffled"}).order == "shuffled"
    with pytest.raises(UserError, match="unknown config key"):
        DegradationConfig.from_dict({"noise": [1, 2]})
    with pytest.raises(UserError, match="noise_range"):
        DegradationConfig.from_dict({"noise_range": [30, 1]})
    with pytest.raises(UserError, match="kernel_prob"):
        DegradationConfig.from_dict({"kernel_prob": [1, 0, 0, 0, 0, 0.5]})
    with pytest.raises(UserError, match="order"):
        DegradationConfig.from_dict({"order": "random"})


# ------------------------------------------------------------------------------------------ benchmark levels


def test_clean_level_is_the_benchmark_lr():
    from progsr.protocol import make_lr

    hr = (smooth_image(67).permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)
    hr_mod, lr = degrade_level(hr, 4, "clean", "x.png")
    ref_hr, ref_lr = make_lr(hr, 4)
    assert np.array_equal(hr_mod, ref_hr) and np.array_equal(lr, ref_lr)


def test_levels_noise_sigma_and_seed_by_name(monkeypatch):
    flat = np.full((256, 256, 3), 128, np.uint8)
    _, clean = degrade_level(flat, 2, "clean", "a.png")
    monkeypatch.setitem(LEVELS, "noise_only", Level(0.0, 8.0, 0))
    _, noisy = degrade_level(flat, 2, "noise_only", "a.png")
    assert abs(float((noisy.astype(float) - clean).std()) / 8.0 - 1) < 0.1
    # JPEG then smooths part of the noise away, but more noise stays more
    kept = [float((degrade_level(flat, 2, level, "a.png")[1].astype(float) - clean).std())
            for level in ("light", "medium", "heavy")]
    assert 0 < kept[0] < kept[1] < kept[2] < LEVELS["heavy"].noise
    a1, a2 = degrade_level(flat, 2, "medium", "a.png")[1], degrade_level(flat, 2, "medium", "a.png")[1]
    b = degrade_level(flat, 2, "medium", "b.png")[1]
    assert np.array_equal(a1, a2) and not np.array_equal(a1, b)


def test_level_blur_and_jpeg_do_what_they_say():
    hr = (smooth_image(128, seed=5).permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)
    hr[::2] = 255 - hr[::2]  # add the finest detail, which the blur must take away
    _, clean = degrade_level(hr, 2, "clean", "x")
    _, heavy = degrade_level(hr, 2, "heavy", "x")
    _, jpeg40 = degrade_level(hr, 2, "jpeg", "x")
    assert heavy.shape == clean.shape == jpeg40.shape == (64, 64, 3)
    assert blockiness(jpeg40) > blockiness(clean)
    with pytest.raises(UserError, match="unknown degradation level"):
        degrade_level(hr, 2, "extreme", "x")
