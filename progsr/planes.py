"""An image's pixels to the network's float planes and back: steps 1 and 4-5 of Upscaler's order of work.

Colour goes in as 1x3xHxW float32 (grey repeated to RGB), alpha bypasses the network as an HxW float plane
resized with MATLAB bicubic, and the result comes back in the input's dtype and channel layout.
"""

from __future__ import annotations

import numpy as np

from progsr.color import rgb_to_grey
from progsr.errors import UserError
from progsr.imageio import check_pixels
from progsr.pixels import from_float, to_float


def split_planes(pixels: np.ndarray, max_pixels: int | None) -> tuple[np.ndarray, np.ndarray | None]:
    """Check an image and split it: 1x3xHxW float32 colour (grey repeated), HxW float alpha or None."""
    pixels = np.asarray(pixels)
    if pixels.ndim not in (2, 3) or (pixels.ndim == 3 and not 1 <= pixels.shape[2] <= 4):
        raise UserError(f"expected an HxW or HxWxC image with C in 1..4, got shape {pixels.shape}")
    height, width = pixels.shape[:2]
    if height < 1 or width < 1:
        raise UserError(f"empty image ({width}x{height})")
    check_pixels(width, height, max_pixels, "image")
    channels = num_channels(pixels)
    values = to_float(pixels).reshape(height, width, channels)
    colour = values[:, :, :3] if channels >= 3 else np.repeat(values[:, :, :1], 3, axis=2)
    alpha = values[:, :, channels - 1] if channels in (2, 4) else None
    return np.ascontiguousarray(colour.transpose(2, 0, 1))[None], alpha


def num_channels(pixels: np.ndarray) -> int:
    """Channels of an HxW (1) or HxWxC (C) image."""
    return 1 if pixels.ndim == 2 else pixels.shape[2]


def colour_pixels(y: np.ndarray, channels: int, dtype) -> np.ndarray:
    """3xhxw float rows of the network's output -> hxwx3 (or hxwx1 grey) pixels of `dtype`."""
    if channels < 3:
        y = rgb_to_grey(np.clip(y, 0, 1))
    return from_float(y.transpose(1, 2, 0), dtype)


def alpha_pixels(alpha: np.ndarray, out_hw: tuple[int, int], dtype) -> np.ndarray:
    """The HxW float alpha resized to out_hw with MATLAB bicubic (numpy all the way), as pixels of `dtype`."""
    from progsr.resize import imresize

    return from_float(imresize(alpha, size=out_hw), dtype)


def finish_planes(y: np.ndarray, alpha: np.ndarray | None, out_hw: tuple[int, int],
                  pixels: np.ndarray) -> np.ndarray:
    """The network's 3xhxw output -> out_hw in the dtype and layout of the input `pixels` (steps 4-5)."""
    if tuple(y.shape[-2:]) != out_hw:
        y = resize_planes(y, out_hw)
    out = colour_pixels(y, num_channels(pixels), pixels.dtype)
    if alpha is not None:
        out = np.concatenate([out, alpha_pixels(alpha, out_hw, pixels.dtype)[:, :, None]], axis=2)
    return out[:, :, 0] if pixels.ndim == 2 else out


def resize_planes(planes: np.ndarray, out_hw: tuple[int, int]) -> np.ndarray:
    """MATLAB-bicubic resize of CxHxW float planes to out_hw (antialiased when shrinking).

    The numpy imresize applies only each output pixel's few taps: the torch one's dense (out x in)
    matrices grow with the square of the image side and would dominate large outputs.
    """
    from progsr.resize import imresize

    return imresize(planes.transpose(1, 2, 0), size=out_hw).reshape(out_hw[0], out_hw[1], -1).transpose(2, 0, 1)


def output_bytes(height: int, width: int, model_scale: int, out_hw: tuple[int, int], pixels: np.ndarray) -> int:
    """Host memory a result needs besides the network: the final array, its encoded copy, and float planes."""
    channels = num_channels(pixels)
    final = out_hw[0] * out_hw[1] * channels * np.dtype(pixels.dtype).itemsize
    extra = 0
    if out_hw != (height * model_scale, width * model_scale):  # the whole model output as float, then a resize
        extra += height * width * model_scale**2 * 4 * 7
    if channels in (2, 4):  # alpha is resized as one float64 plane
        extra += out_hw[0] * out_hw[1] * 8
    return 2 * final + extra  # the array and, while the file is written, its encoder's copy
