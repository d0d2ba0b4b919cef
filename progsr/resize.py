"""MATLAB-compatible bicubic imresize (antialiased when shrinking), for numpy and torch.

The SR benchmarks' LR images were made by MATLAB `imresize(HR, 1/s, 'bicubic')`, so training
and evaluation LR must come from the same maths: Keys cubic with a = -0.5, the kernel stretched
by 1/s when shrinking, one 1-D pass per dimension (the one with the smaller scale first, rows
on a tie), and for uint8 input a round-half-up and clip after each pass. OpenCV and
`torch.nn.functional.interpolate` use a = -0.75 and no antialiasing, so they do not match.

Neither library we evaluated reproduces ../shared/data/lr_matlab: bicubic-pytorch 0.1.2.1
(mirror padding only) and resize-right 0.0.2 (float only; mirror via pad_mode="symmetric") both
match the EDSR X8 files exactly, but neither rounds to uint8 after each 1-D pass, so they differ
on 10-15% of the values of every other set (Set5 X2/X4: 14.7%/11.3%). Hence this small
implementation, proved against every shared LR file in tests/test_resize.py.
"""

from __future__ import annotations

import functools
import math
from typing import TYPE_CHECKING

import numpy as np

from progsr.pixels import is_tensor

if TYPE_CHECKING:
    import torch

PADDINGS = ("symmetric", "replicate")


def _cubic(x: np.ndarray) -> np.ndarray:
    """Keys cubic kernel with a = -0.5, written term by term as MATLAB's imresize does (bit-exact weights)."""
    absx = np.abs(x)
    absx2 = absx**2
    absx3 = absx**3
    return (1.5 * absx3 - 2.5 * absx2 + 1) * (absx <= 1) + (
        -0.5 * absx3 + 2.5 * absx2 - 4 * absx + 2
    ) * ((1 < absx) & (absx <= 2))


@functools.lru_cache(maxsize=256)
def contributions(in_len: int, out_len: int, scale: float, padding: str) -> tuple[np.ndarray, np.ndarray]:
    """MATLAB's 1-D resampling taps: (weights, indices), each (out_len, taps); indices are 0-based into the input.

    Row k holds the float64 weights (summing to 1) and input positions that make output sample k.
    The arrays are cached and read-only.
    """
    if padding not in PADDINGS:
        raise ValueError(f"padding must be one of {PADDINGS}, got {padding!r}")
    kernel_width = 4.0
    if scale < 1:  # antialiasing: stretch the kernel by 1/scale
        kernel = lambda x: scale * _cubic(scale * x)  # noqa: E731
        kernel_width = kernel_width / scale
    else:
        kernel = _cubic
    x = np.arange(1, out_len + 1, dtype=np.float64)[:, None]  # 1-based output positions
    u = x / scale + 0.5 * (1 - 1 / scale)  # where each output sample sits in input coordinates
    left = np.floor(u - kernel_width / 2)
    taps = math.ceil(kernel_width) + 2
    indices = left + np.arange(taps)[None, :]  # 1-based, may fall outside [1, in_len]
    weights = kernel(u - indices)
    weights = weights / weights.sum(axis=1, keepdims=True)
    indices = indices.astype(np.int64)
    if padding == "symmetric":  # mirror: ... 2 1 | 1 2 ... n | n n-1 ...
        mirror = np.concatenate([np.arange(1, in_len + 1), np.arange(in_len, 0, -1)])
        indices = mirror[(indices - 1) % (2 * in_len)]
    else:  # replicate: clamp to the edge pixel
        indices = np.clip(indices, 1, in_len)
    keep = np.any(weights != 0, axis=0)  # drop taps that are zero for every output sample
    weights, indices = weights[:, keep], indices[:, keep] - 1
    weights.flags.writeable = False
    indices.flags.writeable = False
    return weights, indices


def _plan(in_hw, scale, size) -> tuple[tuple[int, int], tuple[float, float], list[int]]:
    """Output size, per-dimension scale and the order of the two passes, as MATLAB derives them."""
    if (scale is None) == (size is None):
        raise ValueError("give exactly one of scale= or size=")
    if size is not None:
        out_hw = (int(size[0]), int(size[1]))
        if min(out_hw) < 1:
            raise ValueError(f"size must be positive, got {size}")
        scales = (out_hw[0] / in_hw[0], out_hw[1] / in_hw[1])
    else:
        scales = (float(scale), float(scale)) if np.isscalar(scale) else (float(scale[0]), float(scale[1]))
        if min(scales) <= 0:
            raise ValueError(f"scale must be positive, got {scale}")
        out_hw = (math.ceil(scales[0] * in_hw[0]), math.ceil(scales[1] * in_hw[1]))
    order = [0, 1] if scales[0] <= scales[1] else [1, 0]  # smaller scale first; rows on a tie
    return out_hw, scales, order


def _round_saturate(x: np.ndarray, lo: float, hi: float) -> np.ndarray:
    """MATLAB's double -> integer conversion: round half away from zero (half-up for pixels), then saturate."""
    r = np.trunc(x)
    r += np.sign(x) * (np.abs(x - r) >= 0.5)  # exact, unlike floor(x + 0.5) just below a half
    return np.clip(r, lo, hi)


def _resize_axis_numpy(img: np.ndarray, axis: int, weights: np.ndarray, indices: np.ndarray) -> np.ndarray:
    """One 1-D pass on an HxWxC float64 array, summing the taps in MATLAB's order."""
    x = np.moveaxis(img, axis, 0)
    out = np.zeros((weights.shape[0],) + x.shape[1:], dtype=np.float64)
    for k in range(weights.shape[1]):
        out += weights[:, k, None, None] * x[indices[:, k]]
    return np.moveaxis(out, 0, axis)


def _imresize_numpy(img: np.ndarray, scale, size, padding: str, round_intermediate) -> np.ndarray:
    if img.ndim not in (2, 3):
        raise ValueError(f"expected an HxW or HxWxC image, got shape {img.shape}")
    integer = np.issubdtype(img.dtype, np.integer)
    if not integer and not np.issubdtype(img.dtype, np.floating):
        raise TypeError(f"unsupported image dtype {img.dtype}")
    if not integer and round_intermediate:
        raise ValueError("round_intermediate applies to integer images only")
    if integer:
        lo, hi = np.iinfo(img.dtype).min, np.iinfo(img.dtype).max
        round_intermediate = True if round_intermediate is None else round_intermediate
    out_hw, scales, order = _plan(img.shape[:2], scale, size)
    x = img.astype(np.float64)[:, :, None] if img.ndim == 2 else img.astype(np.float64)
    for axis in order:
        weights, indices = contributions(img.shape[axis], out_hw[axis], scales[axis], padding)
        x = _resize_axis_numpy(x, axis, weights, indices)
        if integer and round_intermediate:
            x = _round_saturate(x, lo, hi)
    if integer and not round_intermediate:
        x = _round_saturate(x, lo, hi)
    x = x[:, :, 0] if img.ndim == 2 else x
    return x.astype(img.dtype)


@functools.lru_cache(maxsize=64)
def _weight_matrix(in_len: int, out_len: int, scale: float, padding: str, device: torch.device, dtype: torch.dtype):
    """The 1-D resampling as a dense (out_len, in_len) matrix on the given device, for matmul."""
    import torch

    weights, indices = contributions(in_len, out_len, scale, padding)
    dense = np.zeros((out_len, in_len), dtype=np.float64)
    rows = np.broadcast_to(np.arange(out_len)[:, None], indices.shape)
    np.add.at(dense, (rows, indices), weights)  # padded taps land on the same pixel: add them
    return torch.from_numpy(dense).to(device=device, dtype=dtype)


def _imresize_torch(img: torch.Tensor, scale, size, padding: str) -> torch.Tensor:
    import torch

    if not img.is_floating_point():
        raise TypeError(f"torch input must be a float tensor, got {img.dtype}")
    if img.dim() < 2:
        raise ValueError(f"expected a (..., H, W) tensor, got shape {tuple(img.shape)}")
    in_hw = (img.shape[-2], img.shape[-1])
    out_hw, scales, order = _plan(in_hw, scale, size)
    x = img
    for axis in order:
        matrix = _weight_matrix(in_hw[axis], out_hw[axis], scales[axis], padding, img.device, img.dtype)
        x = torch.matmul(matrix, x) if axis == 0 else torch.matmul(x, matrix.t())
    return x


def imresize(img, scale=None, size=None, padding: str = "symmetric", round_intermediate=None):
    """MATLAB `imresize(img, scale, 'bicubic')`: numpy HxW(xC) uint8/float or torch (..., H, W) float.

    Give `scale` (a number, or (sy, sx); output size is ceil(in * scale)) or `size=(H, W)`.
    `padding` is "symmetric" (mirror; modern MATLAB) or "replicate" (clamp; older MATLAB, used by the
    RCAN/SelfExSR LR files). Integer input is rounded half-up and clipped after each 1-D pass, as MATLAB
    does, and keeps its dtype; `round_intermediate=False` rounds only once at the end. Float input is
    never rounded or clipped. The torch path is batched, differentiable and runs on the tensor's device.
    """
    if padding not in PADDINGS:
        raise ValueError(f"padding must be one of {PADDINGS}, got {padding!r}")
    if is_tensor(img):
        if round_intermediate:
            raise ValueError("round_intermediate applies to integer numpy images only")
        return _imresize_torch(img, scale, size, padding)
    return _imresize_numpy(np.asarray(img), scale, size, padding, round_intermediate)


def modcrop(img, s: int):
    """Crop an HxW(xC) image at the bottom/right so that H and W are multiples of s."""
    h, w = img.shape[0], img.shape[1]
    return img[: h - h % s, : w - w % s]
