"""ONNX export: a generator as one graph per scale (progsr/ort_backend.py runs them, without torch).

A graph `<stem>_x<S>.onnx` has one input `lr` (float32, N x 3 x H x W, RGB in [0, 1]; N, H and W dynamic)
and one output per stage, `x2`, `x4`, ... `x<S>` (float32, N x 3 x kH x kW, unclamped: clamp to [0, 1]
before converting to 8 or 16 bits). The x<S> output is the result; the earlier ones are the progressive
previews. The generator config, the scale and the realism blend are in the graph's metadata.
A weightless graph (`weightless=True`, the bundled progsr_x8_graph_x<S>.onnx) declares every initializer
as external data that never exists on disk: ONNX Runtime is handed the weights, by the names
`model.<state-dict key>`, from a weights file or a blend (progsr.ort_backend.OrtNetwork).
"""

from __future__ import annotations

import json
import shutil
import tempfile
from pathlib import Path

import torch

from progsr.errors import UserError
from progsr.scales import scales_up_to, stage_of
from progsr.torch_backend import receptive_radius

# Opset 17 (ONNX 1.12, 2022): Resize with cubic mode and every op used here, supported by ONNX Runtime >= 1.12,
# onnxruntime-web, TensorRT >= 8.6, OpenVINO and DirectML.
OPSET = 17


def _require(name: str):
    """Import an optional ONNX dependency, or a one-line UserError saying how to install it."""
    import importlib

    try:
        return importlib.import_module(name)
    except ImportError:
        raise UserError(f"{name} is not installed: pip install -c constraints.txt -e \".[onnx]\" "
                        f"(or pip install onnx onnxruntime)") from None


class _StageGraph(torch.nn.Module):
    """The generator up to one scale, returning every stage image (the traced module of one graph)."""

    def __init__(self, model, scale: int):
        super().__init__()
        self.model, self.scale = model, scale

    def forward(self, lr):
        return tuple(self.model(lr, scale=self.scale, return_stages=True))


def graph_path(stem, scale: int) -> Path:
    """Where the x`scale` graph of an export named `stem` goes: <stem>_x<scale>.onnx."""
    stem = Path(stem)
    return stem.parent / f"{stem.name}_x{scale}.onnx"


GRAPH_PRECISIONS = ("fp32", "int8", "fp16")


def export_onnx(model, stem, scales=None, metadata: dict | None = None, overwrite: bool = False,
                opset: int = OPSET, precision: str = "fp32", weightless: bool = False) -> list[Path]:
    """Write one graph per scale (default: every scale of the model) as <stem>_x<s>.onnx; returns the paths.

    precision: "fp32", or a smaller graph that held the fp32 graph's validation Y-PSNR within 0.05 dB at x4
    (benchmarks/onnx_quant.py): "int8" (ONNX Runtime's dynamic quantisation of the Conv weights) or "fp16"
    (float16 weights and arithmetic, float32 input and outputs). weightless: fp32 graphs without their
    weights (see the module docstring).
    """
    import warnings

    from progsr import __version__
    from progsr.imageio import atomic_output

    onnx = _require("onnx")
    if precision not in GRAPH_PRECISIONS:
        raise UserError(f"--onnx-precision {precision}: choose one of {', '.join(GRAPH_PRECISIONS)}")
    if weightless and precision != "fp32":
        raise UserError("--weightless graphs are fp32 (the weights files are)")
    model = model.float().cpu().eval()
    scales = list(scales or model.config.scales)
    bad = [s for s in scales if s not in model.config.scales]
    if bad:
        raise UserError(f"--scales {bad}: this model has scales {list(model.config.scales)}")
    paths = [graph_path(stem, s) for s in scales]
    existing = [str(p) for p in paths if p.exists()]
    if existing and not overwrite:
        raise UserError(f"{existing[0]}: already exists; pass --overwrite to replace it")
    paths[0].parent.mkdir(parents=True, exist_ok=True)
    for scale, path in zip(scales, paths):
        outputs = [f"x{s}" for s in scales_up_to(stage_of(scale))]
        axes = {"lr": {0: "batch", 2: "height", 3: "width"}}
        axes.update({name: {0: "batch", 2: f"height_{name}", 3: f"width_{name}"} for name in outputs})
        with atomic_output(path) as tmp, warnings.catch_warnings(), torch.no_grad():
            warnings.simplefilter("ignore")  # the TorchScript exporter's deprecation notice
            torch.onnx.export(_StageGraph(model, scale), (torch.rand(1, 3, 16, 16),), str(tmp), dynamo=False,
                              opset_version=opset, input_names=["lr"], output_names=outputs, dynamic_axes=axes)
            graph = _convert(onnx.load(str(tmp)), precision, tmp)
            props = {"progsr_version": __version__, "scale": str(scale), "config": model.config.to_json(),
                     "receptive_radius": str(receptive_radius(model, scale)),
                     "precision": precision, "weights": "external (progsr.ort_backend)" if weightless else "inside",
                     "input": "lr: float32 N x 3 x H x W, RGB in [0, 1]",
                     "outputs": f"{', '.join(outputs)}: float32 stage images, unclamped; {outputs[-1]} is the result",
                     **{k: v if isinstance(v, str) else json.dumps(v) for k, v in (metadata or {}).items()}}
            for key, value in props.items():
                entry = graph.metadata_props.add()
                entry.key, entry.value = key, value
            _save(onnx, graph, Path(tmp), weightless)
    return paths


def _save(onnx, graph, path: Path, weightless: bool) -> None:
    """Save `graph` at `path`; weightless: with every initializer declared external and the data dropped."""
    if not weightless:
        onnx.save(graph, str(path))
        return
    with tempfile.TemporaryDirectory() as folder:
        inner = Path(folder) / path.name
        onnx.save(graph, str(inner), save_as_external_data=True, all_tensors_to_one_file=True,
                  location="weights-fed-by-progsr", size_threshold=0)
        shutil.move(str(inner), str(path))


def _convert(graph, precision: str, path: Path):
    """The fp32 graph (also saved at `path`) as `precision` (see export_onnx)."""
    if precision == "fp16":
        from onnxruntime.transformers.float16 import convert_float_to_float16

        return convert_float_to_float16(graph, keep_io_types=True)
    if precision == "int8":
        import onnx
        from onnxruntime.quantization import QuantType, quantize_dynamic

        quantized = path.with_name(path.name + ".int8")
        try:
            quantize_dynamic(str(path), str(quantized), weight_type=QuantType.QInt8, op_types_to_quantize=["Conv"])
            return onnx.load(str(quantized))
        finally:
            quantized.unlink(missing_ok=True)
    return graph
