"""The tiled engine's parts, on numpy: tile geometry, blend windows, the memory plan and the strip blender.

Upscaler (progsr/inference.py) drives them; its module docstring describes the whole recipe. The network
is a callable on numpy tiles (progsr/torch_backend.py runs it in torch), so nothing here imports torch.
"""

from __future__ import annotations

import math
import os
from typing import Callable, Iterator

import numpy as np

MIN_TILE = 32
MAX_AUTO_TILE = 1024
# On the CPU, tiles beyond a few hundred pixels buy little speed, so the working set (network activations
# plus the float strip tiles are blended into) is capped, whatever RAM is free: memory then stays near
# the size of the output itself (benchmarks/README.md, "Memory").
CPU_WORK_BUDGET = 512 * 2**20
STRIP_PIECE = 16  # LR rows of finished output converted at a time

Progress = Callable[[int, int], None]  # progress(done_tiles, total_tiles)


def tile_starts(length: int, tile: int, overlap: int) -> list[int]:
    """Start offsets of equal tiles covering [0, length) with neighbours sharing at least `overlap` pixels."""
    if length <= tile:
        return [0]
    n = math.ceil((length - overlap) / (tile - overlap))
    return [i * (length - tile) // (n - 1) for i in range(n)]  # floor keeps every step <= tile - overlap


def fit_tile(length: int, tile: int, overlap: int) -> int:
    """The smallest tile length that covers `length` with as few tiles as `tile` needs (less overlap, less work).

    E.g. 512 px in 256 px tiles overlapping by 40 needs three tiles; three of 198 px do it with half the pixels.
    """
    if length <= tile:
        return length
    n = math.ceil((length - overlap) / (tile - overlap))
    return math.ceil((length - overlap) / n) + overlap


def blend_ramp(length: int, overlap: int, scale: int, rise: bool, fall: bool) -> np.ndarray:
    """1-D float32 weights over a tile's `length * scale` output pixels (see the module docstring).

    `rise`/`fall`: whether the tile has a neighbour before/after it (an image edge gets weight 1).
    """
    n = length * scale
    w = np.ones(n, dtype=np.float64)
    margin, ramp = (overlap // 4) * scale, (overlap - 2 * (overlap // 4)) * scale
    pos = np.arange(n, dtype=np.float64) + 0.5
    for on, dist in ((rise, pos), (fall, n - pos)):
        if on and ramp > 0:
            t = np.clip((dist - margin) / ramp, 0, 1)
            w = w * (0.5 - 0.5 * np.cos(math.pi * t))
        elif on:  # no ramp (overlap < 2): a hard cut halfway into the margin
            w = w * (dist > margin)
    return w.astype(np.float32)


def host_memory_available() -> int:
    """Bytes of RAM free for work: the kernel's MemAvailable."""
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return 4 << 30


def choose_tiling(h: int, w: int, scale: int, per_pixel: float, device_free: int | None, tile: int | None,
                  batch: int | None, min_tile: int, tile_cap: int | None) -> tuple[int, int]:
    """(tile, batch) for a padded h x w input: the given tile or one sized to free memory (at least
    `min_tile`), then at most `tile_cap`; the given batch or as many tiles as memory allows (at most 16).

    The plan counts the network's activations (`per_pixel` bytes per input pixel) in the accelerator's
    free memory (`device_free` bytes; None: the network runs in RAM) and the float strip the tiles are
    blended into (16 bytes per output pixel over a tile's height and the full width); the whole image
    runs in one pass only when its float output fits too.
    """
    on_cpu = device_free is None
    host_budget = min(host_memory_available() * 0.25, CPU_WORK_BUDGET)
    budget = host_budget if on_cpu else device_free * 0.6
    strip_per_row = 16 * scale * scale * w  # float RGB + weight, per LR row of the strip
    share = 0.5 if on_cpu else 1.0  # on the CPU the network and the strip share the budget
    if tile is None:
        on_host = (h * w * per_pixel if on_cpu else 0) + h * strip_per_row
        if h * w * per_pixel <= budget and on_host <= host_budget:
            tile = max(h, w)  # the whole image in one pass
        else:
            tile = int(math.sqrt(budget * share / per_pixel))
            tile = min(tile, int(host_budget * share / strip_per_row)) // 8 * 8
            tile = max(min(tile, MAX_AUTO_TILE), min_tile)
    if tile_cap is not None:
        tile = min(tile, tile_cap)
    if batch is None:
        batch = int(budget * share // (min(tile, h) * min(tile, w) * per_pixel))
        batch = max(1, min(batch, 16))
    return tile, batch


def run_tiles(forward: Callable[[np.ndarray], list[np.ndarray]], padded: np.ndarray, scale: int, tile: int,
              batch: int, overlap: int, progress: Progress | None,
              scales: list[int]) -> Iterator[tuple[int, int, list[np.ndarray]]]:
    """Yield (top, bottom, [rows per scale in `scales`]) of the padded 1x3xHxW image, float32, strip by strip.

    `forward(tiles)` runs the network on an N x 3 x h x w float32 batch and returns the images of `scales`,
    float32 on the host. Tiles run a row of tiles at a time and are blended into one strip buffer per scale
    (windows scaled by the scale's factor). The rows no later tile row touches are final: they are
    normalised and yielded, and the overlap carries on to the next strip. Memory: one strip, never the
    whole float image.
    """
    _, _, h, w = padded.shape
    th, tw = fit_tile(h, tile, overlap), fit_tile(w, tile, overlap)
    ys, xs = tile_starts(h, th, overlap), tile_starts(w, tw, overlap)
    if len(ys) == len(xs) == 1:
        results = forward(padded)
        if progress is not None:
            progress(1, 1)
        yield 0, h, results
        return
    total, done, ramps = len(ys) * len(xs), 0, {}
    acc = [np.zeros((1, 3, th * s, w * s), np.float32) for s in scales]
    weight = [np.zeros((1, 1, th * s, w * s), np.float32) for s in scales]
    for i, y in enumerate(ys):
        boxes = [(y, x) for x in xs]
        for j in range(0, len(boxes), batch):
            group = boxes[j: j + batch]
            results = forward(np.concatenate([padded[:, :, y: y + th, x: x + tw] for _, x in group]))
            for out, wsum, s, result in zip(acc, weight, scales, results):
                for k, (_, x) in enumerate(group):
                    key = (s, th, tw, y > 0, y + th < h, x > 0, x + tw < w)
                    if key not in ramps:
                        ry = blend_ramp(th, overlap, s, key[3], key[4])
                        rx = blend_ramp(tw, overlap, s, key[5], key[6])
                        ramps[key] = ry[:, None] * rx[None, :]
                    out[:, :, :, x * s: (x + tw) * s] += result[k] * ramps[key]
                    wsum[:, :, :, x * s: (x + tw) * s] += ramps[key]
            done += len(group)
            if progress is not None:
                progress(done, total)
        end = ys[i + 1] if i + 1 < len(ys) else y + th  # LR rows above the next tile row are final
        for a in range(y, end, STRIP_PIECE):  # in pieces, so converting them never copies a whole strip
            b = min(a + STRIP_PIECE, end)
            yield a, b, [out[:, :, (a - y) * s: (b - y) * s] / wsum[:, :, (a - y) * s: (b - y) * s]
                         for out, wsum, s in zip(acc, weight, scales)]
        if i + 1 < len(ys):  # the rows the next tile row overlaps move to the top of the strip, in place
            for out, wsum, s in zip(acc, weight, scales):
                for buf in (out, wsum):
                    carry = buf[:, :, (end - y) * s:].copy()
                    buf[:] = 0
                    buf[:, :, : carry.shape[2]] = carry
