"""The torch side of the tiled engine: the network run on numpy tiles, and the probes the memory plan needs
(receptive radius, activation bytes per pixel, free accelerator memory, out-of-memory errors).

progsr/tiling.py plans and blends on numpy; Upscaler (progsr/inference.py) hands it `tile_forward(...)`.
"""

from __future__ import annotations

from typing import Callable, ContextManager

import numpy as np
import torch

from progsr.scales import stage_of


def tile_forward(forward, inference: Callable[[], ContextManager], device: torch.device, scale: int,
                 scales: list[int]) -> Callable[[np.ndarray], list[np.ndarray]]:
    """A numpy N x 3 x h x w float32 batch -> the network's x`s` images for s in `scales`, float32 on the host.

    `forward(x, scale=, return_stages=True)` runs under `inference()` (inference mode, autocast) on `device`.
    """
    def run(tiles: np.ndarray) -> list[np.ndarray]:
        x = torch.from_numpy(np.ascontiguousarray(tiles)).to(device, non_blocking=True)
        with inference():
            results = forward(x.contiguous(memory_format=torch.channels_last), scale=scale, return_stages=True)
        return [results[stage_of(s) - 1].float().cpu().numpy() for s in scales]

    return run


def device_free_memory(device: torch.device) -> int | None:
    """Free bytes on a CUDA device; None for the CPU (the memory plan then reads the host's RAM)."""
    if device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(device)
        return int(free)
    return None


def is_oom(err: BaseException) -> bool:
    """True for a CUDA or CPU out-of-memory error (the ones the tiled engine retries with smaller tiles)."""
    if isinstance(err, torch.OutOfMemoryError):
        return True
    text = str(err)
    return isinstance(err, RuntimeError) and ("out of memory" in text or "can't allocate memory" in text)


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


