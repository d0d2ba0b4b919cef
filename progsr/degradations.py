"""Real-world degradations: the random training pipeline (Real-ESRGAN's second order) and the fixed benchmark levels.

Training: `degrade(hr, scale, cfg, seed, index)` turns one float HR crop (3xHxW, [0, 1], any device)
into its degraded LR (3x(H/s)x(W/s)), a pure function of (seed, index) like the crops themselves.
Its ranges are those of Real-ESRGAN's published x4plus options (Wang et al., "Real-ESRGAN: Training
Real-World Blind Super-Resolution with Pure Synthetic Data", ICCVW 2021; options/train_realesrgan_x4plus.yml):
two rounds of blur -> random resize -> Gaussian or Poisson noise -> JPEG, then the final resize to the
LR size with a sinc filter and a last JPEG, in random order. `order="shuffled"` draws the two rounds'
operations in a random order instead, as BSRGAN does (Zhang et al., ICCV 2021).

Benchmark: `degrade_level(hr_u8, scale, level, name)` applies one of the fixed, documented LEVELS to a
uint8 HR (Gaussian blur, MATLAB-bicubic downscale, colour noise seeded from the file name, Pillow JPEG 4:2:0).
"""

from __future__ import annotations

import io
import math
import zlib
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from progsr.config import check_types, replace_checked
from progsr.errors import UserError

KERNELS = ("iso", "aniso", "generalized_iso", "generalized_aniso", "plateau_iso", "plateau_aniso")
RESIZE_MODES = ("area", "bilinear", "bicubic")
ORDERS = ("second_order", "shuffled")


@dataclass(frozen=True)
class DegradationConfig:
    """Ranges of the random training degradations; the defaults are Real-ESRGAN's published x4plus options."""

    order: str = "second_order"  # "second_order" (Real-ESRGAN) or "shuffled" (BSRGAN-like random order)
    kernel_size: tuple[int, ...] = (7, 21)  # odd blur kernel sizes drawn from this range
    kernel_prob: tuple[float, ...] = (0.45, 0.25, 0.12, 0.03, 0.12, 0.03)  # per KERNELS entry
    sinc_prob: tuple[float, ...] = (0.1, 0.1)  # first / second round: a sinc kernel instead of a blur
    blur_sigma: tuple[float, ...] = (0.2, 3.0)  # first round (HR pixels)
    blur_sigma2: tuple[float, ...] = (0.2, 1.5)
    betag_range: tuple[float, ...] = (0.5, 4.0)  # generalized Gaussian shape
    betap_range: tuple[float, ...] = (1.0, 2.0)  # plateau shape
    second_blur_prob: float = 0.8
    resize_prob: tuple[float, ...] = (0.2, 0.7, 0.1)  # up, down, keep (first round)
    resize_range: tuple[float, ...] = (0.15, 1.5)
    resize_prob2: tuple[float, ...] = (0.3, 0.4, 0.3)
    resize_range2: tuple[float, ...] = (0.3, 1.2)
    gaussian_noise_prob: tuple[float, ...] = (0.5, 0.5)  # else Poisson
    noise_range: tuple[float, ...] = (1.0, 30.0)  # Gaussian sigma in 8-bit levels, first round
    noise_range2: tuple[float, ...] = (1.0, 25.0)
    poisson_scale_range: tuple[float, ...] = (0.05, 3.0)
    poisson_scale_range2: tuple[float, ...] = (0.05, 2.5)
    gray_noise_prob: tuple[float, ...] = (0.4, 0.4)
    jpeg_range: tuple[float, ...] = (30.0, 95.0)
    jpeg_range2: tuple[float, ...] = (30.0, 95.0)
    final_sinc_prob: float = 0.8
    # Real-ESRGAN resizes without antialiasing, so a bilinear or bicubic 4x downscale samples the image
    # sparsely (aliased, and noise passes almost at full strength). True antialiases them as cameras,
    # browsers and MATLAB's imresize do: torch's antialiased bicubic is then progsr.resize.imresize (to 1e-5,
    # but for the 2 border pixels).
    antialias: bool = False

    def __post_init__(self):
        check_types(self, "degradation")

    @classmethod
    def from_dict(cls, data: dict) -> DegradationConfig:
        """A checked config from a mapping of fields (the training config's `degradation`)."""
        cfg = replace_checked(cls(), data, "degradation")
        check_degradation(cfg)
        return cfg


def check_degradation(cfg: DegradationConfig) -> None:
    """A one-line UserError for ranges that cannot be sampled."""
    if cfg.order not in ORDERS:
        raise UserError(f"degradation: order must be one of {', '.join(ORDERS)}, got {cfg.order!r}")
    pairs = ("kernel_size", "sinc_prob", "blur_sigma", "blur_sigma2", "betag_range", "betap_range", "resize_range",
             "resize_range2", "gaussian_noise_prob", "noise_range", "noise_range2", "poisson_scale_range",
             "poisson_scale_range2", "gray_noise_prob", "jpeg_range", "jpeg_range2")
    for key in pairs:
        low, high = (getattr(cfg, key) + (None, None))[:2]
        if len(getattr(cfg, key)) != 2 or low < 0 or high < low:
            raise UserError(f"degradation: {key} takes two numbers, low <= high, got {list(getattr(cfg, key))}")
    if cfg.kernel_size[0] < 3 or cfg.kernel_size[1] % 2 == 0:
        raise UserError(f"degradation: kernel_size must lie in [3, odd max], got {list(cfg.kernel_size)}")
    if not (1 <= cfg.jpeg_range[0] and cfg.jpeg_range[1] <= 100 and 1 <= cfg.jpeg_range2[0] and cfg.jpeg_range2[1] <= 100):
        raise UserError("degradation: jpeg ranges must lie in [1, 100]")
    for key, n in (("kernel_prob", len(KERNELS)), ("resize_prob", 3), ("resize_prob2", 3)):
        probs = getattr(cfg, key)
        if len(probs) != n or min(probs) < 0 or not math.isclose(sum(probs), 1.0, abs_tol=1e-6):
            raise UserError(f"degradation: {key} takes {n} probabilities summing to 1, got {list(probs)}")


# ------------------------------------------------------------------------------------------ kernels


def blur_kernel(kind: str, size: int, sigma_x: float, sigma_y: float, theta: float, beta: float = 1.0) -> torch.Tensor:
    """A normalised size x size kernel of one of KERNELS, rotated by theta (the iso kinds ignore sigma_y and theta).

    Hand-written: kornia's Gaussian kernels are axis-aligned, with no rotation, generalized or plateau shapes.
    Gaussian exp(-Q/2), generalized exp(-Q^beta / 2), plateau 1 / (1 + Q^beta), Q = x' inv(Sigma) x.
    """
    if kind.endswith("iso") and not kind.endswith("aniso"):
        sigma_y, theta = sigma_x, 0.0
    rotation = torch.tensor([[math.cos(theta), -math.sin(theta)], [math.sin(theta), math.cos(theta)]],
                            dtype=torch.float64)
    cov = rotation @ torch.diag(torch.tensor([sigma_x**2, sigma_y**2], dtype=torch.float64)) @ rotation.T
    r = torch.arange(size, dtype=torch.float64) - size // 2
    grid = torch.stack(torch.meshgrid(r, r, indexing="xy"), dim=-1)  # (size, size, 2) as (x, y)
    q = ((grid @ torch.linalg.inv(cov)) * grid).sum(-1)
    if kind.startswith("generalized"):
        k = torch.exp(-0.5 * q.pow(beta))
    elif kind.startswith("plateau"):
        k = 1.0 / (1.0 + q.pow(beta))
    else:
        k = torch.exp(-0.5 * q)
    return (k / k.sum()).float()


def sinc_kernel(size: int, cutoff: float) -> torch.Tensor:
    """A circular low-pass (2-D sinc) kernel with cutoff `cutoff` in radians per pixel, normalised to sum 1."""
    r = torch.arange(size, dtype=torch.float64) - size // 2
    radius = torch.hypot(r[None, :], r[:, None])
    safe = torch.where(radius == 0, torch.ones_like(radius), radius)
    k = cutoff * torch.special.bessel_j1(cutoff * safe) / (2 * math.pi * safe)
    k = torch.where(radius == 0, torch.full_like(k, cutoff**2 / (4 * math.pi)), k)
    return (k / k.sum()).float()


def filter_image(img: torch.Tensor, kernel: torch.Tensor) -> torch.Tensor:
    """img (3xHxW) filtered by a 2-D kernel with reflected borders (kornia.filters.filter2d)."""
    import kornia.filters

    pad = kernel.shape[-1] // 2
    if pad >= min(img.shape[-2:]):  # reflect padding needs the image to be larger than the pad
        img = F.pad(img[None], (pad, pad, pad, pad), mode="replicate")[0]
        return kornia.filters.filter2d(img[None], kernel[None].to(img), border_type="reflect")[0, :, pad:-pad, pad:-pad]
    return kornia.filters.filter2d(img[None], kernel[None].to(img), border_type="reflect")[0]


# ------------------------------------------------------------------------------------------ operations


def _odd_size(rng: np.random.Generator, cfg: DegradationConfig) -> int:
    return 2 * int(rng.integers(cfg.kernel_size[0] // 2, cfg.kernel_size[1] // 2 + 1)) + 1


def random_blur(img: torch.Tensor, rng: np.random.Generator, cfg: DegradationConfig, second: bool) -> torch.Tensor:
    """One round's blur: a sinc kernel with probability sinc_prob, else a kernel of KERNELS drawn by kernel_prob."""
    size = _odd_size(rng, cfg)
    if rng.random() < cfg.sinc_prob[int(second)]:
        low = math.pi / 3 if size < 13 else math.pi / 5
        return filter_image(img, sinc_kernel(size, rng.uniform(low, math.pi)))
    kind = KERNELS[int(rng.choice(len(KERNELS), p=cfg.kernel_prob))]
    sigma = cfg.blur_sigma2 if second else cfg.blur_sigma
    sx, sy, theta = rng.uniform(*sigma), rng.uniform(*sigma), rng.uniform(-math.pi, math.pi)
    beta = rng.uniform(*cfg.betag_range) if kind.startswith("generalized") else rng.uniform(*cfg.betap_range)
    return filter_image(img, blur_kernel(kind, size, sx, sy, theta, beta))


def resize(img: torch.Tensor, size: tuple[int, int], mode: str, antialias: bool = False) -> torch.Tensor:
    """img (3xHxW) resized to size (h, w) with torch's area / bilinear / bicubic (antialiased or, as Real-ESRGAN
    does, not)."""
    size = (max(1, size[0]), max(1, size[1]))
    extra = {} if mode == "area" else {"align_corners": False, "antialias": antialias}
    return F.interpolate(img[None], size=size, mode=mode, **extra)[0]


def random_resize(img: torch.Tensor, rng: np.random.Generator, probs, span, base: tuple[int, int],
                  antialias: bool = False) -> torch.Tensor:
    """Resize to base * factor: factor up in (1, span[1]), down in (span[0], 1) or kept, by `probs`."""
    kind = int(rng.choice(3, p=probs))
    factor = rng.uniform(1, span[1]) if kind == 0 else rng.uniform(span[0], 1) if kind == 1 else 1.0
    mode = RESIZE_MODES[int(rng.integers(0, 3))]
    return resize(img, (int(base[0] * factor), int(base[1] * factor)), mode, antialias)


def gaussian_noise(img: torch.Tensor, sigma: float, gray: bool, gen: torch.Generator) -> torch.Tensor:
    """img plus Gaussian noise of std `sigma` (on the [0, 1] scale), the same in every channel when `gray`."""
    shape = (1, *img.shape[1:]) if gray else img.shape
    noise = torch.randn(shape, generator=gen) * sigma
    return img + noise.to(img)


def poisson_noise(img: torch.Tensor, scale: float, gray: bool, gen: torch.Generator) -> torch.Tensor:
    """img plus `scale` times Poisson (shot) noise at the image's own number of grey levels (Real-ESRGAN's)."""
    from progsr.color import rgb_to_y

    base = rgb_to_y(img[None])[0] if gray else img
    base = base.detach().float().cpu().clamp(0, 1)
    levels = 2 ** math.ceil(math.log2(max(2, len(torch.unique((base * 255).round())))))
    noise = torch.poisson(base * levels, generator=gen) / levels - base
    return img + (noise * scale).to(img)


def random_noise(img, rng: np.random.Generator, gen: torch.Generator, cfg: DegradationConfig, second: bool):
    """One round's noise: Gaussian with probability gaussian_noise_prob, else Poisson; grey with gray_noise_prob."""
    gray = rng.random() < cfg.gray_noise_prob[int(second)]
    if rng.random() < cfg.gaussian_noise_prob[int(second)]:
        sigma = rng.uniform(*(cfg.noise_range2 if second else cfg.noise_range)) / 255
        return gaussian_noise(img, sigma, gray, gen)
    return poisson_noise(img, rng.uniform(*(cfg.poisson_scale_range2 if second else cfg.poisson_scale_range)), gray, gen)


def jpeg(img: torch.Tensor, quality: int) -> torch.Tensor:
    """img (3xHxW, [0, 1]) through a real JPEG encode and decode at `quality` (torchvision's libjpeg, 4:2:0)."""
    from torchvision.io import decode_jpeg, encode_jpeg

    u8 = img.detach().clamp(0, 1).mul(255).round().to(torch.uint8).cpu()
    return (decode_jpeg(encode_jpeg(u8, quality=int(quality))).float() / 255).to(img)


def quantise(img: torch.Tensor) -> torch.Tensor:
    """Clip to [0, 1] and round to 8-bit levels, as an image file would."""
    return img.clamp(0, 1).mul(255).round().div(255)


# ------------------------------------------------------------------------------------------ the pipeline


def _round_ops(rng, gen, cfg: DegradationConfig, second: bool, base: tuple[int, int]) -> list:
    """The four operations of one round, as closures, in Real-ESRGAN's order; the round's random resize is
    relative to `base` (the HR size in the first round, the LR size in the second)."""
    probs, span = (cfg.resize_prob2, cfg.resize_range2) if second else (cfg.resize_prob, cfg.resize_range)
    blur = not second or rng.random() < cfg.second_blur_prob
    quality = rng.uniform(*(cfg.jpeg_range2 if second else cfg.jpeg_range))
    return [
        (lambda x: random_blur(x, rng, cfg, second)) if blur else (lambda x: x),
        lambda x: random_resize(x, rng, probs, span, base, cfg.antialias),
        lambda x: random_noise(x, rng, gen, cfg, second).clamp(0, 1),
        lambda x: jpeg(x, round(quality)),
    ]


def degrade(hr: torch.Tensor, scale: int, cfg: DegradationConfig, seed: int, index: int) -> torch.Tensor:
    """The degraded LR (3x(H/scale)x(W/scale), 8-bit levels in [0, 1]) of one HR crop; a pure function of (seed, index)."""
    rng = np.random.default_rng([seed, index, 0x5EED])  # a stream apart from the crop's own (seed, index)
    gen = torch.Generator().manual_seed(int(rng.integers(0, 2**62)))
    hr_size = tuple(hr.shape[-2:])
    lr_size = (hr_size[0] // scale, hr_size[1] // scale)
    ops = _round_ops(rng, gen, cfg, False, hr_size) + _round_ops(rng, gen, cfg, True, lr_size)
    if cfg.order == "shuffled":
        ops = [ops[i] for i in rng.permutation(len(ops))]
    x = hr
    for op in ops:
        x = op(x)
    final_mode = RESIZE_MODES[int(rng.integers(0, 3))]
    size = _odd_size(rng, cfg)
    sinc = sinc_kernel(size, rng.uniform(math.pi / 3, math.pi)) if rng.random() < cfg.final_sinc_prob else None
    quality = round(rng.uniform(*cfg.jpeg_range2))

    def resize_and_sinc(x):
        x = resize(x, lr_size, final_mode, cfg.antialias)
        return filter_image(x, sinc) if sinc is not None else x

    if rng.random() < 0.5:
        x = jpeg(resize_and_sinc(x), quality)
    else:
        x = resize_and_sinc(jpeg(x, quality))
    return quantise(x)


def degrade_batch(hr: torch.Tensor, scale: int, cfg: DegradationConfig, seed: int, indices) -> torch.Tensor:
    """degrade() of each HR crop of an NxCxHxW batch, sample n keyed by indices[n]."""
    return torch.stack([degrade(x, scale, cfg, seed, int(i)) for x, i in zip(hr, indices)])


# ------------------------------------------------------------------------------------------ benchmark levels


@dataclass(frozen=True)
class Level:
    """A fixed degradation: HR blur sigma (HR px), LR noise sigma (8-bit levels), LR JPEG quality (0 = none)."""

    blur: float
    noise: float
    quality: int


LEVELS = {
    "clean": Level(0.0, 0.0, 0),
    "jpeg": Level(0.0, 0.0, 40),
    "light": Level(0.6, 3.0, 80),
    "medium": Level(1.2, 8.0, 50),
    "heavy": Level(1.8, 15.0, 30),
}


def level_rng(name: str) -> np.random.Generator:
    """The noise generator of one image, seeded from its name (so every method sees the same noisy LR)."""
    return np.random.default_rng(zlib.crc32(name.encode("utf-8")))


def pillow_jpeg(img: np.ndarray, quality: int) -> np.ndarray:
    """A uint8 HxWx3 (or grey HxW) image through Pillow's JPEG at `quality`, 4:2:0 chroma subsampling."""
    from PIL import Image

    buffer = io.BytesIO()
    Image.fromarray(img).save(buffer, format="JPEG", quality=int(quality), subsampling=2)
    buffer.seek(0)
    return np.array(Image.open(buffer).convert("RGB" if img.ndim == 3 else "L"))


def pillow_table(quality: int) -> tuple[int, ...]:
    """The luminance quantisation table a Pillow JPEG at `quality` carries (read back from a real file)."""
    from PIL import Image

    buffer = io.BytesIO()
    Image.new("RGB", (8, 8)).save(buffer, format="JPEG", quality=int(quality), subsampling=2)
    buffer.seek(0)
    return tuple(Image.open(buffer).quantization[0])


def level_table(level: str) -> tuple[int, ...] | None:
    """The luminance table of a level's LR file (None for a level without JPEG): what `auto` reads from a file."""
    quality = LEVELS[level].quality
    return pillow_table(quality) if quality else None


def degrade_level(hr: np.ndarray, scale: int, level: str, name: str) -> tuple[np.ndarray, np.ndarray]:
    """(HR modcropped to scale, its degraded uint8 LR) for one of LEVELS; `name` seeds the noise.

    Blur: separable Gaussian on the HR, truncated at 4 sigma, reflected borders, rounded to uint8. Then
    the benchmark's MATLAB-bicubic downscale; then colour Gaussian noise on the uint8 LR, rounded and
    clipped; then Pillow JPEG.
    """
    from scipy.ndimage import gaussian_filter

    from progsr.protocol import make_lr

    if level not in LEVELS:
        raise UserError(f"unknown degradation level {level!r} (choose from {', '.join(LEVELS)})")
    spec = LEVELS[level]
    src = hr
    if spec.blur > 0:
        sigma = (spec.blur, spec.blur, 0) if hr.ndim == 3 else spec.blur
        src = gaussian_filter(hr.astype(np.float64), sigma, mode="reflect", truncate=4.0)
        src = np.clip(np.round(src), 0, 255).astype(np.uint8)
    _, lr = make_lr(src, scale)
    hr_mod = np.ascontiguousarray(hr[: lr.shape[0] * scale, : lr.shape[1] * scale])
    if spec.noise > 0:
        noisy = lr.astype(np.float64) + level_rng(name).normal(0.0, spec.noise, lr.shape)
        lr = np.clip(np.round(noisy), 0, 255).astype(np.uint8)
    if spec.quality:
        lr = pillow_jpeg(lr, spec.quality)
    return hr_mod, lr
