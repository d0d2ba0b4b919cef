"""Progressive curriculum against simultaneous training of every stage: same model, data, recipe, seed and samples.

    # the runs (1 CPU thread each, both at once on a 2-core machine; about an hour each):
    .venv/bin/python benchmarks/schedule.py train --schedule progressive --seed 0 --out runs/sched
    .venv/bin/python benchmarks/schedule.py train --schedule simultaneous --seed 0 --out runs/sched
    # their validation curves into the committed data (JSON and CSV):
    .venv/bin/python benchmarks/schedule.py collect runs/sched/* --out benchmarks/results/schedule
    # the numbers and the plot, from the committed data:
    .venv/bin/python benchmarks/schedule.py report benchmarks/results/schedule.json

The runs are the x8_psnr recipe from scratch with its curriculum scaled to ITERS iterations (stage 1
alone for 1/6 of them, each next stage faded in over 1/20 and held for 7/60, the last stage to the end),
and a cosine over the whole run. `report` takes, per seed, the lower of the two schedules' final x8
validation Y-PSNR as the target and gives each schedule's training time (and samples) to reach it and
90% and 95% of its gain over bicubic (linear between validations), their ratio, the values of both at the
shorter run's final time, and the seed-to-seed spread of the final x8 value.
"""

from __future__ import annotations

import argparse
import csv
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # run from a checkout without installing

ITERS = 3600
SCALES = (2, 4, 8)
FRACTIONS = (0.9, 0.95, 1.0)  # of the lower final x8 gain over bicubic: the levels timed


def train(args) -> int:
    """Run one schedule with the scaled curriculum (progsr train, 1 thread)."""
    n = args.iters
    curriculum = {"stage1_iters": n // 6, "fade_iters": [n // 20] * 2, "stable_iters": [7 * n // 60] * 2}
    sets = {"schedule": args.schedule, "seed": args.seed, "lr_decay_iters": n, "warmup_iters": 100,
            "val_every": n // 20, "ckpt_every": n // 3, **curriculum}
    from progsr.cli import main as progsr_main

    cmd = ["train", "--config", "x8_psnr", "--threads", "1", "--iters", str(n),
           "--out", str(Path(args.out) / f"{args.schedule}_s{args.seed}")]
    for key, value in sets.items():
        cmd += ["--set", f"{key}={json.dumps(value, separators=(',', ':'))}"]
    print("progsr " + " ".join(cmd), flush=True)
    return progsr_main(cmd)


def collect(args) -> int:
    """Validation records of run folders -> {runs: [{schedule, seed, config, points}]} as JSON and CSV."""
    runs = []
    for folder in map(Path, args.runs):
        if not (folder / "config.json").is_file() or not (folder / "metrics.jsonl").is_file():
            raise SystemExit(f"{folder}: not a progsr run folder (no config.json and metrics.jsonl)")
        cfg = json.loads((folder / "config.json").read_text())
        records = [json.loads(line) for line in (folder / "metrics.jsonl").read_text().splitlines() if line]
        bicubic = next((r for r in records if "val/bicubic_x8" in r), None)
        if bicubic is None:
            raise SystemExit(f"{folder}: its metrics.jsonl has no x8 validation (was it run with --val none?)")
        points = [{"it": r["it"], "samples": r["samples"], "time_s": r["time"], "stage": r["stage"],
                   **{f"psnr_x{s}": round(r[f"val/psnr_x{s}"], 4) for s in SCALES}}
                  for r in records if "val/psnr_x8" in r and "samples" in r]
        keep = ("schedule", "seed", "iters", "batch_size", "lr", "lr_decay_iters", "stage1_iters", "fade_iters",
                "stable_iters", "ema_half_life", "generator")
        runs.append({"schedule": cfg["schedule"], "seed": cfg["seed"], "config": {k: cfg.get(k) for k in keep},
                     "bicubic": {f"psnr_x{s}": round(bicubic[f"val/bicubic_x{s}"], 4) for s in SCALES},
                     "points": points})
    runs.sort(key=lambda r: (r["seed"], r["schedule"]))
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.with_suffix(".json").write_text(json.dumps({"runs": runs}, indent=1) + "\n")
    with open(out.with_suffix(".csv"), "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["schedule", "seed", "it", "samples", "time_s", "stage"] + [f"psnr_x{s}" for s in SCALES])
        for run in runs:
            for p in run["points"]:
                writer.writerow([run["schedule"], run["seed"], p["it"], p["samples"], p["time_s"], p["stage"]]
                                + [p[f"psnr_x{s}"] for s in SCALES])
    print(f"wrote {out.with_suffix('.json')} and {out.with_suffix('.csv')} ({len(runs)} runs)")
    return 0


def value_at(points, key: str, x: str, at: float) -> float:
    """`key` linearly interpolated at `x` = `at` along the points (clamped to the last point)."""
    prev = points[0]
    for p in points:
        if p[x] >= at:
            if p[x] == prev[x]:
                return p[key]
            return prev[key] + (p[key] - prev[key]) * (at - prev[x]) / (p[x] - prev[x])
        prev = p
    return points[-1][key]


def first_reach(points, key: str, x: str, target: float) -> float | None:
    """The first `x` at which `key` reaches `target`, linear between points; None if it never does."""
    prev = None
    for p in points:
        if p[key] >= target:
            if prev is None:
                return p[x]
            return prev[x] + (p[x] - prev[x]) * (target - prev[key]) / (p[key] - prev[key])
        prev = p
    return None


def compare(prog, simul, bicubic_x8: float) -> dict:
    """Time and samples to the lower final x8 PSNR (and to 90% and 95% of its gain over bicubic, where the
    curves are steeper), their ratios, and both runs at the shorter run's final time."""
    target = min(prog["points"][-1]["psnr_x8"], simul["points"][-1]["psnr_x8"])
    row = {"seed": prog["seed"], "target_x8": target, "reach": []}
    for fraction in FRACTIONS:
        level = bicubic_x8 + fraction * (target - bicubic_x8)
        reach = {"fraction_of_gain": fraction, "x8": level}
        for name, run in (("progressive", prog), ("simultaneous", simul)):
            reach[f"{name}_time_s"] = first_reach(run["points"], "psnr_x8", "time_s", level)
            reach[f"{name}_samples"] = first_reach(run["points"], "psnr_x8", "samples", level)
        reach["time_ratio_simultaneous_over_progressive"] = reach["simultaneous_time_s"] / reach["progressive_time_s"]
        row["reach"].append(reach)
    for name, run in (("progressive", prog), ("simultaneous", simul)):
        row[f"{name}_final_time_s"] = run["points"][-1]["time_s"]
    equal = min(row["progressive_final_time_s"], row["simultaneous_final_time_s"])
    row["equal_time_s"] = equal
    for name, run in (("progressive", prog), ("simultaneous", simul)):
        for s in SCALES:
            row[f"{name}_at_equal_time_x{s}"] = value_at(run["points"], f"psnr_x{s}", "time_s", equal)
    return row


def plot(runs, path: Path) -> None:
    """x8 and x2 validation Y-PSNR against samples and training time, both schedules, every seed."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(2, 2, figsize=(11, 8), sharey="row")
    colours = {"progressive": "tab:blue", "simultaneous": "tab:orange"}
    for row, s in zip(axes, (8, 2)):
        for run in runs:
            style = "-" if run["seed"] == 0 else "--"
            label = f"{run['schedule']}, seed {run['seed']}"
            ys = [p[f"psnr_x{s}"] for p in run["points"]]
            row[0].plot([p["samples"] for p in run["points"]], ys, style, color=colours[run["schedule"]], label=label)
            row[1].plot([p["time_s"] / 60 for p in run["points"]], ys, style, color=colours[run["schedule"]], label=label)
        row[0].set_ylabel(f"validation Y-PSNR x{s} (dB)")
        row[0].set_xlabel("training samples seen")
        row[1].set_xlabel("training time, 1 CPU thread (minutes)")
        for ax in row:
            ax.grid(alpha=0.3)
            ax.legend(fontsize=8)
    fig.suptitle("progressive curriculum vs simultaneous stages (x8_psnr from scratch, held-out validation)")
    fig.tight_layout()
    fig.savefig(path, dpi=90)


def report(args) -> int:
    """Print the comparison per seed and the seed-to-seed spread, write it as JSON, draw the plot."""
    runs = json.loads(Path(args.data).read_text())["runs"]
    by = {(r["schedule"], r["seed"]): r for r in runs}
    seeds = sorted({r["seed"] for r in runs})
    rows = [compare(by["progressive", s], by["simultaneous", s], by["progressive", s]["bicubic"]["psnr_x8"])
            for s in seeds if ("progressive", s) in by and ("simultaneous", s) in by]
    spread = {}
    for name in ("progressive", "simultaneous"):
        finals = [by[name, s]["points"][-1]["psnr_x8"] for s in seeds if (name, s) in by]
        if len(finals) > 1:
            spread[name] = max(finals) - min(finals)
    print("| seed | x8 level (dB) | share of the gain over bicubic | progressive: minutes (samples) | "
          "simultaneous: minutes (samples) | simultaneous / progressive, time |")
    print("|---|---|---|---|---|---|")
    for r in rows:
        for q in r["reach"]:
            cells = [f"{q[f'{n}_time_s'] / 60:.1f} ({q[f'{n}_samples']:,.0f})" for n in ("progressive", "simultaneous")]
            print(f"| {r['seed']} | {q['x8']:.3f} | {q['fraction_of_gain']:.0%} | {cells[0]} | {cells[1]} | "
                  f"{q['time_ratio_simultaneous_over_progressive']:.2f} |")
    print()
    print("| seed | equal time (min) | progressive x2 / x4 / x8 | simultaneous x2 / x4 / x8 |")
    print("|---|---|---|---|")
    for r in rows:
        at = {n: " / ".join(f"{r[f'{n}_at_equal_time_x{s}']:.3f}" for s in SCALES) for n in ("progressive", "simultaneous")}
        print(f"| {r['seed']} | {r['equal_time_s'] / 60:.1f} | {at['progressive']} | {at['simultaneous']} |")
    for name, value in spread.items():
        print(f"seed-to-seed spread of the final x8 Y-PSNR, {name}: {value:.3f} dB")
    out = Path(args.data).with_name(Path(args.data).stem + "_report.json")
    out.write_text(json.dumps({"comparisons": rows, "final_x8_spread": spread}, indent=1) + "\n")
    plot(runs, Path(args.data).with_suffix(".png"))
    print(f"wrote {out} and {Path(args.data).with_suffix('.png')}")
    return 0


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("train", help="one run of the comparison")
    p.add_argument("--schedule", choices=("progressive", "simultaneous"), required=True)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--iters", type=int, default=ITERS)
    p.add_argument("--out", default="runs/sched")
    p = sub.add_parser("collect", help="run folders -> curve data (JSON and CSV)")
    p.add_argument("runs", nargs="+")
    p.add_argument("--out", default="benchmarks/results/schedule")
    p = sub.add_parser("report", help="curve data -> numbers and plot")
    p.add_argument("data", nargs="?", default="benchmarks/results/schedule.json")
    args = parser.parse_args(argv)
    return {"train": train, "collect": collect, "report": report}[args.command](args)


if __name__ == "__main__":
    sys.exit(main())
