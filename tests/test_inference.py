"""progsr.inference.Upscaler: seam-free tiling, kinds in = kinds out, alpha/grey/16-bit, sizes, realism, OOM retry."""

import numpy as np
import pytest
import torch
from PIL import Image
from skimage import data

from progsr.errors import UserError
from progsr.inference import Upscaler
from progsr.tiling import blend_ramp, fit_tile, tile_starts
from progsr.models import ProgressiveGenerator, load_generator, save_generator, tiny_config
from progsr.resize import imresize

from helpers import random_tiny


@pytest.fixture(scope="module")
def model_path(tmp_path_factory):
    path = tmp_path_factory.mktemp("model") / "tiny.safetensors"
    save_generator(random_tiny(1), path)
    return path


@pytest.fixture(scope="module")
def up(model_path):
    return Upscaler(model_path, device="cpu")


@pytest.fixture
def img():
    return data.astronaut()[180:228, 180:236]  # 48x56 RGB uint8


def test_tile_starts_cover_with_overlap():
    for length, tile, overlap in [(100, 32, 8), (97, 40, 16), (64, 64, 16), (20, 64, 16), (300, 64, 32)]:
        starts = tile_starts(length, tile, overlap)
        size = min(tile, length)
        assert starts[0] == 0 and starts[-1] + size == length
        steps = np.diff(starts)
        assert (steps <= size - overlap).all() and (steps > 0).all()


def test_fitted_tiles_are_no_more_and_no_larger_than_needed():
    assert fit_tile(512, 256, 40) == 198 and len(tile_starts(512, 198, 40)) == len(tile_starts(512, 256, 40)) == 3
    for length in range(1, 400, 7):
        for tile, overlap in [(32, 8), (64, 16), (80, 40), (128, 40), (256, 40)]:
            fitted = fit_tile(length, tile, overlap)
            count = len(tile_starts(length, min(tile, length), overlap))
            assert fitted <= min(tile, length)
            assert len(tile_starts(length, fitted, overlap)) == count
            if count > 1:  # one pixel less would need another tile
                assert len(tile_starts(length, fitted - 1, overlap)) > count


def test_blend_windows_of_neighbours_sum_to_one():
    tile, overlap, scale = 40, 16, 4
    left = blend_ramp(tile, overlap, scale, rise=False, fall=True)
    right = blend_ramp(tile, overlap, scale, rise=True, fall=False)
    shift = (tile - overlap) * scale
    total = np.zeros(shift + tile * scale, np.float32)
    total[: tile * scale] += left
    total[shift:] += right
    np.testing.assert_allclose(total, 1, atol=1e-6)
    assert np.abs(left[-(overlap // 4) * scale:]).max() == 0  # pixels that saw the tile edge get no weight
    assert (left[: (tile - overlap) * scale] == 1).all()


@pytest.mark.parametrize("scale", [2, 8])
def test_tiled_matches_whole_image(model_path, img, scale):
    whole = Upscaler(model_path, device="cpu").upscale_pixels(img, scale)
    calls = []
    tiled = Upscaler(model_path, device="cpu", tile=32, tile_overlap=16, tile_batch=3)
    out = tiled.upscale_pixels(img, scale, progress=lambda done, total: calls.append((done, total)))
    assert calls and calls[-1][1] == 6  # really tiled: 2x3 tiles of the 48x56 input, in batches of 3
    assert out.shape == whole.shape == (48 * scale, 56 * scale, 3)
    assert np.abs(out.astype(int) - whole.astype(int)).max() <= 1  # within 1/255


def test_returns_the_kind_it_was_given(up, img, tmp_path):
    pil = up.upscale(Image.fromarray(img), scale=2)
    assert isinstance(pil, Image.Image) and pil.mode == "RGB" and pil.size == (112, 96)
    arr = up.upscale(img, scale=2)
    assert isinstance(arr, np.ndarray) and arr.dtype == np.uint8 and arr.shape == (96, 112, 3)
    assert np.array_equal(np.asarray(pil), arr)
    for dtype, top in [(np.uint16, 65535), (np.float32, 1.0), (np.float64, 1.0)]:
        out = up.upscale((img / 255.0 * top).astype(dtype), scale=2)
        assert out.dtype == dtype and out.shape == (96, 112, 3)
    Image.fromarray(img).save(tmp_path / "in.png")
    from_path = up.upscale(str(tmp_path / "in.png"), scale=2)
    assert isinstance(from_path, Image.Image) and np.array_equal(np.asarray(from_path), arr)
    assert isinstance(up.upscale(tmp_path / "in.png", scale=2), Image.Image)


@pytest.mark.parametrize("mode,channels", [("L", None), ("LA", 2), ("RGBA", 4)])
def test_pil_modes_are_kept(up, img, mode, channels):
    pil = Image.fromarray(img).convert(mode)
    out = up.upscale(pil, scale=2)
    assert out.mode == mode and out.size == (112, 96)


def test_palette_becomes_rgb_or_rgba(up, img):
    pal = Image.fromarray(img).quantize(8)
    assert up.upscale(pal, scale=2).mode == "RGB"
    pal.info["transparency"] = 0
    assert up.upscale(pal, scale=2).mode == "RGBA"


def test_alpha_is_bicubic_and_colour_ignores_it(up, img, rng):
    alpha = rng.integers(0, 256, img.shape[:2], dtype=np.uint8)
    alpha[:10] = 0  # fully transparent band: colour must still come from the model
    rgba = np.dstack([img, alpha])
    out = up.upscale(rgba, scale=4)
    assert out.shape == (192, 224, 4)
    assert np.array_equal(out[:, :, :3], up.upscale(img, scale=4))
    expected = np.clip(imresize(alpha / 255.0, scale=4), 0, 1) * 255  # MATLAB bicubic, clamped
    assert np.abs(out[:, :, 3] - expected).max() <= 0.5 + 1e-6
    assert out[:, :, 3].min() == 0 and out[:, :, 3].max() == 255  # overshoot clamped, not wrapped


def test_grey_runs_as_rgb_and_comes_back_grey(up, img):
    grey = np.asarray(Image.fromarray(img).convert("L"))
    out = up.upscale(grey, scale=2)
    assert out.shape == (96, 112) and out.dtype == np.uint8
    rgb = up.upscale(np.dstack([grey] * 3).astype(np.float32) / 255, scale=2)
    luma = rgb @ np.array([0.299, 0.587, 0.114])
    assert np.abs(out - luma * 255).max() <= 0.5 + 1e-3
    assert up.upscale(grey[:, :, None], scale=2).shape == (96, 112, 1)


def test_16bit_is_not_quantised_to_8_bits(up):
    ramp = np.linspace(0, 65535, 40 * 40 * 3).reshape(40, 40, 3).astype(np.uint16)  # fine steps
    out16 = up.upscale(ramp, scale=2)
    out_float = up.upscale(ramp.astype(np.float32) / 65535, scale=2)
    assert out16.dtype == np.uint16
    assert np.abs(out16 / 65535.0 - out_float).max() <= 0.5 / 65535 + 1e-6  # rounded once, at the end
    assert len(np.unique(out16)) > 4 * 256


@pytest.mark.parametrize("outscale,model_scale", [(1.5, 2), (3, 4), (2.5, 4), (5.2, 8), (8, 8)])
def test_outscale_gives_exact_size(up, img, outscale, model_scale):
    assert up.plan(48, 56, outscale=outscale)[0] == model_scale
    out = up.upscale(img, outscale=outscale)
    assert out.shape == (round(48 * outscale), round(56 * outscale), 3)


def test_outscale_is_a_bicubic_downscale_of_the_next_model_scale(up, img):
    x = torch.from_numpy(img.astype(np.float32) / 255).permute(2, 0, 1)[None]
    x4 = torch.from_numpy(up.engine.run(x.numpy(), 4)[0])  # the unclamped x4 network output
    ref = imresize(x4.permute(1, 2, 0).double().numpy(), size=(144, 168)).clip(0, 1)
    out = up.upscale(img.astype(np.float32) / 255, outscale=3)
    assert np.abs(out - ref).max() < 1e-5


def test_size_gives_exact_size_and_may_change_aspect(up, img):
    out = up.upscale(Image.fromarray(img), size=(300, 100))  # width, height
    assert out.size == (300, 100)
    assert up.plan(48, 56, size=(300, 100))[0] == 8  # 300/56 = 5.4 -> x8
    with pytest.raises(UserError, match="--size"):
        up.upscale(img, size=(1000, 10))


def test_bad_arguments_are_user_errors(up, img, model_path):
    with pytest.raises(UserError, match="--scale 3"):
        up.upscale(img, scale=3)
    with pytest.raises(UserError, match=r"--scale 3: not supported; choose 2, 4 or 8 \(for x3 use --outscale 3\)"):
        list(up.upscale_stages(img, scale=3))
    with pytest.raises(UserError, match="--outscale"):
        up.upscale(img, outscale=9)
    with pytest.raises(UserError, match="--max-pixels"):
        Upscaler(model_path, device="cpu", max_pixels=100).upscale(img, scale=2)
    with pytest.raises(UserError, match="--tile"):
        Upscaler(model_path, device="cpu", tile=40, tile_overlap=32)
    with pytest.raises(UserError, match="no such weights file"):
        Upscaler("nowhere.safetensors")
    with pytest.raises(UserError, match="--model PATH"):
        Upscaler(model_path, realism=0.5)


def test_upscale_stages_yields_each_scale(up, img):
    stages = list(up.upscale_stages(Image.fromarray(img), scale=8))
    assert [s for s, _ in stages] == [2, 4, 8]
    assert [im.size for _, im in stages] == [(112, 96), (224, 192), (448, 384)]
    assert np.array_equal(np.asarray(stages[-1][1]), up.upscale(img, scale=8))
    assert [s for s, _ in up.upscale_stages(img, scale=4)] == [2, 4]


def _count_calls(module, counts, key):
    return module.register_forward_hook(lambda *_: counts.__setitem__(key, counts[key] + 1))


@pytest.mark.parametrize("tile", [None, 32])  # whole image, and forced 3x4 tiles in batches of 3
@pytest.mark.parametrize("channels", [3, 1, 4])
def test_upscale_stages_equal_upscale_from_one_network_pass(model_path, img, rng, tile, channels):
    up = Upscaler(model_path, device="cpu", tile=tile, tile_overlap=16, tile_batch=3)
    pixels = {3: img, 1: np.asarray(Image.fromarray(img).convert("L")),
              4: np.dstack([img, rng.integers(0, 256, img.shape[:2], dtype=np.uint8)])}[channels]
    expected = {s: up.upscale(pixels, scale=s) for s in (2, 4, 8)}
    counts = {"head": 0}
    handle = _count_calls(up.model.head, counts, "head")
    batches = []
    try:
        stages = list(up.upscale_stages(pixels, scale=8, progress=lambda done, total: batches.append(total)))
    finally:
        handle.remove()
    assert [s for s, _ in stages] == [2, 4, 8]
    for s, out in stages:
        assert out.dtype == np.uint8 and out.shape == expected[s].shape == (48 * s, 56 * s) + pixels.shape[2:]
        assert np.abs(out.astype(int) - expected[s].astype(int)).max() <= 1  # within 1/255
    # one pass: 1 whole image, or 2 strips of 3 tiles, each strip in one batch of 3
    assert batches == ([1] if tile is None else [6] * 2)
    assert counts["head"] == len(batches)  # the network ran once per tile batch, not once per stage


def test_upscale_stages_streams_the_whole_image(up, img):
    up.upscale(img, scale=8)  # measures the memory per pixel (a probe run) before we count
    counts = dict.fromkeys(range(3), 0)
    handles = [_count_calls(stage, counts, k) for k, stage in enumerate(up.model.stages)]
    try:
        stages = up.upscale_stages(Image.fromarray(img), scale=8)
        seen = []
        for s, out in stages:
            seen.append((s, out.size, [counts[k] for k in range(3)]))
    finally:
        for handle in handles:
            handle.remove()
    # x2 arrives when only stage 1 has run, x4 before stage 3 runs
    assert seen == [(2, (112, 96), [1, 0, 0]), (4, (224, 192), [1, 1, 0]), (8, (448, 384), [1, 1, 1])]


def test_out_of_memory_retries_with_smaller_tiles(model_path, img):
    up = Upscaler(model_path, device="cpu", tile_overlap=16, tile_batch=4, pre_pad=8)
    expected = up.upscale_pixels(img, 2)
    real_forward, sizes = up.network._forward, []

    def forward(x, scale, **kwargs):  # pretend the device only fits 40x40 pixels of input at once
        sizes.append(tuple(x.shape))
        if x.shape[0] * x.shape[2] * x.shape[3] > 40 * 40:
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
        return real_forward(x, scale=scale, **kwargs)

    up.network._forward = forward
    with pytest.warns(UserWarning, match="out of memory"):
        out = up.upscale_pixels(img, 2)
    assert sizes[0][2:] == (64, 72)  # first try: the whole (pre-padded) image
    assert max(s[0] * s[2] * s[3] for s in sizes[-3:]) <= 40 * 40
    assert np.abs(out.astype(int) - expected.astype(int)).max() <= 1
    assert up.engine.tile_cap is not None  # later images start at the size that worked


def test_upscale_stages_out_of_memory_mid_stream_tiles_the_rest(model_path, img):
    up = Upscaler(model_path, device="cpu", tile_overlap=16, tile_batch=1)
    expected = {s: up.upscale(img, scale=s) for s in (2, 4, 8)}

    def stage2_fits_80x80(_module, inputs):  # its input, x2 features: a whole image's do not fit, a tile's do
        if inputs[0].shape[-2] * inputs[0].shape[-1] > 80 * 80:
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")

    handle = up.model.stages[1].register_forward_pre_hook(stage2_fits_80x80)
    try:
        with pytest.warns(UserWarning, match="out of memory"):
            stages = list(up.upscale_stages(img, scale=8))
    finally:
        handle.remove()
    assert [s for s, _ in stages] == [2, 4, 8]  # x2 came from the stream, x4 and x8 from the tiled retry
    for s, out in stages:
        assert np.abs(out.astype(int) - expected[s].astype(int)).max() <= 1


@pytest.fixture
def shipped(tmp_path, monkeypatch):
    """A weights folder with psnr and gan models of the same architecture."""
    save_generator(random_tiny(1), tmp_path / "progsr_x8_psnr.safetensors")
    save_generator(random_tiny(2), tmp_path / "progsr_x8_gan.safetensors")
    monkeypatch.setenv("PROGSR_WEIGHTS", str(tmp_path))
    return tmp_path


def test_realism_interpolates_the_weights(shipped, img):
    psnr = Upscaler("psnr", device="cpu").upscale(img, scale=2)
    gan = Upscaler("gan", device="cpu").upscale(img, scale=2)
    assert not np.array_equal(psnr, gan)
    up = Upscaler(device="cpu", realism=0.0)
    assert np.array_equal(up.upscale(img, scale=2), psnr)
    assert np.array_equal(up.upscale(img, scale=2, realism=1.0), gan)

    a, _ = load_generator(shipped / "progsr_x8_psnr.safetensors")
    b, _ = load_generator(shipped / "progsr_x8_gan.safetensors")
    mixed = ProgressiveGenerator(tiny_config())
    mixed.load_state_dict({k: 0.7 * a.state_dict()[k] + 0.3 * b.state_dict()[k] for k in a.state_dict()})
    save_generator(mixed, shipped / "mixed.safetensors")
    reference = Upscaler(shipped / "mixed.safetensors", device="cpu").upscale(img, scale=2)
    assert np.abs(up.upscale(img, scale=2, realism=0.3).astype(int) - reference).max() <= 1

    blended = up._blend.cache[(0.0, 0.3)]  # (clean, realism)
    up.set_realism(0.0)
    up.set_realism(0.3)
    assert up._blend.cache[(0.0, 0.3)] is blended  # computed once per value
    with pytest.raises(UserError, match="between 0 and 1"):
        up.set_realism(1.5)


def test_missing_shipped_weights_are_clear_errors(tmp_path, monkeypatch):
    monkeypatch.setenv("PROGSR_WEIGHTS", str(tmp_path))
    with pytest.raises(UserError, match="shipped 'psnr' model is not installed"):
        Upscaler("psnr")
    save_generator(random_tiny(1), tmp_path / "progsr_x8_psnr.safetensors")
    with pytest.raises(UserError, match="needs the shipped gan model, which is not installed"):
        Upscaler(realism=0.5)
    Upscaler(realism=0.0)  # psnr alone needs no gan weights


def test_default_architecture_tiles_are_seamless_with_the_default_overlap():
    """The shipped (default-architecture) model: tiled == whole image, with the overlap from its receptive field."""
    from progsr.paths import shipped_weights

    whole = Upscaler(shipped_weights("psnr"), device="cpu")
    assert whole.engine.receptive_radius >= 10 and whole.engine.tile_overlap == 2 * whole.engine.receptive_radius
    img = data.astronaut()[100:300, 150:330]  # 200x180: 4x4 tiles of 80 px
    tiled = Upscaler(shipped_weights("psnr"), device="cpu", tile=2 * whole.engine.tile_overlap)
    seen = []
    a = whole.upscale(img, scale=2)
    b = tiled.upscale(img, scale=2, progress=lambda done, total: seen.append(total))
    assert seen[-1] == 16
    assert np.abs(a.astype(int) - b.astype(int)).max() <= 1
    with pytest.warns(UserWarning, match="seams may show"):
        Upscaler(shipped_weights("psnr"), device="cpu", tile_overlap=8)


def test_outputs_over_the_limit_are_refused_before_any_work(model_path, img):
    up = Upscaler(model_path, device="cpu", max_output_pixels=48 * 56 * 16)
    assert up.upscale(img, scale=4).shape == (192, 224, 3)
    with pytest.raises(UserError, match="--max-output-pixels") as err:
        up.upscale(img, scale=8)
    assert "\n" not in str(err.value)
    assert Upscaler(model_path, device="cpu").max_output_pixels > 100_000_000  # the default follows the RAM


def test_float_pixels_outside_0_1_are_an_error_not_a_white_image(up, img):
    with pytest.raises(UserError, match=r"\[0, 1\].*divide by 255"):
        up.upscale(img.astype(np.float32), scale=2)
    assert up.upscale(img.astype(np.float32) / 255, scale=2).dtype == np.float32


def test_the_shipped_path_equals_the_plain_forward_pass(up, img):
    """With the default pre-pad (0) and no tiling, Upscaler gives exactly the network's clamped, rounded output."""
    from progsr.protocol import upscale_u8

    for scale in (2, 8):
        assert np.array_equal(up.upscale(img, scale=scale), upscale_u8(up.model, img, scale))


def test_the_shipped_psnr_and_gan_weights_blend():
    """The two shipped files share one architecture, so --model gan and every --realism work on them."""
    from progsr.paths import shipped_weights

    if not shipped_weights("gan").is_file():
        pytest.skip("no shipped gan weights in this checkout")
    psnr, psnr_meta = load_generator(shipped_weights("psnr"))
    gan, gan_meta = load_generator(shipped_weights("gan"))
    assert psnr.config == gan.config and gan_meta["phase"] == "gan" and psnr_meta["phase"] == "psnr"
    img = data.astronaut()[200:232, 200:240]
    outs = {r: Upscaler(device="cpu", realism=r).upscale(img, scale=4) for r in (0.0, 0.5, 1.0)}
    np.testing.assert_array_equal(outs[0.0], Upscaler("psnr", device="cpu").upscale(img, scale=4))
    np.testing.assert_array_equal(outs[1.0], Upscaler("gan", device="cpu").upscale(img, scale=4))
    assert not np.array_equal(outs[0.5], outs[0.0]) and not np.array_equal(outs[0.5], outs[1.0])
