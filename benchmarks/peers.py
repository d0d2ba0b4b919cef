"""CPU speed against the small peers, in one run: progsr's whole `Upscaler.upscale` call on each backend against
the forward passes of IMDN, CARN-M and PAN at x4 and LapSRN at x8 (output megapixels per second).

    .venv/bin/python benchmarks/peers.py --sizes 128 512 --threads 2 --out benchmarks/results/peers_cpu

The peers are written here from their papers at their published sizes (randomly initialised: speed does not
depend on the weights) and timed as bare `model(x)` under inference_mode, fp32, NCHW, no tiling, no I/O:
the cheapest a user of them could get. progsr is timed as users get it: uint8 in and out, pre-pad, the
automatic tiling, blending, quantisation. Each row is the median of --repeats runs after one warm-up
(one run when a run takes over --seconds). Writes a markdown table and a JSON with the machine and load.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch
from torch import nn

# ------------------------------------------------------------------------------------------ the peers


def conv(cin, cout, k=3, groups=1):
    return nn.Conv2d(cin, cout, k, padding=k // 2, groups=groups)


class ContrastChannelAttention(nn.Module):
    """IMDN's CCA layer: channel weights from each channel's standard deviation plus mean."""

    def __init__(self, c, reduction=16):
        super().__init__()
        self.squeeze = nn.Sequential(nn.Conv2d(c, c // reduction, 1), nn.ReLU(), nn.Conv2d(c // reduction, c, 1),
                                     nn.Sigmoid())

    def forward(self, x):
        mean = x.mean(dim=(2, 3), keepdim=True)
        contrast = (x - mean).pow(2).mean(dim=(2, 3), keepdim=True).sqrt()
        return x * self.squeeze(contrast + mean)


class InformationMultiDistillationBlock(nn.Module):
    """IMDN's block: three 3x3 convs each keeping a quarter of the channels, a fourth on the rest, CCA, 1x1."""

    def __init__(self, c=64):
        super().__init__()
        self.keep, self.rest = c // 4, c - c // 4
        self.c1, self.c2, self.c3 = conv(c, c), conv(self.rest, c), conv(self.rest, c)
        self.c4, self.act = conv(self.rest, self.keep), nn.LeakyReLU(0.05)
        self.cca, self.c5 = ContrastChannelAttention(4 * self.keep), nn.Conv2d(4 * self.keep, c, 1)

    def forward(self, x):
        kept, h = [], x
        for layer in (self.c1, self.c2, self.c3):
            a, h = torch.split(self.act(layer(h)), (self.keep, self.rest), dim=1)
            kept.append(a)
        kept.append(self.c4(h))
        return self.c5(self.cca(torch.cat(kept, dim=1))) + x


class IMDN(nn.Module):
    """IMDN (Hui et al., ACM MM 2019): 64 channels, 6 blocks, sub-pixel upsampling; 715K parameters at x4."""

    def __init__(self, scale=4, c=64, blocks=6):
        super().__init__()
        self.head = conv(3, c)
        self.blocks = nn.ModuleList(InformationMultiDistillationBlock(c) for _ in range(blocks))
        self.fuse = nn.Sequential(nn.Conv2d(c * blocks, c, 1), nn.LeakyReLU(0.05), conv(c, c))
        self.tail = nn.Sequential(conv(c, 3 * scale * scale), nn.PixelShuffle(scale))

    def forward(self, x):
        h = self.head(x)
        outs, y = [], h
        for block in self.blocks:
            y = block(y)
            outs.append(y)
        return self.tail(self.fuse(torch.cat(outs, dim=1)) + h)


class EfficientResidualBlock(nn.Module):
    """CARN-M's residual block: two grouped 3x3 convs and a 1x1."""

    def __init__(self, c, groups):
        super().__init__()
        self.body = nn.Sequential(conv(c, c, groups=groups), nn.ReLU(), conv(c, c, groups=groups), nn.ReLU(),
                                  nn.Conv2d(c, c, 1))

    def forward(self, x):
        return torch.relu(self.body(x) + x)


class Cascade(nn.Module):
    """CARN's cascading: each unit's output is concatenated with all before it and fused by a 1x1 conv."""

    def __init__(self, units, c):
        super().__init__()
        self.units = nn.ModuleList(units)
        self.fuse = nn.ModuleList(nn.Sequential(nn.Conv2d(c * (k + 2), c, 1), nn.ReLU()) for k in range(len(units)))

    def forward(self, x):
        cat, o = x, x
        for unit, fuse in zip(self.units, self.fuse):
            cat = torch.cat([cat, unit(o)], dim=1)
            o = fuse(cat)
        return o


class CARNM(nn.Module):
    """CARN-M (Ahn et al., ECCV 2018): 64 channels, 3x3 cascades of grouped residual blocks; 430K parameters
    here (412K published: its upsampler's exact grouping is not given)."""

    def __init__(self, scale=4, c=64, groups=4):
        super().__init__()
        self.entry = conv(3, c)
        self.body = Cascade([Cascade([EfficientResidualBlock(c, groups) for _ in range(3)], c) for _ in range(3)], c)
        steps = [m for _ in range(int(np.log2(scale))) for m in (conv(c, 4 * c, groups=groups), nn.ReLU(),
                                                                   nn.PixelShuffle(2))]
        self.upsample = nn.Sequential(*steps)
        self.exit = conv(c, 3)

    def forward(self, x):
        return self.exit(self.upsample(self.body(self.entry(x))))


class PixelAttention(nn.Module):
    """PAN's pixel attention: a 1x1 conv and a sigmoid weigh every pixel of every channel."""

    def __init__(self, c):
        super().__init__()
        self.gate = nn.Conv2d(c, c, 1)

    def forward(self, x):
        return x * torch.sigmoid(self.gate(x))


class SelfCalibratedPA(nn.Module):
    """PAN's SC-PA block: a plain 3x3 branch and a pixel-attention branch on half the channels each."""

    def __init__(self, c=40):
        super().__init__()
        h = c // 2
        self.split_a, self.split_b = nn.Conv2d(c, h, 1, bias=False), nn.Conv2d(c, h, 1, bias=False)
        self.plain = conv(h, h, 3)
        self.attention_gate, self.attention_value, self.attention_out = nn.Conv2d(h, h, 1), conv(h, h), conv(h, h)
        self.merge, self.act = nn.Conv2d(2 * h, c, 1, bias=False), nn.LeakyReLU(0.2)

    def forward(self, x):
        a, b = self.act(self.split_a(x)), self.act(self.split_b(x))
        a = self.act(self.plain(a))
        b = self.attention_value(b) * torch.sigmoid(self.attention_gate(b))
        b = self.act(self.attention_out(b))
        return self.merge(torch.cat([a, b], dim=1)) + x


class PAN(nn.Module):
    """PAN (Zhao et al., ECCVW 2020): 40 channels, 16 SC-PA blocks, nearest + conv + PA upsampling; 272K params."""

    def __init__(self, scale=4, c=40, up_c=24, blocks=16):
        super().__init__()
        self.scale = scale
        self.head = conv(3, c)
        self.trunk = nn.Sequential(*[SelfCalibratedPA(c) for _ in range(blocks)], conv(c, c))
        act = nn.LeakyReLU(0.2)
        self.up = nn.ModuleList(nn.Sequential(conv(c if k == 0 else up_c, up_c), PixelAttention(up_c), act,
                                              conv(up_c, up_c), act) for k in range(int(np.log2(scale))))
        self.tail = conv(up_c, 3)

    def forward(self, x):
        h = self.head(x)
        h = self.trunk(h) + h
        for stage in self.up:
            h = stage(nn.functional.interpolate(h, scale_factor=2, mode="nearest"))
        base = nn.functional.interpolate(x, scale_factor=self.scale, mode="bilinear", align_corners=False)
        return self.tail(h) + base


class LapSRN(nn.Module):
    """LapSRN (Lai et al., CVPR 2017) at x8: three levels of 10 3x3 convs (64 channels) and a transposed-conv
    2x step each, on the Y channel as published; 1.3M parameters (two levels, x4: the published 0.81M)."""

    def __init__(self, levels=3, c=64, depth=10):
        super().__init__()
        act = nn.LeakyReLU(0.2)
        self.head = conv(1, c)
        self.features = nn.ModuleList(
            nn.Sequential(*[m for _ in range(depth) for m in (conv(c, c), act)],
                          nn.ConvTranspose2d(c, c, 4, stride=2, padding=1), act) for _ in range(levels))
        self.residuals = nn.ModuleList(conv(c, 1) for _ in range(levels))
        self.image_up = nn.ModuleList(nn.ConvTranspose2d(1, 1, 4, stride=2, padding=1) for _ in range(levels))

    def forward(self, y):
        f, img = self.head(y), y
        for features, residual, image_up in zip(self.features, self.residuals, self.image_up):
            f = features(f)
            img = image_up(img) + residual(f)
        return img


PEERS = {"IMDN": (IMDN, 4, 3), "CARN-M": (CARNM, 4, 3), "PAN": (PAN, 4, 3), "LapSRN": (LapSRN, 8, 1)}

# ------------------------------------------------------------------------------------------ timing


def timed(fn, repeats: int, seconds: float) -> list[float]:
    """Seconds per call: one warm-up, then up to `repeats` calls (one when a call takes over `seconds`)."""
    start = time.perf_counter()
    fn()
    if time.perf_counter() - start > seconds:
        start = time.perf_counter()
        fn()
        return [time.perf_counter() - start]
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return times


def test_image(size: int) -> np.ndarray:
    """skimage's astronaut (shipped in progsr/examples), MATLAB-bicubic resized to size x size, uint8 RGB."""
    from PIL import Image

    from progsr.paths import REPO_ROOT
    from progsr.resize import imresize

    img = np.asarray(Image.open(REPO_ROOT / "progsr" / "examples" / "astronaut.png").convert("RGB"))
    return imresize(img, size=(size, size))


def machine(threads: int) -> dict:
    """The CPU, cores, load and versions."""
    import onnxruntime

    cpu = platform.processor() or platform.machine()
    if Path("/proc/cpuinfo").is_file():
        names = [line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                 if line.startswith("model name")]
        cpu = names[0] if names else cpu
    return {"cpu": cpu, "cores": os.cpu_count(), "threads": threads, "load_average_1min": os.getloadavg()[0],
            "torch": torch.__version__, "onnxruntime": onnxruntime.__version__, "python": platform.python_version()}


def measure(args) -> dict:
    from progsr.inference import Upscaler

    torch.set_num_threads(args.threads)
    before = machine(args.threads)
    rows = []
    for size in args.sizes:
        img = test_image(size)
        for backend in args.backends:
            up = Upscaler(backend=backend, threads=args.threads, max_pixels=None, max_output_pixels=None)
            for scale in (4, 8):
                times = timed(lambda: up.upscale(img, scale=scale), args.repeats, args.seconds)  # noqa: B023
                rows.append(dict(method=f"progsr ({backend}, whole Upscaler.upscale)", size=size, scale=scale,
                                 seconds=statistics.median(times), runs=len(times)))
                print(rows[-1], flush=True)
        for name, (cls, scale, channels) in PEERS.items():
            model = cls().eval()
            x = torch.rand(1, channels, size, size)
            params = sum(p.numel() for p in model.parameters())

            def forward(model=model, x=x):
                with torch.inference_mode():
                    model(x)

            times = timed(forward, args.repeats, args.seconds)
            rows.append(dict(method=f"{name} (forward, {params / 1e3:.0f}K params)", size=size, scale=scale,
                             seconds=statistics.median(times), runs=len(times)))
            print(rows[-1], flush=True)
    for row in rows:
        row["output_mp_per_s"] = (row["size"] * row["scale"]) ** 2 / 1e6 / row["seconds"]
    after = machine(args.threads)
    after["load_average_1min"] = [before["load_average_1min"], after["load_average_1min"]]
    return {"machine": after, "date": datetime.datetime.now().isoformat(timespec="seconds"),
            "command": " ".join([Path(sys.executable).name, *sys.argv]), "rows": rows}


def markdown(result: dict) -> str:
    """The table: one row per method and scale, one column pair per input size."""
    sizes = sorted({r["size"] for r in result["rows"]})
    keys = list(dict.fromkeys((r["method"], r["scale"]) for r in result["rows"]))
    head = "| method | scale | " + " | ".join(f"{s}x{s} s | {s}x{s} output MP/s" for s in sizes) + " |"
    lines = [head, "|" + "---|" * (2 + 2 * len(sizes))]
    for method, scale in keys:
        cells = []
        for s in sizes:
            row = next((r for r in result["rows"] if (r["method"], r["scale"], r["size"]) == (method, scale, s)), None)
            cells += [f"{row['seconds']:.2f}", f"{row['output_mp_per_s']:.2f}"] if row else ["-", "-"]
        lines.append(f"| {method} | x{scale} | " + " | ".join(cells) + " |")
    m = result["machine"]
    lines.append(f"\nMachine: {m['cpu']}, {m['cores']} cores, {m['threads']} threads; torch {m['torch']}, "
                 f"onnxruntime {m['onnxruntime']}; 1-minute load average {m['load_average_1min'][0]:.2f} before, "
                 f"{m['load_average_1min'][1]:.2f} after.")
    return "\n".join(lines)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--sizes", type=int, nargs="+", default=[128, 512], help="LR input sides (default 128 512)")
    p.add_argument("--threads", type=int, default=2, help="torch and ONNX Runtime threads (default 2)")
    p.add_argument("--backends", nargs="+", default=["onnxruntime", "torch"], choices=["onnxruntime", "torch"])
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--seconds", type=float, default=15.0, help="one timed run when the warm-up takes longer")
    p.add_argument("--out", type=Path, default=None, help="write OUT.json and OUT.md")
    args = p.parse_args(argv)
    result = measure(args)
    table = markdown(result)
    print(table)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.with_suffix(".json").write_text(json.dumps(result, indent=1) + "\n")
        args.out.with_suffix(".md").write_text(table + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
