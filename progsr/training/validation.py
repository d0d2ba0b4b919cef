"""Validation on the held-out split (benchmark protocol, never a benchmark set), sample grids, learning curves."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from progsr.pixels import tensor_to_u8, u8_to_tensor


def make_validation_set(images, scales, level: str = "clean") -> list[tuple[int, np.ndarray, np.ndarray]]:
    """(scale, HR modcropped to it, its uint8 LR) for each image and scale: the benchmark protocol, its LR made
    at one of progsr.degradations.LEVELS ("clean" is the plain MATLAB-bicubic LR)."""
    from progsr.degradations import degrade_level

    return [(s, *degrade_level(hr_full, s, level, name)) for s in scales for name, hr_full in images]


def mean_scores(results, lpips_model=None) -> dict:
    """Mean Y-PSNR (crop_border = scale), grid artefact (period = scale), excess texture and colour shift (same
    shave; the largest mean RGB difference from the HR, in levels, signed) per scale of (scale, SR, HR) uint8
    triples, and LPIPS on RGB with the PSNR's shave when `lpips_model` is given:
    {'val/psnr_x2': ..., 'val/grid_x2': ..., 'val/texture_x2': ..., 'val/colour_x2': ..., 'val/lpips_x2': ...}."""
    from progsr.metrics import colour_shift, excess_texture, grid_artifact, lpips_distance, psnr

    per_scale: dict[str, list[float]] = {}
    for s, sr, hr in results:
        shift = colour_shift(sr, hr, crop_border=s)
        per_scale.setdefault(f"val/colour_x{s}", []).append(float(shift[np.argmax(np.abs(shift))]))
        per_scale.setdefault(f"val/psnr_x{s}", []).append(psnr(sr, hr, crop_border=s))
        per_scale.setdefault(f"val/grid_x{s}", []).append(grid_artifact(sr, s))
        per_scale.setdefault(f"val/texture_x{s}", []).append(excess_texture(sr, hr, crop_border=s))
        if lpips_model is not None:
            per_scale.setdefault(f"val/lpips_x{s}", []).append(lpips_distance(sr, hr, lpips_model, crop_border=s))
    return {key: float(np.mean(v)) for key, v in per_scale.items()}


@torch.no_grad()
def validate(model, val_set, device, top_scale: int, alpha: float, lpips_model=None) -> dict:
    """mean_scores of the model's plain forward pass on the validation set; the scale being faded in is
    evaluated at the current alpha."""
    from progsr.protocol import upscale_u8

    return mean_scores(((s, upscale_u8(model, lr, s, alpha if s == top_scale else 1.0, device), hr)
                        for s, hr, lr in val_set), lpips_model)


def bicubic_baseline(val_set) -> dict:
    """The MATLAB-bicubic Y-PSNR of the validation set per scale, for reference in the log."""
    from progsr.metrics import psnr
    from progsr.resize import imresize

    per_scale: dict[int, list[float]] = {}
    for s, hr, lr in val_set:
        per_scale.setdefault(s, []).append(psnr(imresize(lr, scale=s), hr, crop_border=s))
    return {f"val/bicubic_x{s}": float(np.mean(v)) for s, v in per_scale.items()}


@torch.no_grad()
def save_sample_grid(model, images, path: Path, max_scale: int, alpha: float, device, size: int = 192) -> None:
    """PNG grid, one row per validation image (centre crop): LR | bicubic | each stage | HR, all shown at HR size."""
    from progsr.imageio import write_image
    from progsr.resize import imresize
    from progsr.training.data import to_rgb8

    images = [to_rgb8(hr) for _, hr in images[:3]]
    c = min([size] + [min(hr.shape[:2]) for hr in images]) // max_scale * max_scale  # one crop size for all rows
    if not images or c == 0:
        return
    rows = []
    for hr in images:
        y0, x0 = (hr.shape[0] - c) // 2, (hr.shape[1] - c) // 2
        hr = np.ascontiguousarray(hr[y0 : y0 + c, x0 : x0 + c])
        lr = imresize(hr, scale=1 / max_scale)
        stages = model(u8_to_tensor(lr, device), scale=max_scale, alpha=alpha, return_stages=True)
        panels = [lr, imresize(lr, scale=max_scale)] + [tensor_to_u8(img) for img in stages] + [hr]
        rows.append(np.concatenate([np.kron(p, np.ones((c // p.shape[0], c // p.shape[1], 1), dtype=np.uint8))
                                    for p in panels], axis=1))
    write_image(path, np.concatenate(rows, axis=0))


def plot_learning_curve(records: list[dict], path: Path) -> bool:
    """PNG of validation Y-PSNR gain over bicubic (and LPIPS, when logged) per scale against samples and hours.

    Returns False (and writes nothing) when matplotlib is not installed or there is nothing to plot.
    """
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    from progsr.imageio import atomic_output

    base = next((r for r in records if any(k.startswith("val/bicubic_x") for k in r)), {})
    val = [r for r in records if any(k.startswith("val/psnr_x") for k in r) and "samples" in r]
    if not val:
        return False
    metrics = ["psnr"] + (["lpips"] if any(k.startswith("val/lpips_x") for r in val for k in r) else [])
    fig, axes = plt.subplots(len(metrics), 2, figsize=(11, 4 * len(metrics)), sharey="row", squeeze=False)
    for row, metric in zip(axes, metrics):
        keys = {k for r in val for k in r if k.startswith(f"val/{metric}_x")}
        for key in sorted(keys, key=lambda k: int(k.split("x")[-1])):
            scale = key.split("_")[-1]
            offset = base.get(f"val/bicubic_{scale}", 0.0) if metric == "psnr" else 0.0
            pts = [(r["samples"], r["time"] / 3600, r[key] - offset) for r in val if key in r]
            row[0].plot([p[0] for p in pts], [p[2] for p in pts], marker=".", label=scale)
            row[1].plot([p[1] for p in pts], [p[2] for p in pts], marker=".", label=scale)
        row[0].set_xlabel("training samples seen")
        row[1].set_xlabel("training time (hours)")
        if metric == "psnr":
            row[0].set_ylabel("validation Y-PSNR gain over bicubic (dB)" if base else "validation Y-PSNR (dB)")
        else:
            row[0].set_ylabel("validation LPIPS-alex (lower is better)")
        for ax in row:
            ax.grid(alpha=0.3)
            ax.legend()
    fig.suptitle("progsr learning curve (held-out validation split)")
    fig.tight_layout()
    with atomic_output(path) as tmp:
        fig.savefig(tmp, format="png", dpi=90)
    plt.close(fig)
    return True
