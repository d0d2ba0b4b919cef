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
