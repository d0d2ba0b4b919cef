"""uint8/uint16 <-> float conversion: the one place where pixel values change scale.

Inside the library images are float32 in [0, 1]; files and the benchmark protocol are uint8 (or uint16).
numpy images are HxW or HxWxC, torch images NxCxHxW.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from progsr.errors import UserError

if TYPE_CHECKING:
    import torch

_LEVELS = {np.dtype(np.uint8): 255.0, np.dtype(np.uint16): 65535.0}


def is_tensor(x) -> bool:
    """Whether x is a torch tensor, decided without importing torch (an install may not have it)."""
    return type(x).__module__.split(".")[0] == "torch"


def to_float(pixels: np.ndarray) -> np.ndarray:
    """uint8 / uint16 / float numpy pixels as float32 in [0, 1] (float input is clipped, never rescaled)."""
    top = _LEVELS.get(pixels.dtype)
    if top is not None:
        return pixels.astype(np.float32) / top
    if np.issubdtype(pixels.dtype, np.floating):
        top = float(np.nanmax(pixels)) if pixels.size else 0.0
        if top > 1.0 + 1e-3:  # almost surely 0-255 (or 0-65535) values: clipping would make them all white
            raise UserError(f"float pixels must be in [0, 1], got values up to {top:g}; divide by 255 (or 65535), "
                            "or pass the uint8/uint16 array")
        return np.clip(pixels.astype(np.float32), 0.0, 1.0)
    raise UserError(f"unsupported pixel type {pixels.dtype} (use uint8, uint16 or float in [0, 1])")


def from_float(x, dtype) -> np.ndarray:
    """A float numpy array or torch tensor (any shape, any device) in [0, 1] as numpy `dtype`, clamped and
    rounded (half to even) for integer types."""
    dtype = np.dtype(dtype)
    if not isinstance(x, np.ndarray):  # a torch tensor
        x = x.detach().float().cpu().numpy()
    x = np.clip(x, 0.0, 1.0, dtype=np.float32)  # a new array, so it is scaled and rounded in place
    if dtype == np.uint8:
        x *= np.float32(255)
        return np.round(x, out=x).astype(np.uint8)
    if dtype == np.uint16:
        return np.round(x.astype(np.float64) * 65535).astype(np.uint16)
    return x.astype(dtype)


def u8_to_tensor(img: np.ndarray, device="cpu") -> torch.Tensor:
    """uint8 HxWx3 (or a batch NxHxWx3) numpy image -> float32 Nx3xHxW tensor in [0, 1] on `device`."""
    import torch

    batch = img if img.ndim == 4 else img[None]
    return u8_tensor_to_float(torch.from_numpy(np.ascontiguousarray(batch)).to(device).permute(0, 3, 1, 2))


def u8_tensor_to_float(x: torch.Tensor) -> torch.Tensor:
    """A uint8 torch tensor (any layout) as float32 in [0, 1], on its device."""
    return x.float().div_(255.0)


def tensor_to_u8(x: torch.Tensor) -> np.ndarray:
    """Float 1x3xHxW (or 3xHxW) tensor in [0, 1] -> uint8 HxWx3 numpy (clamped, rounded half to even)."""
    if x.ndim == 4:
        x = x[0]
    return from_float(x.permute(1, 2, 0), np.uint8)
