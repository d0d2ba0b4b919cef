"""The torch network backend: a ProgressiveGenerator on a device (CPU, CUDA, MPS) at a precision, run on numpy
tiles, with the probes the memory plan needs (receptive radius, activation bytes per pixel, free memory).

Upscaler (progsr/inference.py) drives it through the interface it shares with progsr/ort_backend.py:
config, describe(), receptive_radius(scale), bytes_per_pixel(scale), free_memory(), is_oom(err), release(),
forward(tiles, scale, scales), iter_stages(lr, scale) and load_state(state).
"""

from __future__ import annotations

import contextlib
from typing import Iterator

import numpy as np
import torch

from progsr.scales import stage_of

PRECISION_NAMES = {torch.float32: "fp32", torch.float16: "fp16", torch.bfloat16: "bf16"}


class TorchNetwork:
    """A generator (CPU, fp32, as loaded) moved to `device` and run under inference mode and autocast."""

    name = "torch"

    def __init__(self, model, device="auto", precision="auto", compile: bool = False):
        from progsr.devices import resolve_device, resolve_precision

        self.device = device if isinstance(device, torch.device) else resolve_device(device)
        self.dtype = resolve_precision(precision, self.device)
        self.config = model.config
        model.requires_grad_(False)
        self._radius = receptive_radius(model, self.config.max_scale)  # probed in fp32 on the CPU, before the move
        self.model = model.to(self.device, memory_format=torch.channels_last).eval()
        self._forward = torch.compile(self.model) if compile else self.model
        self._bytes_per_pixel: dict[int, float] = {}

    @property
    def precision(self) -> str:
        """fp32, fp16 or bf16."""
        return PRECISION_NAMES[self.dtype]

    def describe(self) -> str:
        """Where and how it runs, for the CLI's and the app's status lines: e.g. 'cuda:0, bf16, torch'."""
        return f"{self.device}, {self.precision}, torch"

    def receptive_radius(self, scale: int) -> int:
        """LR pixels on each side of a pixel that can change its output (measured at the largest scale)."""
        return self._radius

    def bytes_per_pixel(self, scale: int) -> float:
        """Peak activation bytes per LR pixel at x`scale`: the config's count on the CPU, measured on CUDA."""
        if scale not in self._bytes_per_pixel:
            if self.device.type == "cuda":
                self._bytes_per_pixel[scale] = _cuda_bytes_per_pixel(self.model, scale, self.device, self._inference)
            else:
                self._bytes_per_pixel[scale] = float(self.config.activation_bytes_per_pixel(scale))
        return self._bytes_per_pixel[scale]

    def free_memory(self) -> int | None:
        """Free bytes on a CUDA device; None for the CPU (the memory plan then reads the host's RAM)."""
        if self.device.type == "cuda":
            free, _ = torch.cuda.mem_get_info(self.device)
            return int(free)
        return None

    @staticmethod
    def is_oom(err: BaseException) -> bool:
        """True for a CUDA or CPU out-of-memory error (the ones the tiled engine retries with smaller tiles)."""
        if isinstance(err, torch.OutOfMemoryError):
            return True
        text = str(err)
        return isinstance(err, RuntimeError) and ("out of memory" in text or "can't allocate memory" in text)

    def release(self) -> None:
        """Hand cached accelerator memory back after an out-of-memory error."""
        if self.device.type == "cuda":
            torch.cuda.empty_cache()

    def forward(self, tiles: np.ndarray, scale: int, scales: list[int]) -> list[np.ndarray]:
        """A numpy N x 3 x h x w float32 batch -> the x`s` images for s in `scales`, float32 numpy."""
        x = torch.from_numpy(np.ascontiguousarray(tiles)).to(self.device, non_blocking=True)
        with self._inference():
            results = self._forward(x.contiguous(memory_format=torch.channels_last), scale=scale, return_stages=True)
        return [results[stage_of(s) - 1].float().cpu().numpy() for s in scales]

    def iter_stages(self, lr: np.ndarray, scale: int) -> Iterator[np.ndarray]:
        """The stage images x2 ... x`scale` of a 1 x 3 x H x W image, each as soon as it is computed."""
        x = torch.from_numpy(np.ascontiguousarray(lr)).to(self.device).contiguous(memory_format=torch.channels_last)
        images = self.model.iter_stages(x, scale)  # not compiled: it pauses between stages
        for _ in range(stage_of(scale)):
            with self._inference():  # entered per stage: inference_mode and autocast are thread-local
                result = next(images)
            yield result.float().cpu().numpy()

    def load_state(self, state: dict[str, np.ndarray]) -> None:
        """Copy numpy weights (e.g. a blend of the shipped models) into the network on its device."""
        self.model.load_state_dict({k: torch.from_numpy(np.ascontiguousarray(v)) for k, v in state.items()})

    @contextlib.contextmanager
    def _inference(self):
        """inference_mode plus autocast to the chosen precision (a no-op for fp32)."""
        with torch.inference_mode(), torch.autocast(self.device.type, dtype=self.dtype,
                                                    enabled=self.dtype != torch.float32):
            yield


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


def _cuda_bytes_per_pixel(model, scale: int, device: torch.device, inference) -> float:
    """Peak CUDA bytes per input pixel of `model` at `scale` on a small probe under `inference()`, plus 25%."""
    side = 32
    probe = torch.rand(1, 3, side, side, device=device).contiguous(memory_format=torch.channels_last)
    torch.cuda.synchronize(device)
    torch.cuda.reset_peak_memory_stats(device)
    base = torch.cuda.memory_allocated(device)
    with inference():
        model(probe, scale=scale)
    torch.cuda.synchronize(device)
    return 1.25 * (torch.cuda.max_memory_allocated(device) - base) / side**2
