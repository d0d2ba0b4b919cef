"""Throughput of `progsr upscale --engine ray` (1 and 2 actors) against the local engine, on this machine.

    .venv/bin/python benchmarks/ray_batch.py --images ../shared/data/train/BSD200 --count 32 --scale 4 \
        --out benchmarks/results/ray_batch_bsd200_x4.json

Each engine runs as its own `progsr upscale` process over the same files into a fresh folder, the way a
user runs it: the local engine with torch's default threads, the Ray engine starting its own local Ray
with one thread per actor. Wall time is the whole command (start-up, Ray's start included); the
summary time is the one the command prints. Every engine's outputs are checked byte-identical to the
local engine's.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # run from a checkout without installing

from PIL import Image  # noqa: E402

from progsr.formats import IMAGE_SUFFIXES  # noqa: E402


def _run(cmd: list[str]) -> tuple[float, float]:
    """(wall seconds, the summary line's seconds) of one command; exits with its output if it fails."""
    start = time.perf_counter()
    done = subprocess.run(cmd, capture_output=True, text=True)
    wall = time.perf_counter() - start
    found = re.search(r"^summary: .* in ([0-9.]+)s", done.stdout, re.M)
    if done.returncode != 0 or not found:
        raise SystemExit(f"{' '.join(cmd)} failed:\n{done.stdout[-2000:]}\n{done.stderr[-3000:]}")
    return wall, float(found[1])


def _outputs(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir()) if p.suffix.lower() in IMAGE_SUFFIXES}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--images", required=True, help="folder of photos (the first --count, sorted by name)")
    p.add_argument("--count", type=int, default=32)
    p.add_argument("--scale", type=int, default=4)
    p.add_argument("--model", default="psnr")
    p.add_argument("--actors", type=int, nargs="+", default=[1, 2])
    p.add_argument("--out", default=None, help="JSON file for the results (default: print only)")
    args = p.parse_args(argv)

    files = sorted(f for f in Path(args.images).iterdir() if f.suffix.lower() in IMAGE_SUFFIXES)[:args.count]
    if not files:
        raise SystemExit(f"{args.images}: no images")
    with tempfile.TemporaryDirectory(prefix="progsr-ray-bench-") as tmp:
        inputs = Path(tmp) / "in"
        inputs.mkdir()
        for f in files:
            shutil.copy(f, inputs / f.name)
        base = [sys.executable, "-m", "progsr.cli", "upscale", str(inputs), "--scale", str(args.scale),
                "--model", args.model]
        engines = [("local", [])] + [(f"ray, {n} actor{'s' * (n > 1)}", ["--engine", "ray", "--actors", str(n)])
                                     for n in args.actors]
        rows, reference = [], None
        for name, extra in engines:
            out = Path(tmp) / re.sub(r"\W+", "_", name)
            wall, summary = _run(base + ["-o", str(out)] + extra)
            produced = _outputs(out)
            reference = reference or produced
            rows.append({"engine": name, "images": len(files), "wall_s": round(wall, 1), "summary_s": round(summary, 1),
                         "images_per_s": round(len(files) / wall, 3), "same_bytes_as_local": produced == reference})
            print(f"{name}: {wall:.1f} s wall ({summary:.1f} s in the summary), {len(files) / wall:.3f} images/s, "
                  f"outputs identical to local: {produced == reference}", flush=True)
    local = rows[0]["images_per_s"]
    for row in rows:
        row["vs_local"] = round(row["images_per_s"] / local, 3)
    sizes = sorted({Image.open(f).size for f in files})
    result = {"command": "benchmarks/ray_batch.py " + " ".join(argv if argv is not None else sys.argv[1:]),
              "scale": args.scale, "model": args.model, "cpus": os.cpu_count(), "input_sizes": sizes[:4],
              "rows": rows}
    print("| engine | images | wall (s) | images/s | vs local | outputs = local |\n|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['engine']} | {r['images']} | {r['wall_s']} | {r['images_per_s']} | {r['vs_local']} | "
              f"{'yes' if r['same_bytes_as_local'] else 'NO'} |")
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps(result, indent=1) + "\n")
    return 0 if all(r["same_bytes_as_local"] for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
