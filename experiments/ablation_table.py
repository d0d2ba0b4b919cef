"""Issue 26's ablation at equal training time: each arm's validation metrics interpolated at one time T.

    .venv/bin/python experiments/ablation_table.py experiments/runs/gan26s2_*_metrics.jsonl [--minutes 22]

T (default: the earliest last validation among the logs, so no arm is extrapolated) is training time,
validation excluded, as the logs record it. Linear between the two validations around T. Prints a
markdown table per arm and seed, then each arm's mean and the seed spread where an arm has two seeds.
"""

from __future__ import annotations

import argparse
import json
import re
from pathlib import Path

KEYS = ("psnr_x4", "lpips_x4", "psnr_x8", "lpips_x8", "grid_x8", "texture_x8", "colour_x4", "colour_x8")


def validations(path: Path) -> list[dict]:
    """The validation records of a metrics log, in time order."""
    records = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    return sorted((r for r in records if "val/psnr_x8" in r and "time" in r), key=lambda r: r["time"])


def at_time(points: list[dict], t: float) -> dict:
    """Each KEY (and the iteration) linearly interpolated at training time t."""
    for a, b in zip(points, points[1:]):
        if a["time"] <= t <= b["time"]:
            f = (t - a["time"]) / (b["time"] - a["time"])
            out = {k: a[f"val/{k}"] + f * (b[f"val/{k}"] - a[f"val/{k}"]) for k in KEYS}
            out["it"] = a["it"] + f * (b["it"] - a["it"])
            return out
    raise SystemExit(f"time {t:.0f} s is outside the validations ({points[0]['time']:.0f}-{points[-1]['time']:.0f} s)")


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("logs", nargs="+", type=Path, help="metrics logs named ...ablation_<arm>_s<seed>_metrics.jsonl")
    p.add_argument("--minutes", type=float, default=None, help="the common training time T (default: see above)")
    args = p.parse_args(argv)
    runs = {}
    for path in args.logs:
        match = re.search(r"ablation_([a-z0-9_]+?)_s(\d+)_metrics\.jsonl$", path.name)
        if not match:
            raise SystemExit(f"{path}: expected ...ablation_<arm>_s<seed>_metrics.jsonl")
        runs[match[1], int(match[2])] = validations(path)
    t = args.minutes * 60 if args.minutes else min(points[-1]["time"] for points in runs.values())
    rows = {key: at_time(points, t) for key, points in sorted(runs.items())}
    print(f"training time T = {t / 60:.1f} min\n")
    print("| arm | seed | iterations at T | x4 Y-PSNR / LPIPS | x8 Y-PSNR / LPIPS | grid x8 | texture x8 | colour x4 / x8 |")
    print("|---|---|---|---|---|---|---|---|")
    for (arm, seed), r in rows.items():
        print(f"| {arm} | {seed} | {r['it']:,.0f} | {r['psnr_x4']:.3f} / {r['lpips_x4']:.4f} | "
              f"{r['psnr_x8']:.3f} / {r['lpips_x8']:.4f} | {r['grid_x8']:.2f} | {r['texture_x8']:.2f} | "
              f"{r['colour_x4']:+.2f} / {r['colour_x8']:+.2f} |")
    arms = sorted({arm for arm, _ in rows})
    print("\n| arm | seeds | mean x4 LPIPS | mean x8 LPIPS | x8 LPIPS seed spread | mean x8 Y-PSNR |\n|---|---|---|---|---|---|")
    for arm in arms:
        mine = [r for (a, _), r in rows.items() if a == arm]
        spread = max(r["lpips_x8"] for r in mine) - min(r["lpips_x8"] for r in mine) if len(mine) > 1 else None
        print(f"| {arm} | {len(mine)} | {sum(r['lpips_x4'] for r in mine) / len(mine):.4f} | "
              f"{sum(r['lpips_x8'] for r in mine) / len(mine):.4f} | "
              f"{'-' if spread is None else f'{spread:.4f}'} | {sum(r['psnr_x8'] for r in mine) / len(mine):.3f} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
