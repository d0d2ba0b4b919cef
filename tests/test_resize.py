"""progsr.resize: MATLAB bicubic imresize, proved against MATLAB's own LR files and hand-derived weights."""

import numpy as np
import pytest
import torch

from progsr.imageio import read_array
from progsr.resize import contributions, imresize, modcrop

# Keys cubic (a = -0.5) evaluated by hand at the tap distances, as integer numerators.
# Scale 1/2: taps at |d| = 0.5, 1.5, 2.5, 3.5 input px, kernel 0.5 * k(d / 2) -> k(1/4), k(3/4), k(5/4), k(7/4)
#   = 111/128, 29/128, -9/128, -3/128.
HALF = np.array([-3, -9, 29, 111, 111, 29, -9, -3]) / 256
# Scale 1/4: |d| = 0.5 .. 7.5, kernel 0.25 * k(d / 4) -> k(1/8 .. 15/8) = 987, 745, 399, 93, -49, -75, -45, -7 (/1024).
QUARTER = np.array([-7, -45, -75, -49, 93, 399, 745, 987, 987, 745, 399, 93, -49, -75, -45, -7]) / 4096
# Scale 2: output samples sit at +-0.25 and +-0.75 input px from the input pixel -> k(1/4), k(3/4), k(5/4), k(7/4) / 128,
# so an impulse spreads over 8 output pixels.
DOUBLE = np.array([-3, -9, 29, 111, 111, 29, -9, -3]) / 128


def round_half_up(x):
    return np.clip(np.floor(x + 0.5), 0, 255)


# ---------------------------------------------------------------- MATLAB's own files (../shared)

# (LR folder, HR folder, scale, imresize options). RCAN/SelfExSR files: old MATLAB (clamped borders);
# EDSR X2-X4: modern MATLAB (mirrored borders); EDSR X8: mirrored, resized in double, rounded once.
LR_SETS = [
    (f"{ds}_LR_bicubic", ds, s, {"padding": "replicate"}) for ds in ("Set5", "Set14", "BSD100") for s in (2, 3, 4)
] + [("Set5_LR_bicubic_EDSR", "Set5", s, {"padding": "symmetric"}) for s in (2, 3, 4)] + [
    ("Set5_LR_bicubic_EDSR", "Set5", 8, {"padding": "symmetric", "round_intermediate": False})
]


@pytest.mark.shared
@pytest.mark.parametrize("lr_set,hr_set,scale,options", LR_SETS, ids=[f"{a}-X{c}" for a, _, c, _ in LR_SETS])
def test_reproduces_matlab_lr_files_bit_exactly(shared, lr_set, hr_set, scale, options):
    data = shared / "data"
    hr_files = sorted((data / "test" / hr_set).glob("*.png"))
    assert hr_files, f"no HR images in {data / 'test' / hr_set}"
    mismatches = {}
    for hr_path in hr_files:
        lr_path = data / "lr_matlab" / lr_set / f"X{scale}" / f"{hr_path.stem}x{scale}.png"
        expected = read_array(lr_path)  # Set14's bridge is grey (HxW) in both HR and LR files
        got = imresize(modcrop(read_array(hr_path), scale), 1 / scale, **options)
        assert got.dtype == np.uint8 and got.shape == expected.shape, hr_path.name
        n_bad = int(np.count_nonzero(got != expected))
        if n_bad:
            mismatches[hr_path.name] = n_bad
    assert mismatches == {}, f"pixel values differing from MATLAB per image: {mismatches}"


# ---------------------------------------------------------------- weights and sizes


def impulse_response(n, p, scale, rows=6):
    """imresize of a float image that is constant down the columns and a unit impulse at column p."""
    img = np.zeros((rows, n))
    img[:, p] = 1.0
    return imresize(img, scale)


def test_antialiased_weights_for_scale_half():
    out = impulse_response(64, 32, 0.5)
    assert out.shape == (3, 32)
    # output i is made of inputs 2i-3 .. 2i+4, so input 32 feeds outputs 14..17 at taps 7, 5, 3, 1
    expected = np.zeros(32)
    expected[14:18] = HALF[[7, 5, 3, 1]]
    np.testing.assert_allclose(out, np.broadcast_to(expected, out.shape), atol=1e-15)
    weights, indices = contributions(64, 32, 0.5, "symmetric")
    np.testing.assert_allclose(weights[10], HALF, atol=1e-15)
    np.testing.assert_array_equal(indices[10], np.arange(17, 25))


def test_antialiased_weights_for_scale_quarter():
    weights, indices = contributions(64, 16, 0.25, "replicate")
    assert weights.shape == (16, 16)
    np.testing.assert_allclose(weights[5], QUARTER, atol=1e-15)
    np.testing.assert_array_equal(indices[5], np.arange(4 * 5 - 6, 4 * 5 + 10))
    out = impulse_response(64, 30, 0.25, rows=8)  # input 30 feeds outputs 6..9 (taps 12, 8, 4, 0)
    expected = np.zeros(16)
    expected[6:10] = QUARTER[[12, 8, 4, 0]]
    np.testing.assert_allclose(out, np.broadcast_to(expected, out.shape), atol=1e-15)


def test_upscale_weights_for_scale_two():
    out = impulse_response(20, 10, 2)
    assert out.shape == (12, 40)
    expected = np.zeros(40)
    expected[17:25] = DOUBLE
    np.testing.assert_allclose(out, np.broadcast_to(expected, out.shape), atol=1e-15)


@pytest.mark.parametrize(
    "shape,kwargs,out_hw",
    [
        ((10, 7), {"scale": 1 / 3}, (4, 3)),
        ((5, 5, 3), {"scale": 0.5}, (3, 3)),
        ((3, 3), {"scale": 2.5}, (8, 8)),
        ((12, 12), {"scale": (0.5, 2)}, (6, 24)),
        ((16, 20, 3), {"size": (5, 33)}, (5, 33)),
    ],
)
def test_output_size_is_ceil_of_input_times_scale(shape, kwargs, out_hw):
    out = imresize(np.zeros(shape, np.float32), **kwargs)
    assert out.shape == out_hw + shape[2:]
    assert out.dtype == np.float32


@pytest.mark.parametrize("padding", ["symmetric", "replicate"])
@pytest.mark.parametrize("dtype,value", [(np.uint8, 173), (np.uint16, 40000), (np.float32, 0.3)])
@pytest.mark.parametrize("kwargs", [{"scale": 1 / 3}, {"scale": 1 / 4}, {"scale": 2}, {"size": (7, 29)}])
def test_constant_image_stays_constant(padding, dtype, value, kwargs):
    img = np.full((23, 17, 3), value, dtype=dtype)
    out = imresize(img, padding=padding, **kwargs)
    assert out.dtype == dtype
    np.testing.assert_allclose(out.astype(np.float64), value, rtol=1e-6)


def test_uint8_rounds_half_up_after_each_pass():
    # An impulse of 64 on a uint8 image, upscaled x2: 64 * DOUBLE gives exact halves (55.5, 14.5, -4.5, -1.5).
    img = np.zeros((20, 20), np.uint8)
    img[10, 10] = 64
    rows_pass = round_half_up(64 * DOUBLE)  # [0, 0, 15, 56, 56, 15, 0, 0]: 14.5 -> 15, not banker's 14
    expected = np.zeros((40, 40))
    expected[17:25, 17:25] = round_half_up(rows_pass[:, None] * DOUBLE[None, :])
    np.testing.assert_array_equal(imresize(img, 2), expected)

    once = np.zeros((40, 40))
    once[17:25, 17:25] = round_half_up(64 * DOUBLE[:, None] * DOUBLE[None, :])
    np.testing.assert_array_equal(imresize(img, 2, round_intermediate=False), once)
    assert not np.array_equal(expected, once)  # the two modes really differ here


def test_uint8_pass_order_rows_first_then_smaller_scale_first(rng):
    # A scale of 1 along one axis is the identity, so one-axis calls give each 1-D pass on its own.
    img = rng.integers(0, 256, (40, 36, 3), dtype=np.uint8)
    rows_then_cols = imresize(imresize(img, (0.5, 1)), (1, 0.5))
    cols_then_rows = imresize(imresize(img, (1, 0.5)), (0.5, 1))
    assert not np.array_equal(rows_then_cols, cols_then_rows)  # per-pass rounding makes order matter
    np.testing.assert_array_equal(imresize(img, 0.5), rows_then_cols)  # equal scales: rows first, as MATLAB
    # unequal scales: MATLAB resizes along the smaller scale first, here the columns
    np.testing.assert_array_equal(imresize(img, (0.5, 0.25)), imresize(imresize(img, (1, 0.25)), (0.5, 1)))
    assert not np.array_equal(imresize(img, (0.5, 0.25)), imresize(imresize(img, (0.5, 1)), (1, 0.25)))


def test_uint8_saturates_instead_of_wrapping():
    img = np.zeros((16, 16), np.uint8)
    img[:, 8:] = 255  # a hard edge: bicubic overshoots below 0 and above 255
    out = imresize(img, 2)
    floats = imresize(img.astype(np.float64), 2)
    assert floats.min() < -1 and floats.max() > 256
    assert out.min() == 0 and out.max() == 255
    np.testing.assert_array_equal(out[:, :14], 0)


@pytest.mark.parametrize("scale", [0.5, 0.25, 1 / 3, 2])
def test_replicate_and_symmetric_differ_only_at_the_border(rng, scale):
    img = rng.random((48, 48))
    diff = np.abs(imresize(img, scale, padding="replicate") - imresize(img, scale, padding="symmetric")) > 1e-12
    n = diff.shape[0]
    margin = 2 if scale < 1 else 3  # the kernel reaches 2 output px past the edge when shrinking, 3 when x2
    inner = np.zeros_like(diff)
    inner[margin : n - margin, margin : n - margin] = True
    assert diff.any() and not (diff & inner).any()
    assert diff[0].any() and diff[-1].any() and diff[:, 0].any() and diff[:, -1].any()


def test_modcrop():
    img = np.arange(10 * 7 * 3).reshape(10, 7, 3)
    assert modcrop(img, 3).shape == (9, 6, 3)
    assert modcrop(img[..., 0], 2).shape == (10, 6)
    np.testing.assert_array_equal(modcrop(img, 3), img[:9, :6])


def test_bad_arguments_raise():
    img = np.zeros((8, 8))
    with pytest.raises(ValueError):
        imresize(img, 0.5, size=(4, 4))
    with pytest.raises(ValueError):
        imresize(img)
    with pytest.raises(ValueError):
        imresize(img, 0.5, padding="reflect")
    with pytest.raises(ValueError):
        imresize(img, 0.5, round_intermediate=True)  # float images are never rounded
    with pytest.raises(TypeError):
        imresize(torch.zeros(8, 8, dtype=torch.uint8), 0.5)


# ---------------------------------------------------------------- torch path


@pytest.mark.parametrize("padding", ["symmetric", "replicate"])
@pytest.mark.parametrize("kwargs", [{"scale": 0.5}, {"scale": 1 / 3}, {"scale": 0.25}, {"scale": 3}, {"size": (11, 30)}])
def test_torch_matches_numpy_float_path(rng, padding, kwargs):
    img = rng.random((2, 3, 25, 19))
    got = imresize(torch.from_numpy(img), padding=padding, **kwargs)
    for n in range(2):
        expected = imresize(img[n].transpose(1, 2, 0), padding=padding, **kwargs).transpose(2, 0, 1)
        np.testing.assert_allclose(got[n].numpy(), expected, rtol=0, atol=1e-12)


def test_torch_batch_shapes_and_float32(rng):
    img = rng.random((2, 2, 3, 40, 36)).astype(np.float32)
    batch = imresize(torch.from_numpy(img), 0.25)
    assert batch.shape == (2, 2, 3, 10, 9) and batch.dtype == torch.float32
    single = imresize(torch.from_numpy(img[1, 0, 2]), 0.25)  # a bare HxW tensor
    assert single.shape == (10, 9)
    np.testing.assert_allclose(single.numpy(), batch[1, 0, 2].numpy(), atol=1e-6)
    expected = imresize(img[1, 0].transpose(1, 2, 0), 0.25).transpose(2, 0, 1)
    np.testing.assert_allclose(batch[1, 0].numpy(), expected, atol=1e-5)


def test_torch_gradients_flow():
    x = torch.rand(2, 1, 8, 6, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda t: imresize(t, 0.5), (x,))
    assert torch.autograd.gradcheck(lambda t: imresize(t, size=(5, 13), padding="replicate"), (x,))
    y = torch.rand(4, 3, 32, 32, requires_grad=True)
    imresize(y, 0.25).sum().backward()
    # downscaling by 4 with weights summing to 1: each input pixel gets about 1/16 of the total gradient
    assert torch.isfinite(y.grad).all()
    assert abs(y.grad[:, :, 8:24, 8:24].mean().item() - 1 / 16) < 1e-6
