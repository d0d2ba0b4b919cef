"""`progsr export CKPT out.safetensors`: a training checkpoint's EMA generator as a release weights file."""

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


def main(argv=None) -> int:
    """`progsr export`: checkpoint (or run folder) -> .safetensors."""
    p = argparse.ArgumentParser(prog="progsr export",
                                description="Export a training checkpoint's EMA generator to a .safetensors file.")
    p.add_argument("ckpt", type=Path, help="a checkpoint (ckpt_*.pt) or a run folder (its newest checkpoint)")
    p.add_argument("out", type=Path, help="output .safetensors file")
    p.add_argument("--raw", action="store_true", help="export the raw generator instead of its EMA")
    p.add_argument("--overwrite", action="store_true", help="replace OUT if it exists")
    args = p.parse_args(sys.argv[1:] if argv is None else argv)
    meta = export(args.ckpt, args.out, use_ema=not args.raw, overwrite=args.overwrite)
    val = meta["validation"]
    summary = ", ".join(f"{k.split('/')[-1]} {v:.2f} dB" for k, v in val.items() if k.startswith("val/psnr"))
    print(f"wrote {args.out} ({meta['phase']} phase, iteration {meta['iterations']}"
          + (f"; {meta['validation_set']} {summary}" if summary else "") + ")")
    return 0
