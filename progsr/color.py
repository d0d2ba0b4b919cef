"""RGB to luma (ITU-R BT.601 studio swing) and to grey (Pillow's), the one place colour conversion happens.

kornia's rgb_to_ycbcr is the full-range JPEG variant; the SR protocol needs studio swing
(Y in [16, 235]), which is what scikit-image's rgb2ycbcr and MATLAB's rgb2ycbcr compute.
"""

from __future__ import annotations

import numpy as np

from progsr.pixels import is_tensor

_Y_WEIGHTS = (65.481, 128.553, 24.966)  # per unit of R, G, B in [0, 1]; Y on the 0-255 scale


def rgb_to_y(img):
    """Y of an RGB image in [0, 1], returned on the [0, 1] scale: (16 + 65.481 R + 128.553 G + 24.966 B) / 255.

    numpy: (..., 3) -> (...); torch: (N, 3, H, W) -> (N, 1, H, W).
    """
    if is_tensor(img):
        import torch

        w = torch.tensor(_Y_WEIGHTS, dtype=img.dtype, device=img.device).view(1, 3, 1, 1)
        return (16.0 + (img * w).sum(dim=1, keepdim=True)) / 255.0
    img = np.asarray(img, dtype=np.float64)
    return ((16.0 + img @ np.array(_Y_WEIGHTS)) / 255.0).astype(np.float32)


_GREY_WEIGHTS = (0.299, 0.587, 0.114)  # ITU-R 601 luma on full-range RGB, as Pillow's convert("L")


def rgb_to_grey(img):
    """Grey of a 3xHxW RGB image (numpy or torch) as Pillow's convert("L") makes it (full range): 1xHxW."""
    return sum(w * img[c] for c, w in enumerate(_GREY_WEIGHTS))[None]
