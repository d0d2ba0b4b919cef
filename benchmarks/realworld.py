"""Real-world benchmark: Y-PSNR / SSIM / LPIPS of each method on HR images degraded at fixed, seeded levels.

    .venv/bin/python benchmarks/realworld.py --datasets BSD100 --scales 2 4 8 \
        --levels clean jpeg light medium heavy --methods bicubic psnr gan real --lpips --crops

Each HR image is degraded by progsr.degradations.degrade_level (the LEVELS documented there and in
benchmarks/README.md: Gaussian blur on the HR, MATLAB-bicubic downscale, colour noise seeded from the
file name, Pillow JPEG 4:2:0), upscaled by each method through Upscaler, and scored against the HR
under the benchmark protocol (Y channel, `scale` px shaved). A dataset is a folder name under the data
root, or `val` for the default validation split (the skimage photos and the held-out training images; the one to make choices on). Methods: `bicubic`, a
shipped model name (psnr, gan, real, realgan), a .safetensors file, or `auto` (the shipped models with the
clean-up control on auto, which reads the LR and the JPEG table its file would carry). Writes a markdown table, the JSON
of every value, and with --crops one side-by-side PNG per scale (LR | each method | HR).
"""

from __future__ import annotations

import argparse
import datetime
import json
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # run from a checkout without installing

RESULTS = Path(__file__).resolve().parent / "results"


def load_images(dataset: str, root, limit: int | None) -> list[tuple[str, np.ndarray]]:
    """[(name, uint8 HR)] of a dataset under the data root, of the validation split ('val'), or of its
    scikit-image photos alone ('skimage')."""
    from progsr.evaluation import data_root, dataset_files
    from progsr.protocol import read_hr
    from progsr.training.data import DEFAULT_VALIDATION, load_validation

    if dataset in ("val", "skimage"):  # the default validation split, or its five scikit-image photos alone
        images = load_validation(DEFAULT_VALIDATION if dataset == "val" else "skimage")[1]
    else:
        images = [(path.name, read_hr(path)) for path in dataset_files(data_root(root), dataset)]
    return images[:limit] if limit else images


class AutoMethod:
    """The shipped models with the clean-up control on `auto`: the strength is read from the LR's pixels and
    the JPEG table its file would carry (the level's, read back from a real Pillow file)."""

    def __init__(self, device):
        from progsr.inference import Upscaler

        self.upscaler = Upscaler("psnr", device=device, precision="fp32", clean="auto", max_pixels=None,
                                 max_output_pixels=None, backend="torch")
        self.strengths: list[float] = []

    def __call__(self, lr, s: int, table=None):
        strength, _ = self.upscaler.resolve_clean(lr, table)
        self.strengths.append(strength)
        return self.upscaler.upscale_pixels(lr, scale=s, clean=strength)


def make_methods(names, device) -> dict:
    """{label: callable(lr_u8, scale, jpeg_table) -> sr_u8} for 'bicubic', 'auto', shipped model names and files."""
    from progsr.errors import UserError
    from progsr.evaluation import BicubicMethod, GeneratorMethod
    from progsr.paths import WEIGHT_NAMES, shipped_weights

    methods = {}
    for name in names:
        if name == "auto":
            methods[name] = AutoMethod(device)
            continue
        if name == "bicubic":
            method = BicubicMethod("symmetric")
        else:
            path = shipped_weights(name) if name in WEIGHT_NAMES else Path(name)
            if not path.is_file():
                raise UserError(f"{name}: no such weights file ({path})")
            method = GeneratorMethod(path, device)
        methods[name if name in ("bicubic", *WEIGHT_NAMES) else Path(name).stem] = \
            lambda lr, s, table=None, method=method: method(lr, s)
    return methods


def centre_crop(img: np.ndarray, size: int) -> np.ndarray:
    """The size x size centre of an image (smaller images whole)."""
    h, w = img.shape[:2]
    y, x = max(0, (h - size) // 2), max(0, (w - size) // 2)
    return img[y : y + size, x : x + size]


def crop_row(lr, outputs: list[np.ndarray], hr, scale: int, size: int) -> np.ndarray:
    """One row of the crop sheet: the LR (pixels repeated) | each method's output | HR, the same centre window."""
    panels = [np.kron(centre_crop(lr, size // scale), np.ones((scale, scale, 1), np.uint8))]
    panels += [centre_crop(out, size) for out in outputs] + [centre_crop(hr, size)]
    side = min(p.shape[0] for p in panels), min(p.shape[1] for p in panels)
    gap = np.full((side[0], 4, 3), 255, np.uint8)
    parts = []
    for panel in panels:
        parts += [panel[: side[0], : side[1]], gap]
    return np.concatenate(parts[:-1], axis=1)


def run(args) -> dict:
    """Score every (dataset, scale, level, method); returns the results document."""
    import torch

    from progsr.degradations import degrade_level, level_table
    from progsr.imageio import write_image
    from progsr.metrics import build_lpips, lpips_distance, psnr, ssim

    torch.set_num_threads(args.threads)
    methods = make_methods(args.methods, "cpu")
    lpips_model = build_lpips("alex", args.backbones) if args.lpips else None
    results, sheets = {}, {}
    for dataset in args.datasets:
        images = load_images(dataset, args.data_root, args.limit)
        for s in args.scales:
            for level in args.levels:
                rows = {label: [] for label in methods}
                table = level_table(level)
                for index, (name, hr_full) in enumerate(images):
                    hr, lr = degrade_level(hr_full, s, level, name)
                    outputs = []
                    for label, method in methods.items():
                        sr = method(lr, s, table)
                        outputs.append(sr)
                        row = {"psnr": psnr(sr, hr, crop_border=s), "ssim": ssim(sr, hr, crop_border=s)}
                        if lpips_model is not None:
                            row["lpips"] = lpips_distance(sr, hr, lpips_model, crop_border=s)
                        rows[label].append(row)
                    if args.crops and index < args.crop_images and hr.ndim == 3:
                        sheets.setdefault((dataset, s), []).append(crop_row(lr, outputs, hr, s, args.crop_size))
                means = {label: {k: float(np.mean([r[k] for r in rs])) for k in rs[0]} for label, rs in rows.items()}
                if "auto" in methods:  # the strengths auto chose at this level, for the record
                    means["auto"]["strength"] = float(np.mean(methods["auto"].strengths[-len(images):]))
                results.setdefault(dataset, {}).setdefault(f"x{s}", {})[level] = means
                print(f"realworld: {dataset} x{s} {level}: " + ", ".join(
                    f"{label} {m['psnr']:.2f}" + (f"/{m['lpips']:.3f}" if "lpips" in m else "")
                    for label, m in means.items()), file=sys.stderr, flush=True)
    crops = []
    args.out.parent.mkdir(parents=True, exist_ok=True)
    for (dataset, s), rows in sheets.items():
        path = args.out.with_name(f"{args.out.stem}_{dataset}_x{s}.png")
        write_image(path, np.concatenate(rows, axis=0))
        crops.append(str(path))
    return {"methods": list(methods), "levels": args.levels, "scales": args.scales, "limit": args.limit,
            "lpips": "alex" if args.lpips else None, "crops": crops, "columns": "LR | " + " | ".join(methods) + " | HR",
            "date": datetime.datetime.now().astimezone().isoformat(timespec="seconds"), "results": results}


def format_table(doc: dict) -> str:
    """One markdown table per dataset and scale: a row per level, a column per method, Y-PSNR [/ LPIPS]."""
    lines = []
    for dataset, by_scale in doc["results"].items():
        for scale, by_level in by_scale.items():
            metric = "Y-PSNR / LPIPS-alex" if doc["lpips"] else "Y-PSNR"
            lines += [f"{dataset} {scale} ({metric})", "", "| level | " + " | ".join(doc["methods"]) + " |",
                      "|---|" + "---|" * len(doc["methods"])]
            for level, means in by_level.items():
                cells = [f"{m['psnr']:.2f}" + (f" / {m['lpips']:.3f}" if "lpips" in m else "")
                         + (f" (c {m['strength']:.2f})" if "strength" in m else "") for m in means.values()]
                lines.append(f"| {level} | " + " | ".join(cells) + " |")
            lines.append("")
    return "\n".join(lines)


def main(argv=None) -> int:
    """Parse, run, print the table and write the JSON (and crop sheets)."""
    from progsr.degradations import LEVELS
    from progsr.imageio import write_bytes_atomic

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--datasets", nargs="+", default=["BSD100"], help="dataset folders under the data root, or val")
    p.add_argument("--data-root", type=Path, default=None, help="default: $PROGSR_DATA, then ../shared/data/test")
    p.add_argument("--scales", nargs="+", type=int, default=[4])
    p.add_argument("--levels", nargs="+", default=list(LEVELS), choices=list(LEVELS))
    p.add_argument("--methods", nargs="+", default=["bicubic", "psnr", "real"])
    p.add_argument("--lpips", action="store_true", help="also LPIPS-alex on RGB (needs its backbone)")
    p.add_argument("--backbones", default=None, help="LPIPS backbone file or folder (default as benchmarks/quality.py)")
    p.add_argument("--limit", type=int, default=None, help="only the first N images of each dataset")
    p.add_argument("--crops", action="store_true", help="also write side-by-side crop sheets next to --out")
    p.add_argument("--crop-images", type=int, default=6, help="images per crop sheet (default 6)")
    p.add_argument("--crop-size", type=int, default=96, help="HR crop side in px (default 96)")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--out", type=Path, default=None, help="JSON path (default benchmarks/results/realworld-DATE.json)")
    args = p.parse_args(argv)
    args.out = args.out or RESULTS / f"realworld-{datetime.date.today().isoformat()}.json"
    doc = run(args)
    table = format_table(doc)
    print(table)
    write_bytes_atomic(args.out, (json.dumps({**doc, "table": table}, indent=1) + "\n").encode())
    print(f"realworld: wrote {args.out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    from progsr.cli import run as run_cli

    sys.exit(run_cli(main, sys.argv[1:], "realworld.py"))
