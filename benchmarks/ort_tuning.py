"""ONNX Runtime session settings for the bundled graphs: graph optimisation level, CPU memory arena and thread
spinning, timed side by side (rounds interleaved, so load changes hit every setting alike).

    .venv/bin/python benchmarks/ort_tuning.py --threads 1 --size 128 --rounds 5 --out benchmarks/results/ort_tuning

Each setting runs the shipped psnr weights through progsr.ort_backend's weightless graphs at x4 and x8 on a
size x size input; a row is the median over the rounds of one session.run. Writes OUT.json and OUT.md.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path

import numpy as np

SETTINGS = {
    "default (ORT_ENABLE_ALL, arena, spinning)": {},
    "ORT_ENABLE_EXTENDED": {"level": "ORT_ENABLE_EXTENDED"},
    "ORT_ENABLE_BASIC": {"level": "ORT_ENABLE_BASIC"},
    "no CPU memory arena": {"arena": False},
    "no thread spinning": {"spinning": False},
}


def session(ort, graph: Path, scale: int, weights: dict, threads: int, level="ORT_ENABLE_ALL", arena=True,
            spinning=True):
    """An InferenceSession of a weightless graph with these settings (progsr.ort_backend's way of feeding weights)."""
    from progsr.ort_backend import WEIGHT_PREFIX, weights_for_scale

    options = ort.SessionOptions()
    options.intra_op_num_threads, options.inter_op_num_threads = threads, 1
    options.graph_optimization_level = getattr(ort.GraphOptimizationLevel, level)
    options.enable_cpu_mem_arena = arena
    options.add_session_config_entry("session.intra_op.allow_spinning", "1" if spinning else "0")
    values = {WEIGHT_PREFIX + k: ort.OrtValue.ortvalue_from_numpy(np.ascontiguousarray(v))
              for k, v in weights_for_scale(weights, scale).items()}
    options.add_external_initializers(list(values), list(values.values()))
    return ort.InferenceSession(str(graph), options, providers=["CPUExecutionProvider"]), values


def main(argv=None) -> int:
    import onnxruntime as ort

    from progsr.models.io import read_weights
    from progsr.ort_backend import bundled_graphs
    from progsr.paths import shipped_weights

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--size", type=int, default=128)
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--out", type=Path, default=None)
    args = p.parse_args(argv)
    config, weights, _ = read_weights(shipped_weights("psnr"))
    graphs = bundled_graphs(config)
    x = np.random.default_rng(0).random((1, 3, args.size, args.size), dtype=np.float32)
    sessions = {(name, s): session(ort, graphs[s], s, weights, args.threads, **kw)
                for name, kw in SETTINGS.items() for s in (4, 8)}
    times: dict[tuple[str, int], list[float]] = {key: [] for key in sessions}
    load = [os.getloadavg()[0]]
    for key, (sess, _) in sessions.items():
        sess.run(None, {"lr": x})  # warm-up
    for _ in range(args.rounds):
        for key, (sess, _) in sessions.items():
            start = time.perf_counter()
            sess.run(None, {"lr": x})
            times[key].append(time.perf_counter() - start)
    load.append(os.getloadavg()[0])
    rows = [{"setting": name, "scale": s, "ms": 1000 * statistics.median(times[(name, s)])} for name, s in sessions]
    base = {r["scale"]: r["ms"] for r in rows if r["setting"].startswith("default")}
    lines = ["| setting | x4 ms | x8 ms | x4 / default | x8 / default |", "|---|---|---|---|---|"]
    for name in SETTINGS:
        ms = {r["scale"]: r["ms"] for r in rows if r["setting"] == name}
        lines.append(f"| {name} | {ms[4]:.0f} | {ms[8]:.0f} | {ms[4] / base[4]:.2f} | {ms[8] / base[8]:.2f} |")
    lines.append(f"\n{args.size}x{args.size} input, {args.threads} thread(s), median of {args.rounds} interleaved "
                 f"rounds; onnxruntime {ort.__version__}; 1-minute load average {load[0]:.2f} before, {load[1]:.2f} after.")
    table = "\n".join(lines)
    print(table)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.with_suffix(".json").write_text(json.dumps({"rows": rows, "load_average_1min": load,
                                                             "command": " ".join(sys.argv)}, indent=1) + "\n")
        args.out.with_suffix(".md").write_text(table + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
