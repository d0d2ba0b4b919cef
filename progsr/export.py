"""`progsr export CKPT out.safetensors`: a training checkpoint's EMA generator as a release weights file.

`progsr export --onnx WEIGHTS STEM`: a generator (or a realism blend of the shipped pair) as ONNX graphs.
`progsr export WEIGHTS out.safetensors --grow B1 B2 B3`: the same generator with more residual blocks, computing
exactly what it did (so a smaller PSNR model blends with a grown GAN model).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from progsr.errors import UserError


def export(ckpt, out, use_ema: bool = True, overwrite: bool = False) -> dict:
    """Write the checkpoint's (EMA) generator with its config and training metadata; returns the metadata."""
    from progsr import __version__
    from progsr.models.generator import GeneratorConfig, ProgressiveGenerator
    from progsr.models.io import save_generator
    from progsr.training.checkpoints import load_checkpoint, newest_checkpoint

    out = Path(out).expanduser()
    if out.suffix != ".safetensors":
        raise UserError(f"{out}: the output must be a .safetensors file")
    if out.exists() and not overwrite:
        raise UserError(f"{out}: already exists; pass --overwrite to replace it")
    ckpt = newest_checkpoint(ckpt)  # a run folder: its newest checkpoint
    state = load_checkpoint(ckpt)
    model = ProgressiveGenerator(GeneratorConfig.from_dict(state["config"]["generator"]))
    model.load_state_dict(state["G_ema" if use_ema else "G"])
    run, cfg = state["run"], state["config"]
    validation = run.get("validation") or []
    metadata = {
        "phase": cfg["phase"],
        "iterations": str(state["iteration"]),
        "weights": "ema" if use_ema else "raw",
        "training_data": [Path(d).name for d in run["data"]],
        "training_images": str(run["images"]),
        "train_seconds": f"{run['train_seconds']:.0f}",
        "processes": str(run["world_size"]),
        "validation_set": run.get("val_name") or (Path(run["val"]).name if run.get("val") else "none"),
        "validation": validation[-1] if validation else {},
        "train_config": cfg,
        "checkpoint": ckpt.name,
        "progsr_version": __version__,
    }
    save_generator(model, out, metadata=metadata)
    return metadata


def export_grown(weights, out, blocks, overwrite: bool = False) -> Path:
    """Write the generator in `weights` grown to `blocks` residual blocks per stage (added blocks are identities)."""
    from progsr.models.generator import GeneratorConfig, ProgressiveGenerator
    from progsr.models.io import load_generator, save_generator

    out = Path(out).expanduser()
    if out.suffix != ".safetensors":
        raise UserError(f"{out}: the output must be a .safetensors file")
    if out.exists() and not overwrite:
        raise UserError(f"{out}: already exists; pass --overwrite to replace it")
    small, metadata = load_generator(weights)
    config = GeneratorConfig.from_dict({**small.config.to_dict(), "blocks": list(blocks)})
    grown = ProgressiveGenerator(config)
    grown.load_grown(small.state_dict(), small.config)
    metadata = {**metadata, "grown_from_blocks": list(small.config.blocks)}
    return save_generator(grown, out, metadata=metadata)


def export_onnx_graphs(weights: str, stem, scales=None, realism: float | None = None, overwrite: bool = False,
                       precision: str = "fp32", weightless: bool = False):
    """ONNX graphs of `weights` ("psnr", "gan" or a .safetensors), or of the shipped psnr/gan blend at `realism`."""
    from progsr.onnx_backend import export_onnx

    if realism is not None:
        import torch

        from progsr.models.generator import ProgressiveGenerator
        from progsr.models.io import ShippedBlend, check_realism, read_weights, shipped_model_path

        check_realism(weights)  # a PATH with realism is a one-line error
        if not 0.0 <= realism <= 1.0:
            raise UserError(f"--realism {realism}: must be between 0 and 1")
        config, _, _ = read_weights(shipped_model_path("psnr"))
        model = ProgressiveGenerator(config).eval()
        state = ShippedBlend(config).state(0.0, round(realism, 4))
        model.load_state_dict({k: torch.from_numpy(v) for k, v in state.items()})
        meta = {"realism": f"{realism:g}", "source": "shipped psnr + gan blend"}
    elif weights in ("psnr", "gan") or str(weights).endswith(".safetensors"):
        from progsr.models.io import load_generator, shipped_model_path

        path = shipped_model_path(weights) if weights in ("psnr", "gan") else Path(weights)
        model, _ = load_generator(path)
        meta = {"source": path.name}
    else:
        raise UserError(f"{weights}: --onnx exports psnr, gan or a .safetensors generator (export a checkpoint "
                        f"to .safetensors first)")
    return export_onnx(model, stem, scales, metadata=meta, overwrite=overwrite, precision=precision,
                       weightless=weightless)


def main(argv=None) -> int:
    """`progsr export`: checkpoint (or run folder) -> .safetensors, or with --onnx weights -> ONNX graphs."""
    p = argparse.ArgumentParser(prog="progsr export",
                                description="Export a training checkpoint's EMA generator to a .safetensors file, "
                                            "or (--onnx) a generator to ONNX graphs, one per scale.")
    p.add_argument("ckpt", help="a checkpoint (ckpt_*.pt) or a run folder (its newest checkpoint); with --onnx: "
                                "psnr, gan or a .safetensors generator")
    p.add_argument("out", type=Path, help="output .safetensors file; with --onnx the graphs' path stem, "
                                          "written as STEM_x2.onnx, STEM_x4.onnx, ...")
    p.add_argument("--raw", action="store_true", help="export the raw generator instead of its EMA")
    p.add_argument("--onnx", action="store_true", help="write ONNX graphs (opset 17, dynamic batch/height/width)")
    p.add_argument("--scales", type=int, nargs="+", default=None, help="with --onnx: the scales (default all)")
    p.add_argument("--realism", type=float, default=None,
                   help="with --onnx: bake the blend (1 - R) * psnr + R * gan of the shipped models into the graphs")
    p.add_argument("--onnx-precision", default="fp32", choices=["fp32", "int8", "fp16"],
                   help="with --onnx: fp32 (default), int8 (dynamic quantisation: 0.28x the file, slower on the "
                        "CPU) or fp16 (0.5x); both held the validation Y-PSNR within 0.05 dB of fp32 at x4 "
                        "(benchmarks/README.md)")
    p.add_argument("--weightless", action="store_true",
                   help="with --onnx: graphs without their weights, fed from a weights file at run time (how the "
                        "bundled weights/progsr_x8_graph_x*.onnx are made: progsr export psnr weights/progsr_x8_graph "
                        "--onnx --weightless --overwrite)")
    p.add_argument("--grow", type=int, nargs="+", default=None, metavar="BLOCKS",
                   help="CKPT is a .safetensors generator: write it with these residual blocks per stage, the "
                        "added ones identities (same output)")
    p.add_argument("--overwrite", action="store_true", help="replace OUT if it exists")
    args = p.parse_args(sys.argv[1:] if argv is None else argv)
    if args.grow is not None:
        if (args.onnx or args.raw or args.scales or args.realism is not None or args.onnx_precision != "fp32"
                or args.weightless):
            raise UserError("--grow takes a .safetensors generator and no other option")
        path = export_grown(args.ckpt, args.out, args.grow, args.overwrite)
        print(f"wrote {path} (residual blocks {list(args.grow)})")
        return 0
    if args.onnx:
        paths = export_onnx_graphs(args.ckpt, args.out, args.scales, args.realism, args.overwrite, args.onnx_precision,
                                   args.weightless)
        print("wrote " + ", ".join(str(path) for path in paths))
        return 0
    if args.scales or args.realism is not None or args.onnx_precision != "fp32" or args.weightless:
        raise UserError("--scales, --realism, --onnx-precision and --weightless go with --onnx")
    meta = export(Path(args.ckpt), args.out, use_ema=not args.raw, overwrite=args.overwrite)
    val = meta["validation"]
    summary = ", ".join(f"{k.split('/')[-1]} {v:.2f} dB" for k, v in val.items() if k.startswith("val/psnr"))
    print(f"wrote {args.out} ({meta['phase']} phase, iteration {meta['iterations']}"
          + (f"; {meta['validation_set']} {summary}" if summary else "") + ")")
    return 0
