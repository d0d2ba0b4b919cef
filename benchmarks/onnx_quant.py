"""Does a smaller ONNX graph keep the quality? int8 (dynamic and static) and fp16 graphs against fp32, at x4.

    .venv/bin/python benchmarks/onnx_quant.py --scale 4 --out benchmarks/results/onnx_quant_x4.json

The shipped PSNR model (or --weights) is exported to one fp32 graph (progsr export's code), then:
- int8 dynamic (`progsr export --onnx --onnx-precision int8`): onnxruntime.quantization.quantize_dynamic on
  the Conv nodes (ConvInteger; weights int8, activations quantised per run);
- int8 static: quantize_static, QDQ format, per-channel int8 weights and uint8 activations calibrated
  (MinMax) on --calibration LR crops of training images (never the validation images);
- fp16 (`--onnx-precision fp16`): onnxruntime.transformers.float16 (inputs and outputs kept float32).
Each runs whole images through ONNX Runtime on the CPU (progsr.onnx_run.upscale_rgb8) on the validation
split under the benchmark protocol (MATLAB-bicubic LR, Y-PSNR with the scale shaved). The rule of issue
27: a variant is offered only if its mean Y-PSNR is within 0.05 dB of the fp32 graph's. --time adds
milliseconds per image (meaningful only on an otherwise idle machine).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # run from a checkout without installing

TOLERANCE_DB = 0.05


def _calibration(scale: int, count: int, side: int = 64):
    """An ORT CalibrationDataReader over LR crops of `count` training images (held-out ones excluded)."""
    from onnxruntime.quantization import CalibrationDataReader

    from progsr.paths import shared_dir
    from progsr.protocol import make_lr, read_hr
    from progsr.training.data import training_images

    root = shared_dir()
    if root is None:
        raise SystemExit("static quantisation calibrates on ../shared's training images; not found")
    crops = []
    files = training_images([root / "data" / "train" / "T91", root / "data" / "train" / "BSD200"])
    for path in files[:: max(1, len(files) // count)][:count]:  # spread over both sets
        hr = read_hr(path)
        hr = hr if hr.ndim == 3 else np.repeat(hr[..., None], 3, axis=2)
        _, lr = make_lr(hr[: side * scale, : side * scale], scale)
        crops.append({"lr": (lr.astype(np.float32) / 255.0).transpose(2, 0, 1)[None].copy()})

    class Reader(CalibrationDataReader):
        def __init__(self):
            self.items = iter(crops)

        def get_next(self):
            return next(self.items, None)

    return Reader()


def make_variants(weights: str, scale: int, workdir: Path, calibration: int) -> dict[str, Path]:
    """{name: graph path}: the fp32 export, `progsr export --onnx-precision` int8 and fp16, and int8 static."""
    from onnxruntime.quantization import QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    from progsr.inference import Upscaler
    from progsr.onnx_backend import export_onnx

    model = Upscaler(weights, device="cpu", precision="fp32", backend="torch").model
    paths = {"fp32": export_onnx(model, workdir / "fp32", scales=[scale])[0],
             "int8 dynamic": export_onnx(model, workdir / "int8", scales=[scale], precision="int8")[0]}
    if calibration > 0:
        pre = workdir / "pre.onnx"
        with contextlib.chdir(workdir):  # quant_pre_process leaves temp files in the working folder
            quant_pre_process(str(paths["fp32"]), str(pre), skip_symbolic_shape=True)  # dynamic H, W: symbolic inference gives up
        paths["int8 static"] = workdir / "int8_static.onnx"
        quantize_static(str(pre), str(paths["int8 static"]), _calibration(scale, calibration),
                        quant_format=QuantFormat.QDQ, per_channel=True, weight_type=QuantType.QInt8,
                        activation_type=QuantType.QUInt8)
    paths["fp16"] = export_onnx(model, workdir / "fp16", scales=[scale], precision="fp16")[0]
    return paths


def score(graph: Path, images, scale: int, timed: bool) -> dict:
    """Mean Y-PSNR (and ms per image) of a graph over [(name, HR)] under the benchmark protocol."""
    import onnxruntime as ort

    from progsr.metrics import psnr
    from progsr.onnx_run import upscale_rgb8
    from progsr.protocol import make_lr

    session = ort.InferenceSession(str(graph), providers=["CPUExecutionProvider"])
    values, seconds = [], 0.0
    for _, hr in images:
        hr = hr if hr.ndim == 3 else np.repeat(hr[..., None], 3, axis=2)
        hr, lr = make_lr(hr, scale)
        start = time.perf_counter()
        sr = upscale_rgb8(session, lr)
        seconds += time.perf_counter() - start
        values.append(psnr(sr, hr, crop_border=scale, test_y_channel=True))
    row = {"y_psnr": round(float(np.mean(values)), 4), "bytes": graph.stat().st_size}
    if timed:
        row["ms_per_image"] = round(1000 * seconds / len(images), 1)
    return row


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--weights", default=None, help="a generator .safetensors (default: the shipped PSNR model)")
    p.add_argument("--scale", type=int, default=4)
    p.add_argument("--val", default="default", help="validation split (progsr train --val), or an HR folder")
    p.add_argument("--limit", type=int, default=None, help="only the first N validation images")
    p.add_argument("--calibration", type=int, default=32, help="training images for static calibration (0: skip)")
    p.add_argument("--time", action="store_true", help="also time each graph (on an idle machine)")
    p.add_argument("--out", default=None, help="JSON file for the results")
    args = p.parse_args(argv)

    from progsr.models.io import shipped_model_path
    from progsr.training.data import load_validation

    weights = args.weights or str(shipped_model_path("psnr"))
    split, images = load_validation(args.val)
    images = images[: args.limit] if args.limit else images
    with tempfile.TemporaryDirectory(prefix="progsr-onnx-quant-") as tmp:
        graphs = make_variants(weights, args.scale, Path(tmp), args.calibration)
        rows = {name: score(path, images, args.scale, args.time) for name, path in graphs.items()}
    base = rows["fp32"]["y_psnr"]
    print(f"validation: {split}, {len(images)} images, x{args.scale}")
    print("| graph | Y-PSNR (dB) | vs fp32 (dB) | within 0.05 dB | size (KB) |" + (" ms / image |" if args.time else ""))
    print("|---|---|---|---|---|" + ("---|" if args.time else ""))
    for name, row in rows.items():
        row["delta_db"] = round(row["y_psnr"] - base, 4)
        row["offered"] = abs(row["delta_db"]) <= TOLERANCE_DB
        cells = [name, f"{row['y_psnr']:.3f}", f"{row['delta_db']:+.3f}", "yes" if row["offered"] else "no",
                 f"{row['bytes'] / 1024:.0f}"] + ([f"{row['ms_per_image']:.0f}"] if args.time else [])
        print("| " + " | ".join(cells) + " |")
    if args.out:
        result = {"command": "benchmarks/onnx_quant.py " + " ".join(argv if argv is not None else sys.argv[1:]),
                  "weights": weights, "scale": args.scale, "validation": split, "images": len(images),
                  "tolerance_db": TOLERANCE_DB, "rows": rows}
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps(result, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
