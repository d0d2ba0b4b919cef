import math
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file, save_file
from scipy.signal import convolve2d
from skimage import data as skdata

from progsr.errors import UserError
from progsr.imageio import read_array
from progsr.metrics import build_lpips, excess_texture, grid_artifact, lpips_distance, psnr, ssim

Y_GAIN = (65.481 + 128.553 + 24.966) / 255.0  # dY (0-255) per unit step of R = G = B (0-255)


# ------------------------------------------------------------------------------------------- PSNR


def test_psnr_of_a_known_mse_on_grey(rng):
    ref = rng.integers(10, 240, size=(20, 24), dtype=np.uint8)
    img = ref.copy()
    img[::2] += 6  # half the pixels off by 6 -> MSE 18
    assert psnr(img, ref, crop_border=0) == pytest.approx(10 * math.log10(255**2 / 18), abs=1e-9)


def test_psnr_y_channel_of_a_uniform_rgb_offset(rng):
    ref = rng.integers(10, 240, size=(16, 16, 3), dtype=np.uint8)
    img = ref + np.uint8(4)  # Y moves by 4 * 219/255 everywhere
    expected = 10 * math.log10(255**2 / (4 * Y_GAIN) ** 2)
    assert psnr(img, ref, crop_border=0) == pytest.approx(expected, abs=1e-4)
    # RGB PSNR sees the full offset of 4 in every channel
    assert psnr(img, ref, crop_border=0, test_y_channel=False) == pytest.approx(10 * math.log10(255**2 / 16), abs=1e-9)


def test_psnr_rgb_averages_over_channels(rng):
    ref = rng.integers(10, 240, size=(12, 10, 3), dtype=np.uint8)
    img = ref.copy()
    img[..., 2] += 3  # only blue is off: MSE over all channels = 9 / 3
    assert psnr(img, ref, 0, test_y_channel=False) == pytest.approx(10 * math.log10(255**2 / 3), abs=1e-9)


def test_crop_border_shaves_exactly_that_many_pixels(rng):
    ref = rng.integers(0, 200, size=(20, 20, 3), dtype=np.uint8)
    img = ref.copy()
    img[:3] += 50  # damage only the top 3 rows
    assert psnr(img, ref, crop_border=3) == math.inf
    assert math.isfinite(psnr(img, ref, crop_border=2))
    img[:, -4] += 50  # column 4 from the right survives a 3-px shave
    assert math.isfinite(psnr(img, ref, crop_border=3))


def test_grey_images_use_raw_levels_not_y(rng):
    ref = rng.integers(0, 250, size=(15, 15), dtype=np.uint8)
    img = ref + np.uint8(5)
    raw = 10 * math.log10(255**2 / 25)
    assert psnr(img, ref, 0) == pytest.approx(raw, abs=1e-9)
    assert psnr(img[..., None], ref[..., None], 0) == pytest.approx(raw, abs=1e-9)  # HxWx1 is grey too
    assert abs(psnr(img, ref, 0) - 10 * math.log10(255**2 / (5 * Y_GAIN) ** 2)) > 1.0  # what Y would give


def test_uint8_and_float_inputs_agree(rng):
    ref = rng.integers(0, 256, size=(24, 24, 3), dtype=np.uint8)
    img = np.clip(ref.astype(int) + rng.integers(-9, 10, size=ref.shape), 0, 255).astype(np.uint8)
    for metric in (psnr, ssim):
        a = metric(img, ref, 2)
        b = metric(img.astype(np.float32) / 255, ref.astype(np.float32) / 255, 2)
        assert a == pytest.approx(b, abs=1e-5)


def test_mismatched_shapes_are_rejected():
    with pytest.raises(ValueError, match="shapes differ"):
        psnr(np.zeros((8, 8, 3), np.uint8), np.zeros((8, 9, 3), np.uint8), 0)


# ------------------------------------------------------------------------------------------- SSIM


def _ssim_reference(a: np.ndarray, b: np.ndarray) -> float:
    """Wang et al.'s ssim_index.m written out: fspecial('gaussian', 11, 1.5), filter2 'valid', L = 255."""
    x = np.arange(-5, 6)
    g = np.exp(-(x[:, None] ** 2 + x[None, :] ** 2) / (2 * 1.5**2))
    w = g / g.sum()
    f = lambda img: convolve2d(img, w, mode="valid")  # noqa: E731  (w is symmetric: correlation = convolution)
    c1, c2 = (0.01 * 255) ** 2, (0.03 * 255) ** 2
    mu_a, mu_b = f(a), f(b)
    var_a, var_b, cov = f(a * a) - mu_a**2, f(b * b) - mu_b**2, f(a * b) - mu_a * mu_b
    return float(np.mean(((2 * mu_a * mu_b + c1) * (2 * cov + c2)) / ((mu_a**2 + mu_b**2 + c1) * (var_a + var_b + c2))))


@pytest.fixture
def camera_pair(rng):
    ref = skdata.camera()[100:164, 200:260]
    img = np.clip(ref + rng.normal(0, 12, ref.shape), 0, 255).astype(np.uint8)
    return img, ref


def test_ssim_matches_the_valid_window_reference_on_grey(camera_pair):
    img, ref = camera_pair
    expected = _ssim_reference(img[4:-4, 4:-4].astype(float), ref[4:-4, 4:-4].astype(float))
    assert ssim(img, ref, crop_border=4) == pytest.approx(expected, abs=1e-10)
    assert 0.3 < expected < 0.95  # a real, non-trivial comparison


def test_ssim_on_y_and_on_rgb_match_the_reference(rng):
    ref = skdata.astronaut()[200:250, 150:210]
    img = np.clip(ref + rng.normal(0, 10, ref.shape), 0, 255).astype(np.uint8)
    y = lambda im: 16 + im.astype(float) @ np.array([65.481, 128.553, 24.966]) / 255  # noqa: E731
    assert ssim(img, ref, 3) == pytest.approx(_ssim_reference(y(img)[3:-3, 3:-3], y(ref)[3:-3, 3:-3]), abs=1e-6)
    per_channel = [_ssim_reference(img[3:-3, 3:-3, c].astype(float), ref[3:-3, 3:-3, c].astype(float)) for c in range(3)]
    assert ssim(img, ref, 3, test_y_channel=False) == pytest.approx(np.mean(per_channel), abs=1e-10)


def test_ssim_same_mode_is_matlab_builtin_ssim(camera_pair, rng):
    """MATLAB ssim(): replicate-pad by 5 px, filter, average every pixel (no 'valid' crop)."""
    img, ref = camera_pair
    pad = lambda x: np.pad(x[2:-2, 2:-2].astype(float), 5, mode="edge")  # noqa: E731
    expected = _ssim_reference(pad(img), pad(ref))
    assert ssim(img, ref, crop_border=2, mode="same") == pytest.approx(expected, abs=1e-10)
    assert abs(ssim(img, ref, 2, mode="same") - ssim(img, ref, 2)) > 1e-4  # the modes really differ
    with pytest.raises(ValueError, match="mode"):
        ssim(img, ref, 2, mode="full")


def test_ssim_of_identical_images_is_one(camera_pair):
    _, ref = camera_pair
    assert ssim(ref, ref, 0) == pytest.approx(1.0, abs=1e-12)


# ------------------------------------------------------------------------------------------- LPIPS

ALEX_SHAPES = {0: (64, 3, 11, 11), 3: (192, 64, 5, 5), 6: (384, 192, 3, 3), 8: (256, 384, 3, 3), 10: (256, 256, 3, 3)}


def _random_alex_features(seed: int) -> dict[str, torch.Tensor]:
    """A torchvision-named AlexNet `features.*` state dict with random values."""
    gen = torch.Generator().manual_seed(seed)
    state = {}
    for i, shape in ALEX_SHAPES.items():
        state[f"features.{i}.weight"] = torch.randn(shape, generator=gen) * 0.05
        state[f"features.{i}.bias"] = torch.randn(shape[0], generator=gen) * 0.05
    return state


def _assert_backbone_is(model, features: dict[str, torch.Tensor]) -> None:
    """Every lpips trunk parameter equals the torchvision weight of the same index (lpips keeps the index)."""
    params = dict(model.net.named_parameters())  # "slice2.3.weight" <- "features.3.weight"
    assert len(params) == len(features)
    for name, value in params.items():
        torch.testing.assert_close(value, features["features." + name.split(".", 1)[1]], rtol=0, atol=0)


@pytest.fixture(autouse=True)
def _offline(offline):
    """Every test here runs offline (see conftest.offline)."""


@pytest.fixture
def two_backbones(tmp_path):
    """Two folders, each holding a different random alexnet_features.safetensors."""
    folders = []
    for seed in (1, 2):
        folder = tmp_path / f"backbones{seed}"
        folder.mkdir()
        save_file(_random_alex_features(seed), str(folder / "alexnet_features.safetensors"))
        folders.append(folder)
    return folders


def test_explicit_path_wins_over_the_environment(two_backbones, monkeypatch):
    explicit, env = two_backbones
    monkeypatch.setenv("PROGSR_BACKBONES", str(env))
    model = build_lpips("alex", backbone_path=explicit / "alexnet_features.safetensors")
    _assert_backbone_is(model, _random_alex_features(1))
    model = build_lpips("alex", backbone_path=explicit)  # a folder works too
    _assert_backbone_is(model, _random_alex_features(1))


def test_environment_folder_is_used_without_a_path(two_backbones, monkeypatch):
    monkeypatch.setenv("PROGSR_BACKBONES", str(two_backbones[1]))
    _assert_backbone_is(build_lpips("alex"), _random_alex_features(2))


def test_torchvision_cache_is_used_when_nothing_else_is_given(tmp_path, monkeypatch):
    import progsr.paths
    from torchvision.models import AlexNet_Weights

    monkeypatch.setattr(progsr.paths, "shared_dir", lambda: None)  # no ../shared beside the checkout either
    checkpoints = tmp_path / "torch_home" / "hub" / "checkpoints"
    checkpoints.mkdir(parents=True)
    state = _random_alex_features(3) | {"classifier.1.weight": torch.zeros(4, 2)}  # a full model file
    torch.save(state, checkpoints / Path(AlexNet_Weights.IMAGENET1K_V1.url).name)
    model = build_lpips("alex")
    _assert_backbone_is(model, _random_alex_features(3))
    assert "torchvision" in model.backbone_source


def test_nothing_available_explains_the_offline_option(tmp_path, monkeypatch):
    import progsr.paths

    monkeypatch.setattr(progsr.paths, "shared_dir", lambda: None)
    monkeypatch.setenv("PROGSR_BACKBONES", str(tmp_path))  # set, but holds no backbone
    with pytest.raises(UserError) as err:
        build_lpips("alex")
    message = str(err.value)
    assert "PROGSR_BACKBONES" in message and "alexnet_features.safetensors" in message
    assert "network disabled in tests" in message  # the download failure is reported
    assert "progsr train --set backbones=PATH" in message  # the option train really has
    assert "\n" not in message


def test_explicit_path_that_does_not_exist_is_an_error(tmp_path):
    with pytest.raises(UserError, match="not found"):
        build_lpips("alex", backbone_path=tmp_path / "nope.safetensors")


def test_backbone_with_a_missing_or_misshapen_weight_is_rejected(tmp_path):
    partial = _random_alex_features(1)
    del partial["features.8.bias"]
    save_file(partial, str(tmp_path / "partial.safetensors"))
    with pytest.raises(UserError, match="features.8.bias"):
        build_lpips("alex", backbone_path=tmp_path / "partial.safetensors")
    wrong = _random_alex_features(1)
    wrong["features.10.weight"] = torch.zeros(256, 256, 1, 1)
    save_file(wrong, str(tmp_path / "wrong.safetensors"))
    with pytest.raises(UserError, match="do not fit"):
        build_lpips("alex", backbone_path=tmp_path / "wrong.safetensors")
    (tmp_path / "junk.safetensors").write_bytes(b"not a safetensors file")
    with pytest.raises(UserError, match="junk.safetensors"):
        build_lpips("alex", backbone_path=tmp_path / "junk.safetensors")


def test_lpips_distance_shaves_the_border_and_accepts_grey(two_backbones, rng):
    model = build_lpips("alex", backbone_path=two_backbones[0])
    ref = rng.integers(0, 256, size=(48, 48, 3), dtype=np.uint8)
    img = ref.copy()
    img[:, :4] = 255 - img[:, :4]  # damage only a 4-px strip at the left
    assert lpips_distance(img, ref, model, crop_border=4) == 0.0
    assert lpips_distance(img, ref, model, crop_border=0) > 1e-4
    grey = ref[..., 0]
    assert lpips_distance(grey, grey, model, crop_border=0) == 0.0
    rgb_of_grey = np.repeat(grey[..., None], 3, axis=2)
    noisy = np.clip(grey + rng.integers(-20, 21, grey.shape), 0, 255).astype(np.uint8)
    assert lpips_distance(noisy, grey, model, 0) == pytest.approx(
        lpips_distance(np.repeat(noisy[..., None], 3, axis=2), rgb_of_grey, model, 0), abs=1e-6
    )


@pytest.mark.shared
@pytest.mark.parametrize("net, expected", [("alex", (0.7219, 0.1376)), ("vgg", (0.5686, 0.4217))])
def test_lpips_check_values_with_the_shared_backbones(shared, net, expected):
    examples = shared / "data" / "lpips_examples"
    ref, p0, p1 = (read_array(examples / f"ex_{n}.png") for n in ("ref", "p0", "p1"))
    model = build_lpips(net, backbone_path=shared / "backbones")
    file = shared / "backbones" / ("alexnet_features.safetensors" if net == "alex" else "vgg16_features.safetensors")
    _assert_backbone_is(model, load_file(str(file)))
    assert lpips_distance(p0, ref, model, crop_border=0) == pytest.approx(expected[0], abs=5e-4)
    assert lpips_distance(p1, ref, model, crop_border=0) == pytest.approx(expected[1], abs=5e-4)


# ------------------------------------------------------------------------------------------- grid artefact


def test_grid_artifact_of_a_pure_checkerboard_is_its_amplitude_less_the_box_mean():
    img = np.full((40, 48), 128, np.uint8) + np.where(np.indices((40, 48)).sum(axis=0) % 2 == 0, 2, -2).astype(np.int8)
    # the 5x5 box average of a +-2 checkerboard is +-2/25, so the locked residual is +-2 * 24/25 everywhere
    assert grid_artifact(img.astype(np.uint8), 2) == pytest.approx(2 * 24 / 25, abs=1e-9)


def test_grid_artifact_sees_a_locked_pattern_on_a_photo_and_not_an_unlocked_texture(rng):
    photo = skdata.chelsea()[:256, :256]
    clean = grid_artifact(photo, 4)
    dots = photo.astype(np.float64)
    dots[1::4, 2::4] += 6  # a dot every 4 px, as a pixel-shuffle generator prints it
    noisy = photo + rng.normal(0, 6, photo.shape)  # more energy than the dots, but not locked to the grid
    assert clean < 0.2
    assert grid_artifact(np.clip(dots, 0, 255).astype(np.uint8), 4) > 1.0
    assert grid_artifact(np.clip(noisy, 0, 255).astype(np.uint8), 4) < 0.5


# ------------------------------------------------------------------------------------------- excess texture


def test_excess_texture_of_a_checkerboard_on_flat_grey_is_its_amplitude():
    flat = np.full((40, 48), 128, np.uint8)
    board = (flat + np.where(np.indices((40, 48)).sum(axis=0) % 2 == 0, 2, -2)).astype(np.uint8)
    # the 1 px Gaussian removes almost nothing of a Nyquist pattern: its energy is 2^2 everywhere
    assert excess_texture(board, flat, crop_border=4) == pytest.approx(2.0, rel=1e-2)
    assert excess_texture(flat, board, crop_border=4) == 0.0  # smoother than the reference: no excess


def test_excess_texture_counts_texture_added_where_the_hr_has_none_not_texture_replaced(rng):
    hr = np.full((64, 64), 128.0)
    hr[:, 32:] += rng.normal(0, 8, (64, 32))  # the right half is textured
    replaced = hr.copy()
    replaced[:, 32:] = 128 + rng.normal(0, 8, (64, 32))  # other texture of the same energy in its place
    painted = hr.copy()
    painted[:, :32] += rng.normal(0, 8, (64, 32))  # texture painted on the flat half
    u8 = lambda a: np.clip(np.round(a), 0, 255).astype(np.uint8)  # noqa: E731
    assert excess_texture(u8(hr), u8(hr), crop_border=0) == 0.0
    painted_score = excess_texture(u8(painted), u8(hr), crop_border=4)
    assert painted_score > 3.0
    # only local fluctuations of the two textures' energies remain (about 0.3 of the painted score)
    assert excess_texture(u8(replaced), u8(hr), crop_border=4) < 0.4 * painted_score


def test_colour_shift_is_the_mean_rgb_difference_in_levels():
    from progsr.metrics import colour_shift

    ref = np.random.default_rng(0).integers(20, 230, (40, 40, 3), dtype=np.uint8)
    darker = ref.copy()
    darker[..., 0] -= 3
    assert np.allclose(colour_shift(darker, ref, crop_border=4), [-3, 0, 0])
    assert np.allclose(colour_shift(ref[..., 1], ref[..., 1], crop_border=0), [0])  # grey: one value
