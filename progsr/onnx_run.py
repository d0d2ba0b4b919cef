"""Upscale an image with an exported progsr ONNX graph using only numpy, Pillow and ONNX Runtime (no torch).

    python -m progsr.onnx_run progsr_psnr_x4.onnx in.png out.png

The reference for running the graphs from any language: feed `lr` as float32 N x 3 x H x W RGB in [0, 1],
take the last output (x<S>), clamp to [0, 1], scale by 255 and round. Whole image in one run: for
tiling, alpha, 16-bit and memory limits use `progsr upscale --model X.onnx`, which wraps the same graph.
"""

from __future__ import annotations

import argparse
import sys

import numpy as np


def upscale_rgb8(session, rgb: np.ndarray) -> np.ndarray:
    """H x W x 3 uint8 RGB -> the graph's result as kH x kW x 3 uint8 RGB."""
    from progsr.pixels import from_float, to_float

    lr = to_float(rgb).transpose(2, 0, 1)[None]  # / 255
    result = session.run(None, {"lr": np.ascontiguousarray(lr)})[-1][0]
    return from_float(result.transpose(1, 2, 0), np.uint8)  # clamp to [0, 1], * 255, round


def main(argv=None) -> int:
    """Read IN (any Pillow image, taken as RGB), run the graph, write OUT."""
    import onnxruntime as ort
    from PIL import Image

    p = argparse.ArgumentParser(prog="python -m progsr.onnx_run", description=__doc__.splitlines()[0])
    p.add_argument("model", help="an exported graph, e.g. progsr_psnr_x4.onnx")
    p.add_argument("input")
    p.add_argument("output")
    args = p.parse_args(argv)
    session = ort.InferenceSession(args.model, providers=["CPUExecutionProvider"])
    with Image.open(args.input) as img:
        rgb = np.asarray(img.convert("RGB"))
    out = upscale_rgb8(session, rgb)
    Image.fromarray(out).save(args.output)
    print(f"{args.input} -> {args.output} ({rgb.shape[1]}x{rgb.shape[0]} -> {out.shape[1]}x{out.shape[0]})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
