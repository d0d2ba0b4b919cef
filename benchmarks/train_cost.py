"""CPU seconds per training iteration of a config and of variants of it, on one thread.

    .venv/bin/python benchmarks/train_cost.py --config x8_gan \
        --variant preset --variant no-triplet triplet_weight=0 --variant lpips5 perceptual_layers=5

Each variant is the config with its KEY=VALUE overrides (as `progsr train --set`). It runs the training
loop's own step (`progsr.training.steps.train_step`: G's losses and update, then D's) on synthetic batches
of the config's shapes, at the top stage with every stage active (alpha 1): the steady-state cost of a
run. The figure is process CPU time (`time.process_time`), so other work on a shared machine does not
inflate it; wall time is recorded too. Content does not change the cost, so the batches are random.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # run from a checkout without installing


def synthetic_groups(cfg, num_stages: int, generator):
    """Random (scale, LR, [targets]) groups with the batch split and crop sizes of `cfg` at the top stage."""
    import torch

    from progsr.training.config import batch_split

    groups = []
    for k, n in enumerate(batch_split(cfg.batch_size, cfg.scale_mix, num_stages), start=1):
        if n:
            c = cfg.lr_crop[k - 1]
            lr = torch.rand(n, 3, c, c, generator=generator)
            targets = [torch.rand(n, 3, c * 2**j, c * 2**j, generator=generator) for j in range(1, k + 1)]
            groups.append((2**k, lr, targets))
    return groups


def measure(cfg, iters: int, warmup: int) -> dict:
    """CPU and wall seconds per iteration of train_step for one config."""
    import torch

    from progsr.models.discriminator import ProgressiveDiscriminator
    from progsr.models.generator import ProgressiveGenerator
    from progsr.training.config import build_model_configs, check_config
    from progsr.training.steps import build_perceptual_loss, train_step

    check_config(cfg)
    torch.manual_seed(cfg.seed)
    g_cfg, d_cfg = build_model_configs(cfg)
    G = ProgressiveGenerator(g_cfg).train()
    D = ProgressiveDiscriminator(d_cfg) if cfg.phase == "gan" else None
    opt_G = torch.optim.Adam(G.parameters(), lr=cfg.lr)
    opt_D = torch.optim.Adam(D.parameters(), lr=cfg.d_lr) if D is not None else None
    lpips_loss = build_perceptual_loss(cfg, "cpu")
    gen = torch.Generator().manual_seed(0)
    cpu, wall = [], []
    for i in range(warmup + iters):
        groups = synthetic_groups(cfg, g_cfg.num_stages, gen)
        c0, w0 = time.process_time(), time.perf_counter()
        train_step(G, D, opt_G, opt_D, lpips_loss, groups, g_cfg.num_stages, 1.0, cfg, contextlib.nullcontext(), cfg.lr)
        if i >= warmup:
            cpu.append(time.process_time() - c0)
            wall.append(time.perf_counter() - w0)
    return {"cpu_s": statistics.median(cpu), "cpu_s_all": [round(c, 3) for c in cpu],
            "wall_s": statistics.median(wall), "samples": cfg.batch_size}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--config", default="x8_gan", help="preset name or JSON config (as progsr train --config)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override for every variant")
    p.add_argument("--variant", action="append", nargs="+", metavar="NAME [KEY=VALUE ...]",
                   help="a named variant and its overrides (repeatable); default: the config alone")
    p.add_argument("--iters", type=int, default=3, help="timed iterations per variant (the median is reported)")
    p.add_argument("--warmup", type=int, default=1)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--out", default=None, help="JSON file for the results (default: print only)")
    args = p.parse_args(argv)

    import torch

    from progsr.training.config import apply_overrides, load_config

    torch.set_num_threads(args.threads)
    base = apply_overrides(load_config(args.config), args.set)
    variants = args.variant or [["config"]]
    rows = []
    print(f"| variant | overrides | CPU s / iteration (median of {args.iters}) | wall s |")
    print("|---|---|---|---|")
    for name, *overrides in variants:
        row = {"variant": name, "overrides": overrides, **measure(apply_overrides(base, overrides), args.iters, args.warmup)}
        rows.append(row)
        print(f"| {name} | {' '.join(overrides) or '-'} | {row['cpu_s']:.2f} | {row['wall_s']:.2f} |", flush=True)
    if args.out:
        info = {"config": args.config, "set": args.set, "threads": args.threads, "torch": torch.__version__,
                "cpu": platform.processor() or platform.machine(), "cpu_count": os.cpu_count(),
                "load_average_1min": round(os.getloadavg()[0], 2) if hasattr(os, "getloadavg") else None}
        Path(args.out).write_text(json.dumps({"machine": info, "rows": rows}, indent=2) + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
