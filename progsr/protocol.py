"""The standard SR benchmark protocol's shared pieces: HR reading, LR making and a generator's uint8 output.

The benchmark (progsr.evaluation), training's validation and the real-world levels all import them from
here, so a benchmark number and a validation number are made the same way.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from progsr.errors import UserError
from progsr.imageio import read_array
from progsr.resize import imresize, modcrop

PROTOCOL = (
    "modcrop HR to a multiple of s; LR = MATLAB imresize(HR, 1/s, 'bicubic') of the uint8 HR "
    "(antialiased, uint8 rounding after each pass); SR clamped and rounded to uint8; "
    "PSNR/SSIM on Y = 16 + 65.481 R + 128.553 G + 24.966 B (0-255 scale; grey images on raw grey levels); "
    "s px shaved at every border; PSNR = 10 log10(255^2/MSE) per image, then averaged; "
    "SSIM: 11x11 Gaussian window, sigma 1.5, K1 0.01, K2 0.03, L 255; LPIPS on RGB, same shave"
)


def read_hr(path: Path) -> np.ndarray:
    """An HR ground-truth image as uint8 HxWx3 or HxW (grey); alpha is dropped."""
    img = read_array(path)
    if img.dtype != np.uint8:
        raise UserError(f"{path}: {img.dtype} image; the benchmark protocol is defined on 8-bit images")
    if img.ndim == 3 and img.shape[2] == 4:
        img = img[..., :3]  # ground truth has no use for alpha
    return np.ascontiguousarray(img)


def make_lr(hr: np.ndarray, scale: int, padding: str = "symmetric") -> tuple[np.ndarray, np.ndarray]:
    """(HR modcropped to a multiple of scale, its MATLAB-bicubic uint8 LR): the protocol's test pair."""
    hr = modcrop(hr, scale)
    return hr, imresize(hr, scale=1 / scale, padding=padding)


def upscale_u8(model, lr: np.ndarray, scale: int, alpha: float = 1.0, device="cpu") -> np.ndarray:
    """A generator's uint8 output for a uint8 LR: fp32, clamp, round; grey runs as RGB and comes back through
    color.rgb_to_grey, as it does through Upscaler."""
    import torch

    from progsr.color import rgb_to_grey
    from progsr.pixels import tensor_to_u8, u8_to_tensor

    rgb = lr if lr.ndim == 3 else np.repeat(lr[..., None], 3, axis=2)
    with torch.no_grad():
        y = model(u8_to_tensor(rgb, device), scale=scale, alpha=alpha).float().clamp(0, 1)
    if lr.ndim == 2:
        return tensor_to_u8(rgb_to_grey(y[0])[None])[..., 0]
    return tensor_to_u8(y)
