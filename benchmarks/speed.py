"""Speed of progsr.inference.Upscaler: ms per image, output megapixels/s and peak memory, with bicubic as reference.

    .venv/bin/python benchmarks/speed.py --devices cpu --sizes 64 128 256 --scales 2 4 8 --tiles 0 128

Each row times `Upscaler.upscale_pixels` on a uint8 RGB image (pre-pad, tiling, blending, quantisation;
no file I/O) after one warm-up run, as the median of up to --repeats runs (fewer when a run is slow, see
--seconds). `--backends torch onnx` adds rows (method `onnx`) where ONNX Runtime runs the same network (the bundled
weightless graphs, fed the same weights) inside the same Upscaler. `tile 0` is the automatic choice (the
whole image when it fits in memory). Peak memory is the
process's peak resident set (VmHWM, reset before each row through /proc/self/clear_refs) on the CPU and
torch.cuda.max_memory_allocated on CUDA. The bicubic rows time progsr.resize.imresize (MATLAB bicubic) on
the same input: numpy uint8 on the CPU, torch float on CUDA.

--model defaults to the shipped psnr weights; without them a randomly initialised default GeneratorConfig
is timed (same architecture, so the same speed) and the output says so. Writes a markdown table and a JSON
file (--out, default benchmarks/results/speed-<devices>-<date>.{md,json}).
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import resource
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # run from a checkout without installing

import numpy as np  # noqa: E402
import torch  # noqa: E402

from progsr.cli import run  # noqa: E402
from progsr.pixels import u8_to_tensor  # noqa: E402


def _reset_peak_rss() -> bool:
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")  # resets VmHWM to the current RSS (Linux >= 4.0)
        return True
    except OSError:
        return False


def _peak_rss_mib() -> float:
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # lifetime peak (KiB on Linux)


class PeakMemory:
    """Peak memory of a block: resident set on the CPU, allocated tensor memory on CUDA (MiB)."""

    def __init__(self, device: torch.device):
        self.device, self.mib, self.kind = device, 0.0, "cuda max_memory_allocated" if device.type == "cuda" else "RSS"

    def __enter__(self):
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            torch.cuda.reset_peak_memory_stats(self.device)
        elif not _reset_peak_rss():
            self.kind = "RSS (process lifetime peak)"
        return self

    def __exit__(self, *exc):
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            self.mib = torch.cuda.max_memory_allocated(self.device) / 2**20
        else:
            self.mib = _peak_rss_mib()


def timed(fn, repeats: int, seconds: float, device: torch.device) -> list[float]:
    """Seconds per call: one warm-up call, then up to `repeats` calls or until `seconds` have passed."""

    def once():
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        start = time.perf_counter()
        fn()
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        return time.perf_counter() - start

    once()
    times = []
    deadline = time.perf_counter() + seconds
    while len(times) < repeats and (not times or time.perf_counter() < deadline):
        times.append(once())
    return times


def test_image(size: int) -> np.ndarray:
    """A natural size x size RGB uint8 image (skimage's astronaut, MATLAB-bicubic resized)."""
    from skimage import data

    from progsr.resize import imresize

    return imresize(data.astronaut(), size=(size, size))


def model_path(arg: str | None, workdir: Path) -> tuple[str, str]:
    """(path, description) of the generator to time."""
    from progsr.models import GeneratorConfig, ProgressiveGenerator, save_generator
    from progsr.paths import shipped_weights

    if arg:
        return arg, arg
    shipped = shipped_weights("psnr")
    if shipped.is_file():
        return str(shipped), f"shipped psnr weights ({shipped.name})"
    torch.manual_seed(0)
    path = workdir / "random_default.safetensors"
    save_generator(ProgressiveGenerator(GeneratorConfig()), path)
    return str(path), (f"randomly initialised default GeneratorConfig {GeneratorConfig()} "
                       "(no shipped weights; the same architecture runs at the same speed)")


def machine_info() -> dict:
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next((line.split(":", 1)[1].strip() for line in f if line.startswith("model name")), cpu)
    except OSError:
        pass
    info = {"cpu": cpu, "cpu_count": os.cpu_count(), "torch_threads": torch.get_num_threads(),
            "torch": torch.__version__, "python": platform.python_version(), "platform": platform.platform()}
    if torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name(0)
    if hasattr(os, "getloadavg"):
        info["load_average_1min"] = round(os.getloadavg()[0], 2)  # other work on a shared machine skews timings
    return info


def measure(args) -> dict:
    from progsr.inference import DEFAULT_PRE_PAD, Upscaler
    from progsr.resize import imresize

    devices = ["cpu", "cuda"] if args.devices == ["all"] else args.devices
    devices = [d for d in devices if d == "cpu" or torch.cuda.is_available()]
    rows = []
    before = machine_info()
    with tempfile.TemporaryDirectory() as tmp:
        path, description = model_path(args.model, Path(tmp))
        print(f"model: {description}", flush=True)
        for device_name in devices:
            device = torch.device(device_name)
            precisions = args.precisions or (["fp32"] if device.type == "cpu" else ["bf16", "fp16"])
            for size in args.sizes:
                img = test_image(size)
                for scale in args.scales:
                    out_mp = (size * scale) ** 2 / 1e6
                    if device.type == "cpu":
                        bicubic = lambda: imresize(img, scale=scale)  # noqa: E731
                    else:
                        x = u8_to_tensor(img, device)
                        bicubic = lambda: imresize(x, scale=scale)  # noqa: E731
                    with PeakMemory(device) as mem:
                        times = timed(bicubic, args.repeats, args.seconds, device)
                    rows.append(dict(device=device_name, method="bicubic", precision="fp64" if device.type == "cpu"
                                     else "fp32", size=size, scale=scale, tile="-", tiles=1,
                                     ms=1000 * statistics.median(times), runs=len(times), out_mp=out_mp,
                                     peak_mib=mem.mib, memory=mem.kind))
                    _print_row(rows[-1])
                    runs = [("progsr", p, "torch") for p in precisions] if "torch" in args.backends else []
                    if "onnx" in args.backends and device.type == "cpu":
                        runs.append(("onnx", "fp32", "onnxruntime"))
                    for method, precision, backend in runs:
                        for tile in args.tiles:
                            if tile and tile >= size + 2 * DEFAULT_PRE_PAD:
                                continue  # one tile covers the pre-padded image: same as the automatic choice
                            up = Upscaler(path, device=device_name, precision=precision, tile=tile or None,
                                          max_pixels=None, compile=args.compile and method == "progsr",
                                          backend=backend)
                            counts = []
                            fn = lambda: up.upscale_pixels(img, scale, progress=lambda d, t: counts.append(t))  # noqa: E731
                            with PeakMemory(device) as mem:
                                times = timed(fn, args.repeats, args.seconds, device)
                            rows.append(dict(device=device_name, method=method, precision=precision, size=size,
                                             scale=scale, tile=tile or "auto", tiles=counts[-1] if counts else 1,
                                             ms=1000 * statistics.median(times), runs=len(times), out_mp=out_mp,
                                             peak_mib=mem.mib, memory=mem.kind))
                            _print_row(rows[-1])
                            up = fn = None  # free the model before the next one loads
                            if device.type == "cuda":
                                torch.cuda.empty_cache()
    machine = machine_info()
    machine["load_average_1min"] = [before.get("load_average_1min"), machine.get("load_average_1min")]
    return {"model": description, "machine": machine, "date": datetime.datetime.now().isoformat(timespec="seconds"),
            "command": " ".join([Path(sys.executable).name, *sys.argv]), "rows": rows}


def _print_row(row: dict) -> None:
    print(f"{row['device']:>4} {row['method']:>7} {row['precision']:>4} {row['size']:>4}px x{row['scale']} "
          f"tile={row['tile']!s:>4} ({row['tiles']} tiles): {row['ms']:9.1f} ms, "
          f"{row['out_mp'] / row['ms'] * 1000:7.2f} MP/s, peak {row['peak_mib']:.0f} MiB", flush=True)


def markdown(result: dict) -> str:
    """The rows as a markdown table, with the model and machine above it."""
    m = result["machine"]
    lines = [f"Model: {result['model']}.", "",
             f"Machine: {m['cpu']}, {m['cpu_count']} cores, torch {m['torch']} with {m['torch_threads']} threads"
             + (f", {m['gpu']}" if "gpu" in m else "")
             + (f"; 1-minute load average {m['load_average_1min'][0]} before, {m['load_average_1min'][1]} after"
                if m.get("load_average_1min") else "") + ".", "",
             "| device | method | precision | input | scale | output | tile | tiles | ms / image | output MP/s | peak memory (MiB) |",
             "|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in result["rows"]:
        side = r["size"] * r["scale"]
        lines.append(f"| {r['device']} | {r['method']} | {r['precision']} | {r['size']}x{r['size']} | x{r['scale']} | "
                     f"{side}x{side} | {r['tile']} | {r['tiles']} | {r['ms']:.1f} | {r['out_mp'] / r['ms'] * 1000:.2f} | "
                     f"{r['peak_mib']:.0f} |")
    kinds = sorted({r["memory"] for r in result["rows"]})
    lines += ["", f"Peak memory: {', '.join(kinds)}."]
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--devices", nargs="+", default=["all"], help="cpu, cuda or all (cuda only where available)")
    p.add_argument("--sizes", nargs="+", type=int, default=[64, 128, 256], help="square input sizes in pixels")
    p.add_argument("--scales", nargs="+", type=int, default=[2, 4, 8])
    p.add_argument("--tiles", nargs="+", type=int, default=[0, 128],
                   help="tile sizes; 0 = automatic (tiles must be at least twice the model's default overlap)")
    p.add_argument("--precisions", nargs="+", default=None,
                   help="fp32/bf16/fp16 (default: fp32 on CPU, bf16 and fp16 on CUDA)")
    p.add_argument("--repeats", type=int, default=3, help="timed runs per row at most (after one warm-up)")
    p.add_argument("--seconds", type=float, default=10.0, help="stop repeating a row after this long")
    p.add_argument("--model", default=None, help="generator .safetensors (default: shipped psnr, else random init)")
    p.add_argument("--compile", action="store_true", help="torch.compile the model")
    p.add_argument("--backends", nargs="+", default=["torch"], choices=["torch", "onnx"],
                   help="run the network in torch and/or ONNX Runtime (CPU rows only; the 'onnx' method)")
    p.add_argument("--out", default=None, help="output path without suffix (writes .md and .json)")
    args = p.parse_args(argv)
    result = measure(args)
    table = markdown(result)
    print("\n" + table)
    stem = args.out or f"benchmarks/results/speed-{'-'.join(args.devices)}-{datetime.date.today().isoformat()}"
    Path(stem).parent.mkdir(parents=True, exist_ok=True)
    Path(stem + ".md").write_text(table)
    Path(stem + ".json").write_text(json.dumps(result, indent=1) + "\n")
    print(f"wrote {stem}.md and {stem}.json")
    return 0


if __name__ == "__main__":
    sys.exit(run(main, sys.argv[1:], "speed.py"))
