"""The ONNX Runtime network backend (CPU, float32), without torch: the Upscaler's backend where torch is absent.

Two kinds of graph (progsr/onnx_backend.py writes both, one file per scale, outputs x2 ... x<S>):
- the bundled weightless graphs `progsr_x8_graph_x<S>.onnx` beside the shipped weights: the architecture only,
  each initializer named `model.<state-dict key>` and fed from a weights file, or from a numpy blend of the
  shipped ones, through SessionOptions.add_external_initializers. (add_initializer does not mix with
  ORT_ENABLE_ALL: some layers then ran the graph's own weights, 0.65 off at x8; external initializers are
  exact at every optimisation level.)
- an exported graph with its weights inside (`progsr export --onnx`), run as it is.
Same interface as progsr/torch_backend.TorchNetwork.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Iterator

import numpy as np

from progsr.errors import UserError
from progsr.models.config import GeneratorConfig
from progsr.scales import scales_up_to, stage_of

GRAPH_STEM = "progsr_x8_graph"  # the bundled weightless graphs: <weights folder>/progsr_x8_graph_x<S>.onnx
WEIGHT_PREFIX = "model."  # an initializer's name is this plus the generator's state-dict key


def require_onnxruntime():
    """onnxruntime, or a one-line UserError saying how to install it."""
    try:
        import onnxruntime
    except ImportError:
        raise UserError("onnxruntime is not installed: pip install onnxruntime") from None
    return onnxruntime


def default_threads() -> int:
    """ONNX Runtime's intra-op threads: the cores this process may use."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


def bundled_graphs(config: GeneratorConfig) -> dict[int, Path] | None:
    """{scale: weightless graph} for `config`, or None: the bundled graphs are the shipped psnr model's architecture
    (all shipped models share it; tests/test_ort_backend.py checks the graphs against it)."""
    from safetensors import safe_open

    from progsr.paths import shipped_weights, weights_dir

    graphs = {s: weights_dir() / f"{GRAPH_STEM}_x{s}.onnx" for s in config.scales}
    psnr = shipped_weights("psnr")
    if not psnr.is_file() or not all(p.is_file() for p in graphs.values()):
        return None
    with safe_open(str(psnr), framework="numpy") as f:  # the header only
        shipped = (f.metadata() or {}).get("config")
    return graphs if shipped is not None and GeneratorConfig.from_json(shipped) == config else None


def weights_for_scale(weights: dict, scale: int) -> dict:
    """The part of a generator's state dict that its x`scale` graph holds: the head and the stages up to x`scale`."""
    return {k: v for k, v in weights.items() if not (k.startswith("stages.") and int(k.split(".")[1]) >= stage_of(scale))}


class OrtNetwork:
    """Graphs per scale run by ONNX Runtime on the CPU; `weights` feeds weightless graphs (None: weights inside)."""

    name = "onnxruntime"
    precision = "fp32"

    def __init__(self, graphs: dict[int, Path], config: GeneratorConfig, weights: dict[str, np.ndarray] | None = None,
                 threads: int | None = None, metadata: dict | None = None):
        self.ort = require_onnxruntime()
        self.graphs, self.config = dict(graphs), config
        self.threads = threads or default_threads()
        self.metadata = dict(metadata or {})
        self.weightless = weights is not None
        self._sessions: dict[int, object] = {}
        self._values: dict | None = None
        self._radius: int | None = None
        if weights is not None:
            self.load_state(weights)

    @classmethod
    def from_export(cls, path, threads: int | None = None) -> "OrtNetwork":
        """An exported <stem>_x<S>.onnx (weights inside) and its same-export siblings of smaller scales."""
        path = Path(path)
        if not path.is_file():
            raise UserError(f"{path}: no such ONNX file")
        net = cls({}, GeneratorConfig(), threads=threads)
        candidates = [path]
        match = re.fullmatch(r"(.*)_x(\d+)\.onnx", path.name)
        if match:
            candidates += [path.parent / f"{match[1]}_x{s}.onnx" for s in scales_up_to(stage_of(int(match[2])) - 1)]
        for candidate in (c for c in candidates if c.is_file()):
            session = net._open(candidate)
            meta = session.get_modelmeta().custom_metadata_map
            if "config" not in meta or "scale" not in meta:
                raise UserError(f"{candidate}: not a progsr graph (no config/scale metadata; export it with "
                                f"progsr export --onnx)")
            if candidate == path:
                net.metadata = dict(meta)
            elif any(meta.get(k) != net.metadata.get(k) for k in ("config", "source", "realism")):
                continue  # a sibling from another export: not the same network
            net.graphs[int(meta["scale"])] = candidate
            net._sessions[int(meta["scale"])] = session
        net.config = GeneratorConfig.from_json(net.metadata["config"])
        return net

    def describe(self) -> str:
        """Where and how it runs, for the CLI's and the app's status lines."""
        return "cpu, fp32, onnxruntime"

    def load_state(self, state: dict[str, np.ndarray]) -> None:
        """Feed numpy weights (a weights file's, or a blend of the shipped ones) to the weightless graphs."""
        if not self.weightless:
            raise UserError("this ONNX graph holds its own weights; blends need the bundled weightless graphs")
        # kept alive for as long as the sessions use them
        self._values = {k: self.ort.OrtValue.ortvalue_from_numpy(np.ascontiguousarray(v, dtype=np.float32))
                        for k, v in state.items()}
        self._sessions.clear()  # rebuilt on next use (~30 ms each)

    def receptive_radius(self, scale: int) -> int:
        """LR pixels on each side of a pixel that can change its output, at the largest graph's scale: from the
        graph's metadata (export measures it with torch), else measured here on an fp32 graph."""
        if self._radius is None:
            top = max(self.graphs)
            if top not in self._sessions:
                self._sessions[top] = self._open(self.graphs[top], top)
            stored = self._sessions[top].get_modelmeta().custom_metadata_map.get("receptive_radius")
            self._radius = int(stored) if stored else self._measure_radius(top)
        return self._radius

    def _measure_radius(self, top: int) -> int:
        """The output pixels a bump on one input pixel changes (the torch backend's gradient probe, in reverse)."""
        n = 48
        while n <= 384:
            flat = np.full((1, 3, n, n), 0.5, np.float32)
            bumped = flat.copy()
            bumped[0, :, n // 2, n // 2] += 0.25
            diff = np.abs(self._run(flat, top)[-1] - self._run(bumped, top)[-1])[0].max(axis=0)
            changed = np.argwhere(diff[::top, ::top] > 0)  # output pixels at offset 0 of each LR pixel
            radius = int(max(np.abs(changed - n // 2).max(), 1)) if len(changed) else 1
            if radius < n // 2 - 1:
                return radius
            n *= 2
        raise UserError("cannot measure this ONNX graph's receptive field (a quantised graph from an older "
                        "export?): export it again with progsr export --onnx")

    def bytes_per_pixel(self, scale: int) -> float:
        """Activation bytes per LR pixel at x`scale` (the config's count, as the torch backend's on the CPU)."""
        return float(self.config.activation_bytes_per_pixel(scale))

    def free_memory(self) -> None:
        """None: the memory plan reads the host's RAM."""
        return None

    @staticmethod
    def is_oom(err: BaseException) -> bool:
        """True for ONNX Runtime's allocation failures."""
        text = str(err).lower()
        return isinstance(err, MemoryError) or "bad allocation" in text or "failed to allocate" in text

    def release(self) -> None:
        """Nothing to hand back on the CPU."""

    def forward(self, tiles: np.ndarray, scale: int, scales: list[int]) -> list[np.ndarray]:
        """A numpy N x 3 x h x w float32 batch -> the x`s` images for s in `scales`."""
        outputs = self._run(tiles, scale)
        return [outputs[stage_of(s) - 1] for s in scales]

    def iter_stages(self, lr: np.ndarray, scale: int) -> Iterator[np.ndarray]:
        """The stage images x2 ... x`scale` (one run of the graph computes them all)."""
        yield from self._run(lr, scale)[: stage_of(scale)]

    def _run(self, x: np.ndarray, scale: int) -> list[np.ndarray]:
        """Every output of the smallest graph that reaches x`scale`."""
        fits = [s for s in self.graphs if s >= scale]
        if scale not in self.config.scales or not fits:
            raise UserError(f"scale must be one of {sorted(s for s in self.config.scales if s <= max(self.graphs))} "
                            f"for this ONNX model, got {scale}")
        graph = min(fits)
        if graph not in self._sessions:
            self._sessions[graph] = self._open(self.graphs[graph], graph)
        return self._sessions[graph].run(None, {"lr": np.ascontiguousarray(x, dtype=np.float32)})

    def _open(self, path: Path, scale: int | None = None):
        """An InferenceSession of one graph, with the weights fed in where the graph has none (only those of its
        scale: ONNX Runtime refuses a name the graph lacks)."""
        ort = self.ort
        options = ort.SessionOptions()
        options.intra_op_num_threads = self.threads
        options.inter_op_num_threads = 1
        # Idle threads sleep instead of spinning: 2-7% faster on 2 cores, and fair to anything else running
        # (benchmarks/README.md, "CPU backends"); the other settings' defaults won.
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        if self._values is not None:
            used = weights_for_scale(self._values, scale)
            options.add_external_initializers([WEIGHT_PREFIX + k for k in used], list(used.values()))
        try:
            return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        except Exception as err:  # noqa: BLE001 - onnxruntime raises its own exception types
            raise UserError(f"{path}: not a readable ONNX graph for these weights "
                            f"({str(err).splitlines()[0][:200]})") from None
