"""Y-PSNR, grid artefact, excess texture (and with --lpips LPIPS-alex) of generator weights on the held-out validation split (never a benchmark set), per scale.

    .venv/bin/python benchmarks/validate.py weights/progsr_x8_psnr.safetensors runs/a.safetensors --scales 2 4 8

The split is the training loop's (`--val skimage` by default: photos shipped with scikit-image), under the
benchmark protocol. Each file is scored through the plain forward pass (as the training loop validates)
and through Upscaler, the path users get (`--pre-pad` sets its reflection pre-pad). This is the tool for
choosing between checkpoints or recipes; benchmarks/quality.py is for the model card afterwards.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # run from a checkout without installing


def score(path: Path, val: str, scales, pre_pads, lpips: bool = False) -> dict:
    """{'forward': {x2: dB, ...}, 'upscaler_pad8': {...}, ...} for one weights file."""
    import torch

    from progsr.inference import Upscaler
    from progsr.metrics import build_lpips
    from progsr.training.data import load_validation
    from progsr.training.validation import make_validation_set, mean_scores, validate

    _, images = load_validation(val)
    val_set = make_validation_set(images, scales)
    up = Upscaler(path, device="cpu", precision="fp32", max_pixels=None, max_output_pixels=None, backend="torch")
    lpips_model = build_lpips("alex") if lpips else None
    result = {"forward": validate(up.model, val_set, torch.device("cpu"), max(scales), 1.0, lpips_model)}
    for pad in pre_pads:
        up.engine.pre_pad = pad
        result[f"upscaler_pad{pad}"] = mean_scores(((s, up.upscale_pixels(lr, scale=s), hr) for s, hr, lr in val_set),
                                                   lpips_model)
    return result


def main(argv=None) -> int:
    """Score each weights file; print a table and the JSON."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("weights", nargs="+", type=Path)
    p.add_argument("--val", default="default", help="'default' (the training loop's split: the skimage photos and the "
                   "held-out training images), 'skimage' or an HR folder that is no benchmark set")
    p.add_argument("--scales", nargs="+", type=int, default=[2, 4, 8])
    p.add_argument("--pre-pad", nargs="*", type=int, default=[8], dest="pre_pads",
                   help="Upscaler pre-pads to score (default: 8; the shipped default, 0, is the forward pass)")
    p.add_argument("--lpips", action="store_true", help="also LPIPS-alex on RGB (shave = scale), as the benchmark")
    args = p.parse_args(argv)
    results = {str(w): score(w, args.val, args.scales, args.pre_pads, args.lpips) for w in args.weights}
    def cell(v, s):
        lpips = f" / {v[f'val/lpips_x{s}']:.4f}" if args.lpips else ""
        return f"{v[f'val/psnr_x{s}']:.3f}{lpips} / {v[f'val/grid_x{s}']:.2f} / {v[f'val/texture_x{s}']:.3f}"

    head = " PSNR" + (" / LPIPS" if args.lpips else "") + " / grid / texture"
    print("| weights | path | " + " | ".join(f"x{s}{head}" for s in args.scales) + " |")
    print("|---|---|" + "---|" * len(args.scales))
    for name, by_path in results.items():
        for how, values in by_path.items():
            print(f"| {Path(name).name} | {how} | " + " | ".join(cell(values, s) for s in args.scales) + " |")
    print(json.dumps(results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
