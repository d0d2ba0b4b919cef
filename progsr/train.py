"""`progsr train` (or `torchrun --nproc-per-node N -m progsr.train ...`): resolve the run, then progsr.training.loop.

The training code lives in progsr/training/; see progsr/TRAINING.md for the recipe.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import sys
from pathlib import Path

import torch.distributed as dist

from progsr.errors import UserError
from progsr.training.checkpoints import list_checkpoints, load_checkpoint, read_init_weights
from progsr.training.config import PRESETS, TrainConfig, apply_overrides, check_config, config_from_dict, load_config
from progsr.training.data import DEFAULT_VALIDATION


def default_threads() -> int:
    """Half the usable cores (at least 1): two OpenMP threads on a shared 2-core machine collapse (TRAINING.md)."""
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:
        cores = os.cpu_count() or 1
    return max(1, cores // 2)


def _default_data() -> list[Path]:
    from progsr.paths import shared_dir

    shared = shared_dir()
    if shared is None:
        return []
    root = shared / "data" / "train"
    return [p for p in (root / "T91", root / "BSD200") if p.is_dir()]


def _parse_args(argv):
    p = argparse.ArgumentParser(prog="progsr train", description="Train a progressive SR generator (psnr or gan phase).")
    p.add_argument("--config", default=None, help=f"a preset ({', '.join(PRESETS)}) or a JSON file (default x8_psnr)")
    p.add_argument("--data", nargs="+", type=Path, default=None, metavar="DIR",
                   help="HR training image folders (default: ../shared/data/train/T91 and BSD200)")
    p.add_argument("--val", default=None, metavar="default|skimage|DIR|none",
                   help="validation split: 'default' (five photos shipped with scikit-image plus the 30 training "
                        "images listed in progsr/training/heldout.txt, which training then never reads), 'skimage' "
                        "(the photos alone), an HR folder, or 'none'. Never a benchmark set")
    p.add_argument("--out", type=Path, required=True, metavar="RUN_DIR", help="run folder (checkpoints, logs, samples)")
    p.add_argument("--resume", default=None, metavar="auto|CKPT",
                   help="'auto': continue from the newest checkpoint in RUN_DIR (a new run if it has none); or a checkpoint")
    p.add_argument("--init", default=None, metavar="WEIGHTS",
                   help="start the generator from these weights: a shipped model (psnr, gan), a .safetensors file, "
                        "a checkpoint or a run folder")
    p.add_argument("--iters", type=int, default=None,
                   help="where the run stops (overrides the config; the learning-rate schedule does not move)")
    p.add_argument("--max-minutes", type=float, default=None, help="stop cleanly with a checkpoint after this long")
    p.add_argument("--budget-minutes", type=float, default=None,
                   help="train this many minutes in this call with a cosine learning rate that restarts and ends "
                        "annealed with it (chunked CPU runs, a fixed GPU window)")
    p.add_argument("--stop-after", type=int, default=None, metavar="N",
                   help="stop cleanly with a checkpoint after N iterations of this call")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:1, mps")
    p.add_argument("--threads", type=int, default=None,
                   help=f"CPU threads for torch (default: half the cores, here {default_threads()})")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="override a config key (JSON value), e.g. --set batch_size=32 --set generator.blocks=[8,2,1]")
    return p.parse_args(argv)


def resolve_run(args) -> tuple[TrainConfig, dict | None]:
    """The run's config and the checkpoint it resumes from (None for a new run); all checks, no work."""
    out = args.out.expanduser()
    resume = None
    if args.resume == "auto":
        found = list_checkpoints(out)
        if found:
            resume = load_checkpoint(found[-1])
        elif (out / "metrics.jsonl").exists():
            raise UserError(f"{out}: --resume auto found a metrics log but no checkpoint to continue from; "
                            f"move the folder away or choose another --out")
        elif int(os.environ.get("RANK", "0")) == 0:
            print(f"progsr train: --resume auto: no checkpoint in {out}, starting a new run", file=sys.stderr)
    elif args.resume is not None:
        resume = load_checkpoint(args.resume)
    elif list_checkpoints(out):
        raise UserError(f"{out}: already holds checkpoints; pass --resume auto to continue it, or another --out")

    if resume is not None:
        cfg = config_from_dict(resume["config"], TrainConfig(), "checkpoint config")
        if args.config and int(os.environ.get("RANK", "0")) == 0:
            print(f"progsr train: resuming {out}: using the config saved in its checkpoint (--config ignored; "
                  f"--set and --iters still apply)", file=sys.stderr)
        if args.init:
            raise UserError("--init starts a new run; it cannot be combined with a resumed checkpoint")
    else:
        cfg = load_config(args.config or "x8_psnr")
        if args.init:
            cfg = dataclasses.replace(cfg, init=args.init)
    cfg = apply_overrides(cfg, args.set)
    if args.iters is not None:
        cfg = dataclasses.replace(cfg, iters=args.iters)
    if cfg.init and resume is None and cfg.schedule != "simultaneous":
        # Trained weights need no fade: while a stage is base + alpha * residual, the losses would push its
        # trained residual towards residual / alpha, to shrink back as alpha reaches 1.
        cfg = dataclasses.replace(cfg, schedule="simultaneous")
        if int(os.environ.get("RANK", "0")) == 0:
            print("progsr train: --init: every stage trains from the first iteration (the progressive curriculum "
                  "is for generators grown from scratch; no fade is replayed on trained weights)", file=sys.stderr)
    if cfg.init and resume is None:  # the init weights decide the architecture
        from progsr.models.config import GeneratorConfig

        init_cfg, _ = read_init_weights(cfg.init)
        if not any(item.strip().startswith("generator") for item in args.set):
            cfg = dataclasses.replace(cfg, generator=init_cfg)
        elif not GeneratorConfig.from_dict(init_cfg).grows_into(GeneratorConfig.from_dict(cfg.generator)):
            raise UserError(f"--set generator...: conflicts with the architecture of the --init weights {cfg.init} "
                            f"(they can only grow: more residual blocks in stages that have some)")
    check_config(cfg)
    return cfg, resume


def main(argv=None) -> int:
    """`progsr train`: resolve the config and folders (all checks before any work), then train."""
    import torch

    from progsr.training.loop import RunLimits, train

    args = _parse_args(sys.argv[1:] if argv is None else argv)
    cfg, resume = resolve_run(args)
    if args.data:
        data_dirs = [d.expanduser() for d in args.data]
    elif resume is not None:
        data_dirs = [Path(d) for d in resume["run"]["data"]]
    else:
        data_dirs = _default_data()
        if not data_dirs:
            raise UserError("no training data: pass --data DIR [DIR ...] (../shared/data/train is not available)")
    for d in data_dirs:
        if not d.is_dir():
            raise UserError(f"{d}: training data folder not found")
    if args.val is not None:
        val = None if args.val.lower() == "none" else args.val
    elif resume is not None:
        val = resume["run"]["val"]
    else:
        val = DEFAULT_VALIDATION
    if val not in (None, "skimage", DEFAULT_VALIDATION) and not Path(val).expanduser().is_dir():
        raise UserError(f"{val}: validation folder not found")
    for name in ("max_minutes", "stop_after", "budget_minutes", "threads"):
        value = getattr(args, name)
        if value is not None and value <= 0:
            raise UserError(f"--{name.replace('_', '-')} must be > 0, got {value}")
    torch.set_num_threads(args.threads or default_threads())

    limits = RunLimits(args.max_minutes, args.stop_after, args.budget_minutes)
    result = train(cfg, data_dirs, val, args.out.expanduser(), resume, limits, args.device)
    if int(os.environ.get("RANK", "0")) == 0:
        val = result["last_val"]
        summary = ", ".join(f"{k.split('/')[-1]} {v:.2f} dB" if "psnr" in k else f"{k.split('/')[-1]} {v:.4f}"
                            for k, v in (val or {}).items() if k.startswith("val/"))
        print(f"progsr train: {args.out} at iteration {result['iteration']}" + (f"; {summary}" if summary else ""),
              file=sys.stderr)
    if dist.is_initialized():
        dist.destroy_process_group()
    return 130 if result.get("interrupted") == "SIGINT" else 0


if __name__ == "__main__":  # torchrun --nproc-per-node N -m progsr.train ...
    try:
        sys.exit(main())
    except UserError as err:
        print(f"progsr train: error: {err}", file=sys.stderr)
        sys.exit(2)
