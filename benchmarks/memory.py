"""Peak memory and time of `progsr upscale` on one file, for a few input sizes and scales.

    .venv/bin/python benchmarks/memory.py --sizes 500x400:8 1500x1000:8 4000x3000:2 --threads 1

Each case writes a synthetic photo-like PNG (scikit-image's astronaut, resized) and runs `progsr upscale`
on it in a fresh process (`-o OUT.png`, the shipped psnr model or --model, CPU), recording the child's peak
resident set (ru_maxrss) and wall time. Prints a markdown table and writes JSON (--out, default
benchmarks/results/memory-<date>.json).
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def run_case(width: int, height: int, scale: int, threads: int, folder: Path, model: str | None = None) -> dict:
    """Upscale one synthetic width x height PNG by `scale` in a child process; its peak RSS and wall time."""
    import numpy as np
    from PIL import Image
    from skimage import data

    src = folder / f"in_{width}x{height}.png"
    Image.fromarray(np.asarray(data.astronaut())).resize((width, height), Image.Resampling.BICUBIC).save(src)
    out = folder / f"out_{width}x{height}_x{scale}.png"
    code = ("import resource, sys; from progsr.cli import main; rc = main(sys.argv[1:]); "
            "print('MAXRSS', resource.getrusage(resource.RUSAGE_SELF).ru_maxrss, file=sys.stderr); sys.exit(rc)")
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "PYTHONPATH": str(ROOT)}
    start = time.perf_counter()
    model_args = ["--model", model] if model else []
    proc = subprocess.run([sys.executable, "-c", code, "upscale", str(src), "-o", str(out), "--scale", str(scale),
                           "--device", "cpu", "--overwrite", *model_args], env=env, capture_output=True, text=True)
    seconds = time.perf_counter() - start
    if proc.returncode != 0:
        error = [line for line in proc.stderr.strip().splitlines() if not line.startswith("MAXRSS")] or ["no output"]
        raise SystemExit(f"memory: {width}x{height} x{scale} failed: {error[-1]}")
    peak_kb = int(next(line.split()[1] for line in proc.stderr.splitlines() if line.startswith("MAXRSS")))
    with Image.open(out) as written:  # the case measured the job it names
        if written.size != (width * scale, height * scale):
            raise SystemExit(f"memory: {width}x{height} x{scale} wrote a {written.size[0]}x{written.size[1]} image")
    out_mp = width * height * scale * scale / 1e6
    out.unlink()
    return {"input": f"{width}x{height}", "scale": scale, "model": model or "psnr", "output_mp": round(out_mp, 1),
            "peak_rss_mb": round(peak_kb / 1024), "seconds": round(seconds, 1), "threads": threads}


def main(argv=None) -> int:
    """Run the cases, print the table, write the JSON."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--sizes", nargs="+", default=["500x400:8", "1500x1000:8", "4000x3000:2"], metavar="WxH:S")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--model", default=None, help="psnr, gan or a weights path (default: the shipped psnr)")
    p.add_argument("--out", type=Path, default=None)
    args = p.parse_args(argv)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for case in args.sizes:
            size, scale = case.split(":")
            width, height = map(int, size.lower().split("x"))
            rows.append(run_case(width, height, int(scale), args.threads, Path(tmp), args.model))
            print(json.dumps(rows[-1]), flush=True)
    print("\n| input | scale | output | peak RSS | time |\n|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['input']} | x{r['scale']} | {r['output_mp']} MP | {r['peak_rss_mb']} MB | {r['seconds']} s |")
    out = args.out or ROOT / "benchmarks" / "results" / f"memory-{datetime.date.today()}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"rows": rows, "python": sys.version.split()[0]}, indent=2) + "\n")
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
