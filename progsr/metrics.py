"""Image quality metrics under the standard SR protocol: PSNR, SSIM (Y channel or RGB) and LPIPS; a grid check and
an invented-texture check.

PSNR and SSIM follow BasicSR / the MATLAB test code of SR papers: explicit `crop_border` (pixels shaved
at every border), `test_y_channel` (Y of ITU-R BT.601 studio swing), values on the 0-255 scale.
Grey images (HxW or HxWx1) are compared on their raw grey levels, never converted to Y.

LPIPS is the `lpips` package (v0.1 linear layers ship inside it). Only its ImageNet backbone has to be
found, offline if need be: an explicit path, then $PROGSR_BACKBONES, then backbones/ of the shared dev data
(../shared or $PROGSR_SHARED), then torchvision's download/cache.
"""

from __future__ import annotations

import contextlib
import math
import os
import sys
import warnings
from pathlib import Path

import numpy as np
import torch

from progsr.color import rgb_to_y
from progsr.errors import UserError

# --------------------------------------------------------------------------------------------- PSNR / SSIM


def _as_unit_float(img: np.ndarray) -> np.ndarray:
    """uint8 / uint16 / float [0, 1] image -> float64 in [0, 1]."""
    img = np.asarray(img)
    if img.dtype == np.uint8:
        return img.astype(np.float64) / 255.0
    if img.dtype == np.uint16:
        return img.astype(np.float64) / 65535.0
    if np.issubdtype(img.dtype, np.floating):
        return img.astype(np.float64)
    raise ValueError(f"expected a uint8, uint16 or float image, got dtype {img.dtype}")


def _prepare(img, ref, crop_border: int, test_y_channel: bool) -> tuple[np.ndarray, np.ndarray]:
    """Both images on the 0-255 scale as float64: Y (or RGB, or raw grey), with crop_border shaved."""
    img, ref = np.asarray(img), np.asarray(ref)
    if img.shape != ref.shape:
        raise ValueError(f"image shapes differ: {img.shape} vs {ref.shape}")
    if img.ndim == 3 and img.shape[2] == 1:
        img, ref = img[..., 0], ref[..., 0]
    if not (img.ndim == 2 or (img.ndim == 3 and img.shape[2] == 3)):
        raise ValueError(f"expected an HxW, HxWx1 or HxWx3 image, got shape {img.shape}")
    img, ref = _as_unit_float(img), _as_unit_float(ref)
    if img.ndim == 3 and test_y_channel:
        img, ref = rgb_to_y(img).astype(np.float64), rgb_to_y(ref).astype(np.float64)
    if crop_border < 0:
        raise ValueError(f"crop_border must be >= 0, got {crop_border}")
    if crop_border > 0:
        if min(img.shape[:2]) <= 2 * crop_border:
            raise ValueError(f"crop_border {crop_border} leaves nothing of a {img.shape[:2]} image")
        img = img[crop_border:-crop_border, crop_border:-crop_border]
        ref = ref[crop_border:-crop_border, crop_border:-crop_border]
    return img * 255.0, ref * 255.0


def psnr(img, ref, crop_border: int, test_y_channel: bool = True) -> float:
    """PSNR in dB of `img` against `ref` (10 log10(255^2 / MSE)), on Y (BT.601) or RGB, borders shaved."""
    a, b = _prepare(img, ref, crop_border, test_y_channel)
    mse = float(np.mean((a - b) ** 2))
    return math.inf if mse == 0 else 10.0 * math.log10(255.0**2 / mse)


SSIM_MODES = ("valid", "same")


def ssim(img, ref, crop_border: int, test_y_channel: bool = True, mode: str = "valid") -> float:
    """SSIM of `img` against `ref` (Wang et al.: 11x11 Gaussian sigma 1.5, K1 0.01, K2 0.03, L 255), borders shaved.

    mode="valid" (the standard): average the SSIM map only where the 11x11 window fits inside the
    image, as Wang's ssim_index.m and BasicSR do. scikit-image computes exactly this: it filters the
    whole image and crops the 5-px margin before averaging.
    mode="same": MATLAB's built-in ssim(), which pads by replicating the border and averages every
    pixel. LapSRN's evaluation code uses it, and with it the published x8 bicubic SSIM row.
    RGB (test_y_channel False) is the mean of the per-channel SSIMs.
    """
    a, b = _prepare(img, ref, crop_border, test_y_channel)
    if mode == "valid":
        from skimage.metrics import structural_similarity

        return float(
            structural_similarity(
                a, b, data_range=255.0, gaussian_weights=True, sigma=1.5, use_sample_covariance=False,
                K1=0.01, K2=0.03, channel_axis=-1 if a.ndim == 3 else None,
            )
        )
    if mode != "same":
        raise ValueError(f"SSIM mode must be one of {SSIM_MODES}, got {mode!r}")
    if a.ndim == 3:
        return float(np.mean([_ssim_same(a[..., c], b[..., c]) for c in range(a.shape[2])]))
    return _ssim_same(a, b)


def _ssim_same(a: np.ndarray, b: np.ndarray) -> float:
    """MATLAB ssim() on one channel (0-255 scale): 11x11 Gaussian (sigma 1.5) with replicate padding, full mean."""
    from scipy.ndimage import gaussian_filter

    blur = lambda x: gaussian_filter(x, sigma=1.5, truncate=3.5, mode="nearest")  # noqa: E731  radius 5: 11 taps
    c1, c2 = (0.01 * 255.0) ** 2, (0.03 * 255.0) ** 2
    mu_a, mu_b = blur(a), blur(b)
    var_a, var_b, cov = blur(a * a) - mu_a**2, blur(b * b) - mu_b**2, blur(a * b) - mu_a * mu_b
    ssim_map = ((2 * mu_a * mu_b + c1) * (2 * cov + c2)) / ((mu_a**2 + mu_b**2 + c1) * (var_a + var_b + c2))
    return float(ssim_map.mean())


# --------------------------------------------------------------------------------------------- grid artefact
# A generator that upsamples by learned 2x steps (pixel shuffle) can print a fixed pattern that repeats
# every `period` output pixels, locked to its upsampling grid: the "dot grid" of perceptual-loss training.
# Natural images and bicubic have almost none of it, because their content is not aligned to that grid.


def grid_phase_means(img: torch.Tensor, period: int) -> torch.Tensor:
    """(N, C, period, period): the high-pass residual of an (N, C, H, W) image averaged over each position
    within the period x period cells tiling it from the top-left corner (the pattern locked to that grid)."""
    n, c, h, w = img.shape
    padded = torch.nn.functional.pad(img, (period,) * 4, mode="reflect")
    residual = img - torch.nn.functional.avg_pool2d(padded, 2 * period + 1, stride=1)
    h, w = h - h % period, w - w % period
    cells = residual[..., :h, :w].reshape(n, c, h // period, period, w // period, period)
    return cells.mean(dim=(2, 4))


def grid_artifact(img, period: int) -> float:
    """RMS, in Y levels (0-255; raw levels for grey), of the pattern in a numpy image that repeats every `period`
    px, locked to the top-left corner. SR outputs of this project are aligned that way; photos score 0.02-0.2."""
    y, _ = _prepare(img, img, crop_border=0, test_y_channel=True)
    if period < 1 or min(y.shape) <= period:
        raise ValueError(f"grid period {period} does not fit a {y.shape} image")
    t = torch.from_numpy(np.ascontiguousarray(y))[None, None]
    return float(grid_phase_means(t, period).pow(2).mean().sqrt())


# --------------------------------------------------------------------------------------------- invented texture
# A GAN can paint texture where the HR has none (a cross-hatch on smooth skin). LPIPS barely sees it and PSNR
# cannot tell it from a misplaced true detail, so this measures only the high-frequency energy the SR has
# beyond the HR's, region by region: 0 for the HR itself and for anything smoother than it.


def excess_texture(img, ref, crop_border: int, sigma: float = 1.0, window: float = 3.0) -> float:
    """RMS, in Y levels (raw levels for grey), of the local high-pass energy of `img` in excess of `ref`'s.

    High-pass: the image less its Gaussian blur (`sigma` px); energy: its square under a Gaussian of
    `window` px; excess: max(0, img's - ref's) per pixel, averaged over the image, square-rooted.
    """
    from skimage.filters import gaussian

    y, y_ref = _prepare(img, ref, crop_border, test_y_channel=True)

    def energy(a: np.ndarray) -> np.ndarray:
        high = a - gaussian(a, sigma, mode="reflect", preserve_range=True)
        return gaussian(high * high, window, mode="reflect", preserve_range=True)

    return float(np.sqrt(np.maximum(energy(y) - energy(y_ref), 0.0).mean()))


def colour_shift(img, ref, crop_border: int) -> np.ndarray:
    """Mean of `img` minus mean of `ref` per RGB channel, in 8-bit levels, with crop_border shaved: a model
    that darkens or tints its output moves these away from 0 (a grey image gives one value)."""
    a, b = _prepare(img, ref, crop_border, test_y_channel=False)
    axes = (0, 1) if a.ndim == 3 else None
    return np.atleast_1d(a.mean(axis=axes) - b.mean(axis=axes))


# --------------------------------------------------------------------------------------------- LPIPS

BACKBONE_FILES = {"alex": "alexnet_features.safetensors", "vgg": "vgg16_features.safetensors"}
LPIPS_MIN_SIDE = {"alex": 31, "vgg": 16}  # smaller inputs vanish in the trunk's strided convs and pools


def _torchvision_weights(net: str):
    from torchvision import models

    return models.AlexNet_Weights.IMAGENET1K_V1 if net == "alex" else models.VGG16_Weights.IMAGENET1K_V1


def _read_safetensors(path: Path) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    try:
        return load_file(str(path))
    except Exception as err:  # safetensors raises several types for a bad file
        raise UserError(f"{path}: not a readable .safetensors backbone ({err})") from None


def _backbone_file(path: Path, net: str) -> Path:
    """A .safetensors file, or the net's file inside a folder."""
    return path / BACKBONE_FILES[net] if path.is_dir() else path


def resolve_backbone(net: str, backbone_path) -> tuple[dict[str, torch.Tensor], str]:
    """The backbone's `features.*` state dict and a description of where it came from."""
    if backbone_path is not None:
        path = _backbone_file(Path(backbone_path), net)
        if not path.is_file():
            raise UserError(f"{path}: LPIPS backbone not found (expected {BACKBONE_FILES[net]} or a folder holding it)")
        return _read_safetensors(path), str(path)

    tried = ["no backbone path given"]
    env = os.environ.get("PROGSR_BACKBONES")
    if env:
        path = _backbone_file(Path(env), net)
        if path.is_file():
            return _read_safetensors(path), str(path)
        tried.append(f"$PROGSR_BACKBONES has no {path}")
    else:
        tried.append("$PROGSR_BACKBONES is not set")
    from progsr.paths import shared_dir

    shared = shared_dir()
    if shared is not None and _backbone_file(shared / "backbones", net).is_file():  # the dev data beside the checkout
        path = _backbone_file(shared / "backbones", net)
        return _read_safetensors(path), str(path)

    weights = _torchvision_weights(net)
    try:
        with contextlib.redirect_stdout(sys.stderr):  # torch.hub prints "Downloading: ..." to stdout
            state = weights.get_state_dict(progress=False, weights_only=True)
        return state, f"torchvision {weights} ({weights.url})"
    except Exception as err:
        reason = str(err).splitlines()[0] if str(err) else ""
        tried.append(f"torchvision could not load or download {weights.url} ({type(err).__name__}: {reason})")
    raise UserError(
        f"no ImageNet backbone for LPIPS net='{net}': {'; '.join(tried)}. To work offline, set "
        f"PROGSR_BACKBONES to a folder holding {BACKBONE_FILES[net]} (e.g. ../shared/backbones) "
        f"or pass its path (progsr bench --backbones PATH; progsr train --set backbones=PATH)"
    )


def _load_backbone(model, features: dict[str, torch.Tensor], source: str) -> None:
    """Copy torchvision `features.<i>.*` weights into lpips' slices (which keep index i as the module name)."""
    ours = model.net.state_dict()  # keys like "slice2.3.weight"
    mapped, missing = {}, []
    for key in ours:
        tv_key = "features." + key.split(".", 1)[1]
        if tv_key in features:
            mapped[key] = features[tv_key].to(torch.float32)
        else:
            missing.append(tv_key)
    expected = {"features." + k.split(".", 1)[1] for k in ours}
    unexpected = sorted(k for k in features if k.startswith("features.") and k not in expected)
    if missing or unexpected:
        raise UserError(
            f"{source}: not a {model.pnet_type} backbone (missing {missing[:4]}, unexpected {unexpected[:4]})"
        )
    try:
        model.net.load_state_dict(mapped, strict=True)
    except RuntimeError as err:
        first = str(err).splitlines()[1].strip() if len(str(err).splitlines()) > 1 else str(err)
        raise UserError(f"{source}: backbone weights do not fit LPIPS net='{model.pnet_type}' ({first})") from None


def build_lpips(net: str = "alex", backbone_path=None, device="cpu"):
    """An `lpips.LPIPS` (v0.1) in eval mode with its ImageNet backbone found offline-first; inputs in [-1, 1]."""
    import lpips

    if net not in BACKBONE_FILES:
        raise UserError(f"LPIPS net must be one of {sorted(BACKBONE_FILES)}, got '{net}'")
    features, source = resolve_backbone(net, backbone_path)
    with warnings.catch_warnings():
        # pnet_rand=True builds the trunk without torchvision weights (no download); lpips still passes
        # the deprecated `pretrained=` argument to torchvision, which warns.
        warnings.simplefilter("ignore", UserWarning)
        model = lpips.LPIPS(net=net, version="0.1", pnet_rand=True, verbose=False)
    _load_backbone(model, features, source)
    model.backbone_source = source
    return model.eval().requires_grad_(False).to(device)


def _to_lpips_tensor(img, crop_border: int, device) -> torch.Tensor:
    img = _as_unit_float(img)
    if img.ndim == 3 and img.shape[2] == 1:
        img = img[..., 0]
    if img.ndim == 2:
        img = np.repeat(img[..., None], 3, axis=2)
    if crop_border > 0:
        img = img[crop_border:-crop_border, crop_border:-crop_border]
    t = torch.from_numpy(np.ascontiguousarray(img, dtype=np.float32)).permute(2, 0, 1)[None]
    return (t * 2.0 - 1.0).to(device)


def lpips_distance(img, ref, model, crop_border: int) -> float:
    """LPIPS between two numpy images (uint8 or float [0, 1], RGB or grey) with `crop_border` shaved."""
    img, ref = np.asarray(img), np.asarray(ref)
    if img.shape != ref.shape:
        raise ValueError(f"image shapes differ: {img.shape} vs {ref.shape}")
    side = min(img.shape[:2]) - 2 * crop_border
    if side < LPIPS_MIN_SIDE[model.pnet_type]:
        raise ValueError(f"LPIPS-{model.pnet_type} needs images of at least {LPIPS_MIN_SIDE[model.pnet_type]} px a side after the crop, got {side}")
    device = next(model.parameters()).device
    with torch.inference_mode():
        d = model(_to_lpips_tensor(img, crop_border, device), _to_lpips_tensor(ref, crop_border, device))
    return float(d.item())
