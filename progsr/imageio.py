"""Reading and writing image files. Every file that enters or leaves progsr passes through here."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from progsr.errors import UserError

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".webp", ".bmp", ".tif", ".tiff"}


def _open(path: Path) -> Image.Image:
    if not path.exists():
        raise UserError(f"{path}: no such file")
    if path.is_dir():
        raise UserError(f"{path}: is a folder, not an image")
    if path.stat().st_size == 0:
        raise UserError(f"{path}: empty file (0 bytes)")
    try:
        img = Image.open(path)
        img.load()
    except UnidentifiedImageError:
        raise UserError(f"{path}: not an image file (or a format Pillow cannot read)") from None
    except (OSError, SyntaxError, ValueError) as err:
        raise UserError(f"{path}: corrupt or truncated image ({err})") from None
    return img


def read_array(path) -> np.ndarray:
    """Pixels of an image file as uint8 (or uint16 for 16-bit files), HxW for grey or HxWxC, EXIF orientation applied."""
    path = Path(path)
    img = ImageOps.exif_transpose(_open(path))
    if img.mode in ("I;16", "I;16B", "I;16L", "I"):
        return np.asarray(img, dtype=np.uint32).clip(0, 65535).astype(np.uint16)
    if img.mode in ("L", "RGB", "RGBA"):
        return np.asarray(img)
    if img.mode == "LA":
        return np.asarray(img.convert("RGBA"))
    has_alpha = img.mode in ("PA", "RGBa", "LA") or "transparency" in img.info
    return np.asarray(img.convert("RGBA" if has_alpha else "RGB"))
