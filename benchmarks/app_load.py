"""Load test of the web app: N concurrent gradio_client users on localhost, each making R upscale requests.

Starts `progsr app` as a subprocess on a free localhost port, runs the clients in threads, checks every
result (output file present, right size), then stops the server. Reports request latency percentiles
(submit -> last output received: upload, queue wait, compute, download), throughput and the server's
peak resident memory (VmHWM from /proc, so Linux only). Exits 1 if any request failed.

    .venv/bin/python benchmarks/app_load.py --clients 8 --requests 3 --size 128 --scale 4

--model defaults to the shipped psnr weights, or a tiny random generator when none are installed
(then the numbers measure the app's own overhead: upload, queue, encoding, download).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # run from a checkout without installing

import numpy as np  # noqa: E402
from PIL import Image  # noqa: E402

HOST = "127.0.0.1"  # never anything else: this must not load a public server


def tiny_model(folder: Path) -> str:
    """A tiny random generator for when no shipped weights exist."""
    import torch

    from progsr.models import ProgressiveGenerator, save_generator, tiny_config

    torch.manual_seed(0)
    return str(save_generator(ProgressiveGenerator(tiny_config()), folder / "tiny.safetensors"))


def peak_rss_mb(pid: int) -> float:
    """The process's peak resident set size (VmHWM) in MiB."""
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    raise RuntimeError("no VmHWM in /proc status")


def wait_until_up(url: str, server: subprocess.Popen, timeout: float) -> None:
    """Return once the app answers at url; raise if it exits first or takes longer than timeout."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if server.poll() is not None:
            raise RuntimeError(f"the app exited with code {server.returncode} before serving")
        try:
            with urllib.request.urlopen(url + "config", timeout=2) as response:
                if response.status == 200:
                    return
        except OSError:
            time.sleep(0.25)
    raise RuntimeError(f"the app did not answer at {url} within {timeout:.0f} s")


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    """The command line."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--clients", type=int, default=8, help="concurrent users (default 8)")
    parser.add_argument("--requests", type=int, default=3, help="requests per user (default 3)")
    parser.add_argument("--size", type=int, default=128, help="input image side in pixels (default 128)")
    parser.add_argument("--scale", default="4x", choices=["2x", "4x", "8x"])
    parser.add_argument("--model", help="psnr, gan or a weights path (default: shipped psnr, else a tiny random model)")
    parser.add_argument("--device", default="cpu", help="device for the server (default cpu)")
    parser.add_argument("--timeout", type=float, default=600, help="give up on one request after this many seconds")
    parser.add_argument("--out", help="also write the results as JSON here")
    return parser.parse_args(argv)


def start_app(args: argparse.Namespace, model: str, work: Path, log) -> tuple[subprocess.Popen, str]:
    """`progsr app` on a free localhost port, sized for this load, its output to `log`; (process, url)."""
    from progsr.webapp import free_port

    scale = int(args.scale[:-1])
    port = free_port(HOST)
    cmd = [sys.executable, "-m", "progsr.cli", "app", "--host", HOST, "--port", str(port), "--model", model,
           "--device", args.device, "--max-queue", str(max(16, args.clients * 2)),
           "--max-pixels", str(args.size * args.size), "--max-output-pixels", str(args.size * args.size * scale**2)]
    env = dict(os.environ, GRADIO_ANALYTICS_ENABLED="False", GRADIO_TEMP_DIR=str(work / "gradio"))
    return subprocess.Popen(cmd, env=env, stdout=log, stderr=subprocess.STDOUT, text=True), f"http://{HOST}:{port}/"


def run_clients(url: str, src: Path, args: argparse.Namespace, work: Path) -> tuple[list[float], list[str], float]:
    """args.clients threads, each making args.requests checked requests; (latencies, failures, wall seconds)."""
    from gradio_client import Client, handle_file

    scale = int(args.scale[:-1])
    latencies: list[float] = []
    failures: list[str] = []
    lock = threading.Lock()

    def user(k: int) -> None:
        try:
            client = Client(url, verbose=False, download_files=str(work / f"client{k}"))
        except Exception as err:  # noqa: BLE001 - counted as a failure
            with lock:
                failures.extend([f"client {k}: connect: {err}"] * args.requests)
            return
        for r in range(args.requests):
            start = time.perf_counter()
            try:
                job = client.submit(handle_file(str(src)), args.scale, 0.0, "auto", "png", api_name="/upscale")
                # the app's outputs: before/after slider, download, info line, 1:1 detail slider
                _, download, info, _ = job.result(timeout=args.timeout)
                seconds = time.perf_counter() - start
                size = Image.open(download).size
                if size != (args.size * scale, args.size * scale):
                    raise RuntimeError(f"output is {size}, expected {args.size * scale} square ({info})")
                with lock:
                    latencies.append(seconds)
            except Exception as err:  # noqa: BLE001 - counted as a failure
                with lock:
                    failures.append(f"client {k} request {r}: {type(err).__name__}: {err}")

    wall = time.perf_counter()
    threads = [threading.Thread(target=user, args=(k,)) for k in range(args.clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return latencies, failures, time.perf_counter() - wall


def stop(server: subprocess.Popen) -> None:
    """Terminate the app, killing it if it does not exit within 30 s."""
    server.terminate()
    try:
        server.wait(timeout=30)
    except subprocess.TimeoutExpired:
        server.kill()
        server.wait()


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    from progsr.paths import shipped_weights

    work = Path(tempfile.mkdtemp(prefix="progsr-app-load-"))
    model = args.model or ("psnr" if shipped_weights("psnr").is_file() else tiny_model(work))
    model_label = model if args.model or model == "psnr" else "tiny random generator"
    src = work / "input.png"
    from skimage import data

    Image.fromarray(data.astronaut()).resize((args.size, args.size), Image.Resampling.BICUBIC).save(src)
    log = open(work / "server.log", "w+")  # a file, not a pipe: a chatty server must never block on a full pipe
    server, url = start_app(args, model, work, log)
    try:
        wait_until_up(url, server, timeout=120)
        rss_idle = peak_rss_mb(server.pid)
        latencies, failures, wall = run_clients(url, src, args, work)
        rss_peak = peak_rss_mb(server.pid)
    finally:
        stop(server)
        log.seek(0)
        server_output = log.read()
        log.close()
        shutil.rmtree(work, ignore_errors=True)

    total = args.clients * args.requests
    result = {
        "clients": args.clients, "requests_per_client": args.requests,
        "completed": len(latencies), "failed": len(failures),
        "input": f"{args.size}x{args.size}", "scale": args.scale, "model": model_label, "device": args.device,
        "latency_s": {f"p{q}": float(np.percentile(latencies, q)) for q in (50, 90, 99)} if latencies else {},
        "wall_s": wall, "throughput_req_per_s": len(latencies) / wall,
        "server_rss_mb": {"after_start": rss_idle, "peak": rss_peak},
        "machine": f"{platform.machine()}, {os.cpu_count()} CPUs, Python {platform.python_version()}",
    }
    lat = result["latency_s"]
    print(f"{len(latencies)}/{total} requests completed by {args.clients} concurrent clients "
          f"({args.size}x{args.size} -> {args.scale}, {model_label}, {args.device}) in {wall:.1f} s")
    if lat:
        print(f"latency p50 {lat['p50']:.2f} s, p90 {lat['p90']:.2f} s, p99 {lat['p99']:.2f} s; "
              f"throughput {result['throughput_req_per_s']:.2f} req/s")
    print(f"server peak RSS {rss_peak:.0f} MiB (after start-up {rss_idle:.0f} MiB)")
    for line in failures[:10]:
        print("FAILED", line)
    if failures and server_output:
        print("server output (last lines):\n" + "\n".join(server_output.splitlines()[-20:]))
    if args.out:
        Path(args.out).write_text(json.dumps(result, indent=2) + "\n")
    return 1 if failures or len(latencies) != total else 0


if __name__ == "__main__":
    sys.exit(main())
