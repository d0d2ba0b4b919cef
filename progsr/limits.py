"""Size limits of an upscale, computed without torch (the CLI's --help shows them)."""

from __future__ import annotations

import os

DEFAULT_MAX_PIXELS = 16_777_216  # input pixels (4096 x 4096); the output has scale^2 times as many


def default_max_output_pixels() -> int:
    """The default output limit: what a uint8 RGB result (with its encoder's copy) can take of half the RAM."""
    try:
        total = os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        total = 8 << 30
    return int(total * 0.5 / 8)
