"""ONNX: export a generator to one graph per scale, and run such graphs in `Upscaler` through ONNX Runtime.

A graph `<stem>_x<S>.onnx` has one input `lr` (float32, N x 3 x H x W, RGB in [0, 1]; N, H and W dynamic)
and one output per stage, `x2`, `x4`, ... `x<S>` (float32, N x 3 x kH x kW, unclamped: clamp to [0, 1]
before converting to 8 or 16 bits). The x<S> output is the result; the earlier ones are the progressive
previews. The generator config, the scale and the realism blend are in the graph's metadata.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import torch

from progsr.errors import UserError
from progsr.scales import scales_up_to, stage_of

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
                opset: int = OPSET, precision: str = "fp32") -> list[Path]:
    """Write one graph per scale (default: every scale of the model) as <stem>_x<s>.onnx; returns the paths.

    precision: "fp32", or a smaller graph that held the fp32 graph's validation Y-PSNR within 0.05 dB at x4
    (benchmarks/onnx_quant.py): "int8" (ONNX Runtime's dynamic quantisation of the Conv weights) or "fp16"
    (float16 weights and arithmetic, float32 input and outputs).
    """
    import warnings

    from progsr import __version__
    from progsr.imageio import atomic_output

    onnx = _require("onnx")
    if precision not in GRAPH_PRECISIONS:
        raise UserError(f"--onnx-precision {precision}: choose one of {', '.join(GRAPH_PRECISIONS)}")
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
                     "precision": precision,
                     "input": "lr: float32 N x 3 x H x W, RGB in [0, 1]",
                     "outputs": f"{', '.join(outputs)}: float32 stage images, unclamped; {outputs[-1]} is the result",
                     **{k: v if isinstance(v, str) else json.dumps(v) for k, v in (metadata or {}).items()}}
            for key, value in props.items():
                entry = graph.metadata_props.add()
                entry.key, entry.value = key, value
            onnx.save(graph, str(tmp))
    return paths


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


class OnnxGenerator:
    """A stand-in for ProgressiveGenerator in `Upscaler` that runs exported graphs with ONNX Runtime on the CPU.

    Given <stem>_x<S>.onnx it also uses the sibling graphs of smaller scales when they exist and come from
    the same export (a smaller graph is less work); otherwise the x<S> graph serves every scale up to S. `twin` is a torch model of
    the same architecture (random weights) for the Upscaler's receptive-field and memory probes.
    """

    def __init__(self, path, threads: int | None = None):
        from progsr.models.generator import GeneratorConfig, ProgressiveGenerator

        path = Path(path)
        if not path.is_file():
            raise UserError(f"{path}: no such ONNX file")
        ort = _require("onnxruntime")
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads or torch.get_num_threads()
        options.inter_op_num_threads = 1
        self.sessions: dict[int, object] = {}
        candidates = [path]
        match = re.fullmatch(r"(.*)_x(\d+)\.onnx", path.name)
        if match:
            candidates += [path.parent / f"{match[1]}_x{s}.onnx" for s in scales_up_to(stage_of(int(match[2])) - 1)]
        self.metadata: dict = {}
        for candidate in candidates:
            if not candidate.is_file():
                continue
            try:
                session = ort.InferenceSession(str(candidate), options, providers=["CPUExecutionProvider"])
            except Exception as err:  # noqa: BLE001 - onnxruntime raises its own exception types
                raise UserError(f"{candidate}: not a readable ONNX graph ({str(err).splitlines()[0]})") from None
            meta = session.get_modelmeta().custom_metadata_map
            if "config" not in meta or "scale" not in meta:
                raise UserError(f"{candidate}: not a progsr graph (no config/scale metadata; export it with "
                                f"progsr export --onnx)")
            if candidate == path:
                self.metadata = dict(meta)
            elif any(meta.get(k) != self.metadata.get(k) for k in ("config", "source", "realism")):
                continue  # a sibling from another export: not the same network
            self.sessions[int(meta["scale"])] = session
        self.config = GeneratorConfig.from_json(self.metadata["config"])
        self.twin = ProgressiveGenerator(self.config).eval()

    def _session(self, scale: int):
        fits = [s for s in self.sessions if s >= scale]
        if scale not in self.config.scales or not fits:
            raise UserError(f"scale must be one of {sorted(s for s in self.config.scales if s <= max(self.sessions))} "
                            f"for this ONNX model, got {scale}")
        return self.sessions[min(fits)]

    def iter_stages(self, lr: torch.Tensor, scale: int = 8, alpha: float = 1.0):
        """The stage images x2 ... x`scale` (all computed in one run of the graph)."""
        if alpha != 1.0:
            raise ValueError("an exported graph has no fade-in: alpha must be 1")
        session = self._session(scale)
        x = np.ascontiguousarray(lr.detach().float().cpu().numpy())
        outputs = session.run(None, {"lr": x})
        yield from (torch.from_numpy(o) for o in outputs[: stage_of(scale)])

    def __call__(self, lr: torch.Tensor, scale: int = 8, alpha: float = 1.0, return_stages: bool = False):
        images = list(self.iter_stages(lr, scale, alpha))
        return images if return_stages else images[-1]

    def to(self, *args, **kwargs):
        """ONNX Runtime runs on the CPU in float32; nothing moves."""
        return self

    def eval(self):
        return self

    def requires_grad_(self, flag: bool = True):
        return self
