"""Where progsr finds things outside the package: the shared dev data and the shipped weights."""

from __future__ import annotations

import os
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent


def shared_dir() -> Path | None:
    """The development data folder: $PROGSR_SHARED, else ../shared beside the checkout, else None."""
    env = os.environ.get("PROGSR_SHARED")
    candidates = [Path(env)] if env else []
    candidates.append(REPO_ROOT.parent / "shared")
    for path in candidates:
        if (path / "data").is_dir():
            return path
    return None


# The bicubic-trained fidelity and GAN models, and their real-world (degradation-trained) counterparts.
WEIGHT_NAMES = {"psnr": "progsr_x8_psnr.safetensors", "gan": "progsr_x8_gan.safetensors",
                "real": "progsr_x8_real.safetensors", "realgan": "progsr_x8_realgan.safetensors"}


def weights_dir() -> Path:
    """The folder of shipped weights: $PROGSR_WEIGHTS, else the installed copy, else the checkout's weights/."""
    env = os.environ.get("PROGSR_WEIGHTS")
    if env:
        return Path(env)
    # A wheel install carries the repo's weights/ as the package folder progsr/weights (see pyproject.toml);
    # a source checkout or editable install reads weights/ in place.
    installed = Path(__file__).resolve().parent / "weights"
    return installed if installed.is_dir() else REPO_ROOT / "weights"


def shipped_weights(name: str) -> Path:
    """Path of a shipped model (a WEIGHT_NAMES key); it may not exist yet if that model is not released."""
    return weights_dir() / WEIGHT_NAMES[name]
