"""The tiled engine's parts: tile geometry, blend windows, the memory plan and the strip-by-strip tile blender.

Upscaler (progsr/inference.py) drives them; its module docstring describes the whole recipe.
"""

from __future__ import annotations

import math
import os
from typing import Callable, ContextManager, Iterator

import torch

from progsr.scales import stage_of

MIN_TILE = 32
MAX_AUTO_TILE = 1024
# On the CPU, tiles beyond a few hundred pixels buy little speed, so the working set (network activations
# plus the float strip tiles are blended into) is capped, whatever RAM is free: memory then stays near
# the size of the output itself (benchmarks/README.md, "Memory").
CPU_WORK_BUDGET = 512 * 2**20
STRIP_PIECE = 16  # LR rows of finished output converted at a time

Progress = Callable[[int, int], None]  # progress(done_tiles, total_tiles)


def is_oom(err: BaseException) -> bool:
    """True for a CUDA or CPU out-of-memory error (the ones the tiled engine retries with smaller tiles)."""
    if isinstance(err, torch.OutOfMemoryError):
        return True
    text = str(err)
    return isinstance(err, RuntimeError) and ("out of memory" in text or "can't allocate memory" in text)


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


def blend_ramp(length: int, overlap: int, scale: int, rise: bool, fall: bool) -> torch.Tensor:
    """1-D weights over a tile's `length * scale` output pixels (see the module docstring).

    `rise`/`fall`: whether the tile has a neighbour before/after it (an image edge gets weight 1).
    """
    n = length * scale
    w = torch.ones(n, dtype=torch.float64)
    margin, ramp = (overlap // 4) * scale, (overlap - 2 * (overlap // 4)) * scale
    pos = torch.arange(n, dtype=torch.float64) + 0.5
    for on, dist in ((rise, pos), (fall, n - pos)):
        if on and ramp > 0:
            t = ((dist - margin) / ramp).clamp(0, 1)
            w = w * (0.5 - 0.5 * torch.cos(math.pi * t))
        elif on:  # no ramp (overlap < 2): a hard cut halfway into the margin
            w = w * (dist > margin).double()
    return w.float()


_RADII: dict[str, int] = {}


def receptive_radius(model, scale: int) -> int:
    """LR pixels on each side of a pixel that can change its x`scale` output: measured once per architecture.

    One backward pass from a centre output pixel of a blank probe; the radius is where the input gradient ends.
    """
    key = f"{model.config.to_json()}x{scale}"
    n = 48
    while key not in _RADII:
        probe = torch.full((1, 3, n, n), 0.5, requires_grad=True)
        with torch.enable_grad():
            out = model(probe, scale=scale)  # a CPU float32 model: called before it moves to its device
            c = n * scale // 2
            out[0, :, c, c].sum().backward()
        support = (probe.grad[0].abs().sum(0) > 0).nonzero()
        radius = int(max((support - n // 2).abs().max().item(), 1))
        if radius < n // 2 - 1:  # else the probe was too small to see the whole field: try a larger one
            _RADII[key] = radius
        n *= 2
    return _RADII[key]


def memory_available(device: torch.device) -> int:
    """Bytes free for activations: CUDA's free memory, or the CPU's MemAvailable."""
    if device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(device)
        return int(free)
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


def choose_tiling(h: int, w: int, scale: int, per_pixel: float, device: torch.device, tile: int | None,
                  batch: int | None, min_tile: int, tile_cap: int | None) -> tuple[int, int]:
    """(tile, batch) for a padded h x w input: the given tile or one sized to free memory (at least
    `min_tile`), then at most `tile_cap`; the given batch or as many tiles as memory allows (at most 16).

    The plan counts the network's activations (`per_pixel` bytes per input pixel) and the float strip the
    tiles are blended into (16 bytes per output pixel over a tile's height and the full width); the whole
    image runs in one pass only when its float output fits too.
    """
    host_budget = min(memory_available(torch.device("cpu")) * 0.25, CPU_WORK_BUDGET)
    budget = memory_available(device) * 0.6 if device.type == "cuda" else host_budget
    strip_per_row = 16 * scale * scale * w  # float RGB + weight, per LR row of the strip
    share = 0.5 if device.type == "cpu" else 1.0  # on the CPU the network and the strip share the budget
    if tile is None:
        on_host = (h * w * per_pixel if device.type == "cpu" else 0) + h * strip_per_row
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


def activation_bytes_per_pixel(model, scale: int, device: torch.device,
                               inference: Callable[[], ContextManager]) -> float:
    """Peak activation bytes per input pixel of `model` at `scale`, measured on a small probe under `inference()`."""
    side = 32
    probe = torch.rand(1, 3, side, side, device=device).contiguous(memory_format=torch.channels_last)
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
        base = torch.cuda.memory_allocated(device)
        with inference():
            model(probe, scale=scale)
        torch.cuda.synchronize(device)
        return 1.25 * (torch.cuda.max_memory_allocated(device) - base) / side**2
    largest = [0]  # no allocator statistics on the CPU: the largest activation, times the few alive at once

    def hook(_module, _inputs, output):
        if isinstance(output, torch.Tensor):
            largest[0] = max(largest[0], output.numel() * output.element_size())

    handles = [m.register_forward_hook(hook) for m in model.modules() if not list(m.children())]
    try:
        with inference():
            model(probe, scale=scale)
    finally:
        for handle in handles:
            handle.remove()
    return 4.0 * largest[0] / side**2


def run_tiles(forward, inference: Callable[[], ContextManager], padded: torch.Tensor, scale: int, tile: int,
              batch: int, overlap: int, device: torch.device, progress: Progress | None,
              scales: list[int]) -> Iterator[tuple[int, int, list[torch.Tensor]]]:
    """Yield (top, bottom, [rows per scale in `scales`]) of the padded image, float32 on the CPU, strip by strip.

    `forward(x, scale=, return_stages=True)` runs the network under `inference()`. Tiles run a row of tiles
    at a time and are blended into one strip buffer per scale (windows scaled by the scale's factor). The
    rows no later tile row touches are final: they are normalised and yielded, and the overlap carries on
    to the next strip. Memory: one strip, never the whole float image.
    """
    _, _, h, w = padded.shape
    th, tw = fit_tile(h, tile, overlap), fit_tile(w, tile, overlap)
    ys, xs = tile_starts(h, th, overlap), tile_starts(w, tw, overlap)
    if len(ys) == len(xs) == 1:
        lr = padded.to(device, non_blocking=True).contiguous(memory_format=torch.channels_last)
        with inference():
            results = forward(lr, scale=scale, return_stages=True)
        if progress is not None:
            progress(1, 1)
        yield 0, h, [results[stage_of(s) - 1].float().cpu() for s in scales]
        return
    total, done, ramps = len(ys) * len(xs), 0, {}
    acc = [torch.zeros(1, 3, th * s, w * s) for s in scales]
    weight = [torch.zeros(1, 1, th * s, w * s) for s in scales]
    for i, y in enumerate(ys):
        boxes = [(y, x) for x in xs]
        for j in range(0, len(boxes), batch):
            group = boxes[j: j + batch]
            tiles = torch.cat([padded[:, :, y: y + th, x: x + tw] for _, x in group])
            tiles = tiles.to(device, non_blocking=True).contiguous(memory_format=torch.channels_last)
            with inference():
                results = forward(tiles, scale=scale, return_stages=True)
            for out, wsum, s in zip(acc, weight, scales):
                result = results[stage_of(s) - 1].float().cpu()
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
                    carry = buf[:, :, (end - y) * s:].clone()
                    buf.zero_()
                    buf[:, :, : carry.shape[2]] = carry
