"""The network backends and the choice between them: ONNX Runtime on the CPU (progsr/ort_backend.py, no torch)
or torch on any device (progsr/torch_backend.py), behind one interface that progsr/inference.Upscaler drives:

    config, describe(), receptive_radius(scale), bytes_per_pixel(scale), free_memory(), is_oom(err), release(),
    forward(tiles, scale, scales) -> [numpy per scale], iter_stages(lr, scale), load_state(numpy weights)
"""

from __future__ import annotations

import importlib.util
import os

from progsr.errors import UserError

BACKENDS = ("auto", "onnxruntime", "torch")
# On the CPU, `auto` runs this backend when both are installed (measured: benchmarks/README.md, "CPU backends").
DEFAULT_CPU_BACKEND = "onnxruntime"
TORCH_HINT = "pip install 'progsr[torch]'"


def check_backend(backend: str) -> None:
    """UserError unless `backend` is one of BACKENDS."""
    if backend not in BACKENDS:
        raise UserError(f"--backend {backend}: choose one of {', '.join(BACKENDS)}")


def open_export(path, device, precision: str, compile: bool, backend: str, threads: int | None):
    """An exported .onnx graph (weights inside), which only ONNX Runtime on the CPU in fp32 runs."""
    check_backend(backend)
    if backend == "torch" or str(device) not in ("auto", "cpu") or precision not in ("auto", "fp32") or compile:
        raise UserError(f"{path}: ONNX graphs run on the CPU in fp32 with ONNX Runtime (no --device cuda, "
                        f"--precision, --compile or --backend torch)")
    from progsr.ort_backend import OrtNetwork

    return OrtNetwork.from_export(path, threads)


def _nvidia_driver() -> bool:
    """Whether an NVIDIA driver is present (checked before paying seconds for `import torch` to ask CUDA)."""
    import shutil

    return os.path.exists("/proc/driver/nvidia/version") or shutil.which("nvidia-smi") is not None


def _torch_installed() -> bool:
    """Whether torch can be imported (without importing it)."""
    try:
        return importlib.util.find_spec("torch") is not None
    except (ImportError, ValueError):
        return False


def open_network(config, state: dict, model, device, precision: str, compile: bool, backend: str,
                  threads: int | None):
    """The network backend for these weights: ONNX Runtime on the CPU by default where it has the bundled graph
    (DEFAULT_CPU_BACKEND), torch for an accelerator, --compile, a precision other than fp32 or another architecture."""
    from progsr.ort_backend import bundled_graphs

    check_backend(backend)
    on_cpu = str(device) in ("auto", "cpu")
    wants_torch = backend == "torch" or not on_cpu or compile or precision not in ("auto", "fp32")
    if backend == "onnxruntime" and wants_torch:
        raise UserError("--backend onnxruntime runs on the CPU in fp32 (no --device cuda, --precision or --compile)")
    if not wants_torch and backend == "auto" and str(device) == "auto" and _nvidia_driver() and _torch_installed():
        import torch  # a GPU, where there is one, is the torch backend's

        wants_torch = torch.cuda.is_available()
    graphs = None if wants_torch else bundled_graphs(config)
    if graphs is not None and (backend == "onnxruntime" or DEFAULT_CPU_BACKEND == "onnxruntime"
                               or not _torch_installed()):
        from progsr.ort_backend import OrtNetwork

        return OrtNetwork(graphs, config, state, threads, dict(source=str(model)))
    if backend == "onnxruntime":
        raise UserError(f"{model}: no bundled ONNX graph for this architecture (--backend torch runs it)")
    if not _torch_installed():
        need = (f"--device {device}" if not on_cpu else "--compile" if compile
                else f"--precision {precision}" if precision not in ("auto", "fp32")
                else "--backend torch" if backend == "torch" else f"{model} (no bundled ONNX graph for its architecture)")
        raise UserError(f"{need} needs the torch backend, and torch is not installed: {TORCH_HINT}")
    import torch

    from progsr.models.generator import ProgressiveGenerator
    from progsr.models.io import check_state
    from progsr.torch_backend import TorchNetwork

    if threads:
        torch.set_num_threads(threads)
    generator = ProgressiveGenerator(config)
    check_state(model, {k: tuple(v.shape) for k, v in generator.state_dict().items()}, state)
    generator.load_state_dict({k: torch.from_numpy(v) for k, v in state.items()})
    return TorchNetwork(generator.eval(), device, precision, compile)
