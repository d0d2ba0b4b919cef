"""The clean-up control's `auto`: how degraded an input looks, and the clean-up strength that follows.

Evidence, per image: the JPEG quality behind its luminance quantisation table (when the file is a JPEG),
else the 8x8 block energy of its pixels (a JPEG saved again as PNG); and its noise level (Immerkaer's
fast estimator on the image's flattest 8x8 tiles). Each maps linearly to a strength in [0, 1]; the
strength is the largest of them. The pixel ramps start above what the clean MATLAB-bicubic LR of 120
training photos (T91 + BSD200, x2/x4/x8) read, so that a clean input comes out at 0; the JPEG ramp was
set on the validation split's degradation levels (progsr.degradations.LEVELS). No benchmark set was used.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

# The IJG (libjpeg) standard luminance table, quality 50, natural order; quality q scales it (jcparam.c).
_IJG_LUMA = np.array([
    16, 11, 10, 16, 24, 40, 51, 61, 12, 12, 14, 19, 26, 58, 60, 55, 14, 13, 16, 24, 40, 57, 69, 56,
    14, 17, 22, 29, 51, 87, 80, 62, 18, 22, 37, 56, 68, 109, 103, 77, 24, 35, 55, 64, 81, 104, 113, 92,
    49, 64, 78, 87, 103, 121, 120, 101, 72, 92, 95, 98, 112, 100, 103, 99], dtype=np.float64)

# Strength ramps: (evidence at which clean-up starts, evidence at which it is full).
QUALITY_RAMP = (95.0, 65.0)  # JPEG quality: >= 95 needs none, <= 65 all (quality 80 -> 0.5; validation, see the card)
NOISE_RAMP = (11.0, 20.0)  # noise sigma, 8-bit levels: clean LR of 120 training photos read up to 10.7
BLOCK_RAMP = (1.45, 2.0)  # 8x8 block energy ratio (1 = none): clean LR of those photos read up to 1.4
MIN_SIDE = 64  # smaller images give no pixel evidence (too few 8x8 tiles to tell damage from texture)


def parse_clean(value) -> str | float:
    """A clean-up setting as given (--clean, the app, the API): "auto", or a strength in [0, 1]; else a UserError."""
    from progsr.errors import UserError

    if str(value).strip().lower() == "auto":
        return "auto"
    try:
        strength = float(value)
    except (TypeError, ValueError):
        strength = -1.0
    if not 0.0 <= strength <= 1.0:
        raise UserError(f"--clean {value}: must be 'auto' or a number from 0 to 1")
    return strength


def ijg_table(quality: int) -> np.ndarray:
    """The luminance table libjpeg (and Pillow) writes at `quality`."""
    quality = int(np.clip(quality, 1, 100))
    scale = 5000 // quality if quality < 50 else 200 - 2 * quality  # libjpeg's integer arithmetic
    return np.clip(np.floor((_IJG_LUMA * scale + 50) / 100), 1, 255)


def jpeg_quality(table) -> int:
    """The IJG quality whose luminance table is closest to `table` (64 values, any order): exact for
    libjpeg/Pillow files, the nearest equivalent for a camera's own tables."""
    observed = np.sort(np.asarray(table, dtype=np.float64).ravel())
    errors = [np.abs(np.sort(ijg_table(q)) - observed).sum() for q in range(1, 101)]
    return int(np.argmin(errors)) + 1


def noise_sigma(pixels: np.ndarray, block: int = 8, percentile: float = 10.0, min_tiles: int = 64) -> float | None:
    """Noise standard deviation in 8-bit levels of a uint8 image (the mean over its colour channels), or None
    when the image has too few usable tiles to tell noise from texture.

    Immerkaer (1996): the mean absolute response of the Laplacian-difference mask, times sqrt(pi/2)/6,
    here per `block` x `block` tile; a channel's noise is that of its flattest tiles (the `percentile`-th),
    where texture adds least. Tiles near black or white are skipped (clipping hides noise there). The low
    percentile reads about 0.85 of sigma on pure noise (tile means scatter by about 12 % at 8x8), which
    the last factor corrects.
    """
    img = pixels.astype(np.float64)
    planes = [img] if img.ndim == 2 else [img[:, :, c] for c in range(min(3, img.shape[2]))]
    mask = np.array([[1, -2, 1], [-2, 4, -2], [1, -2, 1]], dtype=np.float64)
    sigmas = []
    for plane in planes:
        response = np.abs(_filter3x3(plane, mask))
        rows, cols = plane.shape[0] // block, plane.shape[1] // block
        tiles = lambda x: x[: rows * block, : cols * block].reshape(rows, block, cols, block).mean(axis=(1, 3))  # noqa: E731
        level, energy = tiles(plane), tiles(response)
        usable = energy[(level > 16) & (level < 239)]
        if usable.size < min_tiles:
            return None
        sigmas.append(np.sqrt(np.pi / 2) / 6 * np.percentile(usable, percentile) / 0.85)
    return float(np.mean(sigmas))


def blockiness(img: np.ndarray) -> float:
    """8x8 JPEG block energy: the mean absolute step across block boundaries over the mean step inside blocks.

    On the Y channel (raw levels for grey). About 1 for an image without a block grid; JPEG at low quality
    raises it. Steps are measured between horizontal and vertical neighbours, boundaries at multiples of 8.
    """
    from progsr.color import rgb_to_y

    y = rgb_to_y(img.astype(np.float64) / 255) if img.ndim == 3 else img.astype(np.float64) / 255
    ratios = []
    for steps in (np.abs(np.diff(y, axis=1)), np.abs(np.diff(y, axis=0)).T):
        position = np.arange(steps.shape[1]) % 8
        boundary, inside = steps[:, position == 7].mean(), steps[:, (position != 7)].mean()
        ratios.append(boundary / max(inside, 1e-6))
    return float(np.mean(ratios))


def _filter3x3(plane: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """A symmetric 3x3 mask over a plane, borders mirrored as scipy.ndimage's mode="reflect" does (d c b a | a b)."""
    padded = np.pad(plane, 1, mode="symmetric")
    h, w = plane.shape
    return sum(mask[i, j] * padded[i: i + h, j: j + w] for i in range(3) for j in range(3))


def _ramp(value: float, ramp: tuple[float, float]) -> float:
    start, full = ramp
    return float(np.clip((value - start) / (full - start), 0.0, 1.0))


@dataclass(frozen=True)
class CleanupEstimate:
    """What `auto` saw in one image and the strength it chose."""

    strength: float
    quality: int | None  # JPEG quality from the file's table, None when the file is no JPEG
    noise: float | None  # noise sigma, 8-bit levels (None: too small an image to tell noise from texture)
    blockiness: float  # 8x8 block energy ratio of the pixels
    note: str = ""  # why the strength was overridden (e.g. the real-world model is not installed)

    def describe(self) -> str:
        """One line for the CLI and the app: what was detected and the chosen strength."""
        seen = [f"JPEG quality {self.quality}" if self.quality is not None else f"blockiness {self.blockiness:.2f}",
                f"noise {self.noise:.1f}" if self.noise is not None else "noise unknown"]
        return f"clean-up auto {self.strength:g} ({', '.join(seen + ([self.note] if self.note else []))})"


def estimate(pixels: np.ndarray, quantization=None) -> CleanupEstimate:
    """The clean-up strength for an image: pixels as read (uint8/uint16, any layout), and the luminance
    quantisation table when the file was a JPEG."""
    colour = pixels if pixels.ndim == 2 else pixels[:, :, : 3 if pixels.shape[2] >= 3 else 1]
    if colour.ndim == 3 and colour.shape[2] == 1:
        colour = colour[:, :, 0]
    if colour.dtype == np.uint8:
        u8 = colour
    elif colour.dtype == np.uint16:
        u8 = np.round(colour / 257.0).astype(np.uint8)
    else:  # float in [0, 1] (the Python API)
        u8 = np.round(np.clip(colour, 0, 1) * 255).astype(np.uint8)
    quality = jpeg_quality(quantization) if quantization is not None else None
    noise = noise_sigma(u8)
    blocks = blockiness(u8) if min(u8.shape[:2]) >= MIN_SIDE else 1.0
    strengths = [_ramp(noise, NOISE_RAMP) if noise is not None else 0.0]
    if quality is not None:
        strengths.append(_ramp(-quality, (-QUALITY_RAMP[0], -QUALITY_RAMP[1])))
    else:
        strengths.append(_ramp(blocks, BLOCK_RAMP))
    return CleanupEstimate(round(max(strengths), 2), quality, noise, blocks)
