"""Which clean-up strength is best at each degradation level, on the validation split (issue 30).

    OMP_NUM_THREADS=1 .venv/bin/python experiments/calibrate_clean.py REAL.safetensors --scales 4 8 > out.json

Blends the shipped PSNR weights with REAL at c = 0, 0.25, ..., 1 (the clean-up control) and scores Y-PSNR
and LPIPS-alex per level of progsr.degradations.LEVELS, beside the strength `auto` picks for those inputs.
"""

import argparse
import json
import os
import shutil
import sys
import tempfile
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))


def main() -> int:
    from progsr.degradations import LEVELS, degrade_level, level_table
    from progsr.inference import Upscaler
    from progsr.metrics import build_lpips, lpips_distance, psnr
    from progsr.paths import shipped_weights
    from progsr.training.data import load_validation

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("real", type=Path)
    p.add_argument("--val", default="default")
    p.add_argument("--scales", type=int, nargs="+", default=[4])
    p.add_argument("--strengths", type=float, nargs="+", default=[0, 0.25, 0.5, 0.75, 1])
    args = p.parse_args()
    folder = Path(tempfile.mkdtemp(prefix="calibrate-"))
    shutil.copy(shipped_weights("psnr"), folder / "progsr_x8_psnr.safetensors")
    shutil.copy(args.real, folder / "progsr_x8_real.safetensors")
    os.environ["PROGSR_WEIGHTS"] = str(folder)
    up = Upscaler("psnr", device="cpu", precision="fp32", max_pixels=None, max_output_pixels=None)
    lpips_model = build_lpips("alex")
    _, images = load_validation(args.val)
    out = {"val": args.val, "real": str(args.real), "results": {}}
    for s in args.scales:
        for level in LEVELS:
            rows = {c: [] for c in args.strengths}
            autos = []
            for name, hr_full in images:
                hr, lr = degrade_level(hr_full, s, level, name)
                autos.append(up.resolve_clean(lr, level_table(level))[0] if up.clean == "auto" else 0)
                for c in args.strengths:
                    sr = up.upscale_pixels(lr, scale=s, clean=c)
                    rows[c].append((psnr(sr, hr, crop_border=s), lpips_distance(sr, hr, lpips_model, crop_border=s)))
            table = {str(c): [round(float(np.mean([r[0] for r in v])), 3), round(float(np.mean([r[1] for r in v])), 4)]
                     for c, v in rows.items()}
            out["results"][f"x{s} {level}"] = {"auto": round(float(np.mean(autos)), 3), "by_strength": table}
            print(f"x{s} {level}: auto {np.mean(autos):.2f}; " + ", ".join(f"c={c}: {v[0]:.2f}/{v[1]:.3f}"
                                                                          for c, v in table.items()), file=sys.stderr)
    shutil.rmtree(folder, ignore_errors=True)
    print(json.dumps(out, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
