"""The standard SR benchmark protocol: `progsr bench` and benchmarks/quality.py.

For each dataset (a folder of HR images under the data root) and each scale s: modcrop the HR to a
multiple of s, make the LR with MATLAB bicubic (antialiased) from the uint8 HR, upscale it with the
method (MATLAB bicubic, or a progsr generator), and measure PSNR / SSIM on the Y channel (BT.601 studio
swing; raw grey levels for grey images) and optionally LPIPS on RGB, all shaving s pixels at every
border. Prints a markdown table and writes every per-image value to a JSON file.
"""

from __future__ import annotations

import argparse
import datetime
import importlib.metadata
import json
import os
import platform
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from progsr.errors import UserError
from progsr.formats import IMAGE_SUFFIXES
from progsr.imageio import atomic_output
from progsr.metrics import LPIPS_MIN_SIDE, SSIM_MODES, lpips_distance, psnr, ssim
from progsr.paths import REPO_ROOT
from progsr.protocol import PROTOCOL, make_lr, read_hr
from progsr.resize import PADDINGS, imresize, modcrop

KNOWN_DATASETS = ("Set5", "Set14", "BSD100", "Urban100", "Manga109", "DIV2K")


@dataclass
class BenchConfig:
    """What to benchmark and where to find it."""

    method: str = "bicubic"  # "bicubic" or a path to progsr generator weights (.safetensors)
    datasets: tuple[str, ...] = ("Set5", "Set14", "BSD100")
    scales: tuple[int, ...] = (2, 4, 8)
    data_root: Path | None = None  # None: $PROGSR_DATA, then ../shared/data/test
    lpips: bool = False
    lpips_net: str = "alex"
    backbones: Path | None = None  # LPIPS backbone file/folder; None: $PROGSR_BACKBONES, ../shared, torchvision
    padding: str = "symmetric"  # imresize border handling for the LR (and the bicubic method)
    ssim_mode: str = "valid"  # "valid" (ssim_index.m, BasicSR) or "same" (MATLAB's built-in ssim())
    device: str = "auto"
    out: Path | None = None  # None: benchmarks/results/<method>-<date>.json


# ----------------------------------------------------------------------------------------------- data


def data_root(root=None) -> Path:
    """The benchmark data folder: `root`, else $PROGSR_DATA, else ../shared/data/test; a UserError if none."""
    from progsr.paths import shared_dir

    root = root or os.environ.get("PROGSR_DATA")
    if not root and shared_dir() is not None and (shared_dir() / "data" / "test").is_dir():
        root = shared_dir() / "data" / "test"  # the dev data beside the checkout (../shared or $PROGSR_SHARED)
    if not root:
        raise UserError("no data folder: pass --data-root DIR or set PROGSR_DATA (a folder holding Set5/, Set14/, ...)")
    root = Path(root).expanduser()
    if not root.is_dir():
        raise UserError(f"{root}: data root is not a folder")
    return root


def _images_in(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)


def dataset_files(root: Path, name: str) -> list[Path]:
    """The HR image files of dataset `name`: <root>/<name>/*, or <root>/<name>/HR/* (benchmark-package layout)."""
    folder = root / name
    if not folder.is_dir():
        available = sorted(p.name for p in root.iterdir() if p.is_dir())
        shown = ", ".join(available[:8]) + (f", ... ({len(available)} in all)" if len(available) > 8 else "")
        raise UserError(f"{folder}: dataset folder not found (folders in {root}: {shown or 'none'})")
    files = _images_in(folder)
    if not files and (folder / "HR").is_dir():
        files = _images_in(folder / "HR")
    if not files:
        raise UserError(f"{folder}: no images in dataset folder (looked for {', '.join(sorted(IMAGE_SUFFIXES))})")
    return files


# ---------------------------------------------------------------------------------------------- methods


class BicubicMethod:
    """MATLAB bicubic upscaling of the uint8 LR."""

    name = "bicubic"

    def __init__(self, padding: str):
        self.padding = padding

    def check_scale(self, s: int) -> None:
        pass

    def describe(self) -> dict:
        return {"name": "bicubic", "upscaler": f"MATLAB imresize(LR, s, 'bicubic'), uint8, {self.padding} padding"}

    def __call__(self, lr: np.ndarray, s: int) -> np.ndarray:
        return imresize(lr, scale=s, padding=self.padding)


class GeneratorMethod:
    """A progsr generator from a .safetensors file, run exactly as users get it: through Upscaler (pre-pad, tiles)."""

    def __init__(self, path: Path, device):
        from progsr.inference import Upscaler

        self.path = path
        self.device = device
        # torch: the published tables were made with it (ONNX Runtime agrees within one level, tests/test_ort_backend.py)
        self.upscaler = Upscaler(path, device=device, precision="fp32", max_pixels=None, max_output_pixels=None,
                                 backend="torch")
        self.model, self.metadata = self.upscaler.model, self.upscaler.metadata
        self.name = path.stem

    def check_scale(self, s: int) -> None:
        supported = list(self.model.config.scales)
        if s not in supported:
            raise UserError(f"{self.path}: this generator upscales by {supported}, not x{s}")

    def describe(self) -> dict:
        return {"name": self.name, "weights": str(self.path), "metadata": self.metadata}

    def __call__(self, lr: np.ndarray, s: int) -> np.ndarray:
        out = self.upscaler.upscale_pixels(lr, scale=s)
        expected = (lr.shape[0] * s, lr.shape[1] * s)
        if out.shape[:2] != expected:
            raise UserError(f"{self.path}: the generator returned {out.shape[:2]} for x{s}, expected {expected}")
        return out


def make_method(cfg: BenchConfig, device):
    """The upscaler named by --method."""
    if cfg.method == "bicubic":
        return BicubicMethod(cfg.padding)
    path = Path(cfg.method).expanduser()
    if not path.is_file():
        raise UserError(f"{path}: --method must be 'bicubic' or a progsr generator weights file; no such file")
    return GeneratorMethod(path, device)


# -------------------------------------------------------------------------------------------- benchmark


def _git_state() -> tuple[str, bool | None]:
    """(commit, dirty) of the checkout holding progsr, or ("unknown", None) outside one."""
    try:
        run = lambda *args: subprocess.run(  # noqa: E731
            ["git", *args], cwd=REPO_ROOT, capture_output=True, text=True, timeout=20, check=True
        ).stdout.strip()
        return run("rev-parse", "HEAD"), bool(run("status", "--porcelain", "--untracked-files=no"))
    except (OSError, subprocess.SubprocessError):
        return "unknown", None


def _versions() -> dict:
    versions = {"python": platform.python_version()}
    for dist in ("progsr", "numpy", "torch", "torchvision", "scikit-image", "lpips", "Pillow"):
        try:
            versions[dist] = importlib.metadata.version(dist)
        except importlib.metadata.PackageNotFoundError:
            versions[dist] = None
    return versions


def _check_size(path: Path, hr: np.ndarray, s: int, lpips_net: str | None) -> None:
    h, w = hr.shape[:2]
    need = 2 * s + max(11, LPIPS_MIN_SIDE[lpips_net] if lpips_net else 0)  # after the shave: one SSIM window (11 px) / LPIPS
    if min(h, w) < need:
        raise UserError(f"{path}: {w}x{h} is too small for x{s} (each side needs at least {need} px)")


def run_benchmark(cfg: BenchConfig) -> dict:
    """Run the protocol over every dataset and scale; returns the results document (written as JSON)."""
    from tqdm import tqdm

    root = data_root(cfg.data_root)
    tty = sys.stderr.isatty()  # a bar on a terminal; a log gets one plain line per dataset and scale
    scales = sorted(set(cfg.scales))
    if not scales or min(scales) < 2:
        raise UserError(f"--scales must be integers >= 2, got {list(cfg.scales)}")
    if cfg.padding not in PADDINGS:
        raise UserError(f"--padding must be one of {PADDINGS}, got '{cfg.padding}'")
    files = {name: dataset_files(root, name) for name in cfg.datasets}
    for paths in files.values():  # fail on a bad image now, not after an hour of work
        for path in tqdm(paths, desc="checking images", unit="img", leave=False, dynamic_ncols=True, disable=not tty):
            hr = read_hr(path)
            for s in scales:
                _check_size(path, modcrop(hr, s), s, cfg.lpips_net if cfg.lpips else None)
    from progsr.devices import resolve_device

    device = resolve_device(cfg.device)
    method = make_method(cfg, device)
    for s in scales:
        method.check_scale(s)
    lpips_model = None
    if cfg.lpips:
        from progsr.metrics import build_lpips

        lpips_model = build_lpips(cfg.lpips_net, cfg.backbones, device=device)

    results = {}
    total = sum(len(paths) for paths in files.values()) * len(scales)
    with tqdm(total=total, unit="img", desc="bench", dynamic_ncols=True, disable=not tty) as bar:
        for name, paths in files.items():
            results[name] = {f"x{s}": {"mean": {}, "images": {}} for s in scales}
            for path in paths:
                hr_full = read_hr(path)
                for s in scales:
                    bar.set_description(f"{name} x{s}")
                    hr, lr = make_lr(hr_full, s, cfg.padding)
                    sr = method(lr, s)
                    row = {"psnr": psnr(sr, hr, crop_border=s), "ssim": ssim(sr, hr, crop_border=s, mode=cfg.ssim_mode)}
                    if lpips_model is not None:
                        row["lpips"] = lpips_distance(sr, hr, lpips_model, crop_border=s)
                    results[name][f"x{s}"]["images"][path.name] = row
                    bar.update(1)
            for key, entry in results[name].items():
                rows = list(entry["images"].values())
                entry["mean"] = {k: float(np.mean([r[k] for r in rows])) for k in rows[0]}
                if not tty:
                    print(f"bench: {name} {key}: " + ", ".join(f"{k} {v:.4f}" for k, v in entry["mean"].items()),
                          file=sys.stderr, flush=True)

    commit, dirty = _git_state()
    return {
        "method": method.describe(),
        "settings": {
            "protocol": PROTOCOL,
            "channel": "Y (ITU-R BT.601 studio swing, 0-255); grey images: raw grey levels",
            "crop_border": "scale",
            "padding": cfg.padding,
            "ssim_mode": cfg.ssim_mode,
            "scales": scales,
            "data_root": str(root.resolve()),
            "datasets": {name: {"folder": str(paths[0].parent), "images": len(paths)} for name, paths in files.items()},
            "lpips": None if lpips_model is None else {
                "net": cfg.lpips_net, "version": "0.1", "channel": "RGB", "backbone": lpips_model.backbone_source,
            },
            "device": str(device),
        },
        "versions": _versions(),
        "git_commit": commit,
        "git_dirty": dirty,
        "date": datetime.datetime.now().astimezone().isoformat(timespec="seconds"),
        "results": results,
    }


# ----------------------------------------------------------------------------------------------- output


def format_table(doc: dict) -> str:
    """Markdown table, one row per scale and one column per dataset: Y-PSNR / SSIM [/ LPIPS]."""
    results = doc["results"]
    with_lpips = doc["settings"]["lpips"] is not None
    ssim_mode = doc["settings"]["ssim_mode"]
    metric = "Y-PSNR (dB) / Y-SSIM" + ("" if ssim_mode == "valid" else f" ({ssim_mode})") + (f" / LPIPS-{doc['settings']['lpips']['net']} (RGB)" if with_lpips else "")
    lines = [
        f"{doc['method']['name']}: {metric}, shave = scale px, {doc['settings']['padding']} padding",
        "",
        "| Scale | " + " | ".join(f"{name} ({doc['settings']['datasets'][name]['images']})" for name in results) + " |",
        "|---" * (len(results) + 1) + "|",
    ]
    for s in doc["settings"]["scales"]:
        cells = []
        for name in results:
            m = results[name][f"x{s}"]["mean"]
            cells.append(f"{m['psnr']:.2f} / {m['ssim']:.4f}" + (f" / {m['lpips']:.4f}" if with_lpips else ""))
        lines.append(f"| x{s} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def default_out_path(method_name: str) -> Path:
    """benchmarks/results/<method>-<date>.json in a checkout, else ./progsr-results/ in the current folder."""
    folder = REPO_ROOT / "benchmarks" / "results" if (REPO_ROOT / "benchmarks").is_dir() else Path.cwd() / "progsr-results"
    stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
    return folder / f"{method_name}-{stamp}.json"


def write_json(doc: dict, path: Path) -> None:
    """Write `doc` to `path` atomically (temp file in the same folder, then os.replace)."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with atomic_output(path) as tmp, open(tmp, "x", encoding="utf-8") as f:
            json.dump(doc, f, indent=2)
            f.write("\n")
    except OSError as err:
        raise UserError(f"{path}: cannot write results ({err.strerror or err})") from None


def _parse_args(argv) -> BenchConfig:
    p = argparse.ArgumentParser(
        prog="progsr bench",
        description="PSNR / SSIM (Y channel) and optional LPIPS under the standard SR protocol.",
    )
    p.add_argument("--method", default="bicubic", help="'bicubic' or a progsr generator .safetensors file")
    p.add_argument("--datasets", nargs="+", default=["Set5", "Set14", "BSD100"], metavar="NAME",
                   help=f"folders under --data-root, e.g. {' '.join(KNOWN_DATASETS)}")
    p.add_argument("--scales", nargs="+", type=int, default=[2, 4, 8], metavar="S")
    p.add_argument("--data-root", type=Path, default=None,
                   help="folder holding the datasets (default: $PROGSR_DATA, then ../shared/data/test)")
    p.add_argument("--lpips", action="store_true", help="also measure LPIPS (RGB)")
    p.add_argument("--lpips-net", choices=["alex", "vgg"], default="alex")
    p.add_argument("--backbones", type=Path, default=None,
                   help="LPIPS backbone .safetensors or a folder holding them (default: $PROGSR_BACKBONES, "
                        "then torchvision's cache/download)")
    p.add_argument("--padding", choices=list(PADDINGS), default="symmetric",
                   help="imresize border handling (symmetric: modern MATLAB; replicate: older MATLAB)")
    p.add_argument("--ssim-mode", choices=list(SSIM_MODES), default="valid",
                   help="valid: average where the window fits (ssim_index.m, BasicSR; the standard); "
                        "same: MATLAB's built-in ssim(), replicate-padded (LapSRN's code, the published x8 rows)")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:1, ...")
    p.add_argument("--out", type=Path, default=None,
                   help="results JSON (default: benchmarks/results/<method>-<date>.json)")
    a = p.parse_args(argv)
    return BenchConfig(method=a.method, datasets=tuple(a.datasets), scales=tuple(a.scales), data_root=a.data_root,
                       lpips=a.lpips, lpips_net=a.lpips_net, backbones=a.backbones, padding=a.padding,
                       ssim_mode=a.ssim_mode, device=a.device, out=a.out)


def main(argv: list[str] | None = None) -> int:
    """`progsr bench`: run the benchmark, print the markdown table, write the JSON."""
    cfg = _parse_args(sys.argv[1:] if argv is None else argv)
    doc = run_benchmark(cfg)
    out = cfg.out or default_out_path(doc["method"]["name"])
    write_json(doc, out)
    print(format_table(doc))
    print(f"\nper-image results: {out}")
    return 0
