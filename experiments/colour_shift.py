"""Issue 26's measurement: mean colour of a GAN's output (the shipped one, or the weights file given) against the PSNR
model's and the HR, default validation split.

    OMP_NUM_THREADS=1 .venv/bin/python experiments/colour_shift.py [GAN.safetensors] > experiments/runs/gan_colour_shift_val.json
"""
import json
import sys

import numpy as np
from progsr.inference import Upscaler
from progsr.training.data import DEFAULT_VALIDATION, load_validation
from progsr.training.validation import make_validation_set
name, images = load_validation(DEFAULT_VALIDATION)
options = dict(device="cpu", precision="fp32", max_pixels=None, max_output_pixels=None)
gan = sys.argv[1] if len(sys.argv) > 1 else "gan"
ups = {"psnr": Upscaler("psnr", clean=0, **options), "gan": Upscaler(gan, **options) if gan != "gan" else Upscaler("gan", clean=0, **options)}
out = {"split": name, "gan": gan}
for s in (4, 8):
    diffs, vs_hr = [], {m: [] for m in ups}
    for sc, hr, lr in make_validation_set(images, [s]):
        res = {m: up.upscale_pixels(lr, scale=s, clean=0 if up.blends else None).astype(np.float64) for m, up in ups.items()}
        diffs.append(res["gan"].mean(axis=(0, 1)) - res["psnr"].mean(axis=(0, 1)))
        for m in ups:
            vs_hr[m].append(res[m].mean(axis=(0, 1)) - hr.astype(np.float64).mean(axis=(0, 1)))
    d = np.array(diffs)
    out[f"x{s}"] = {"gan_minus_psnr_mean_rgb": d.mean(0).round(3).tolist(), "worst_image_abs_max": float(np.abs(d).max().round(3)),
                    **{f"{m}_minus_hr_mean_rgb": np.mean(v, 0).round(3).tolist() for m, v in vs_hr.items()}}
print(json.dumps(out, indent=1))
