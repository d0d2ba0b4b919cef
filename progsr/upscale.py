"""`progsr upscale`: upscale files, folders and globs; one bad file never stops the batch.

Under torchrun (`torchrun --nproc-per-node N -m progsr.cli upscale DIR -o OUT`) every rank builds
the same sorted file list, takes files[rank::world] on its own device (cuda:LOCAL_RANK, else the
CPU), and rank 0 prints the combined summary. A gloo process group is used only to agree that the
setup succeeded everywhere before any file is written, and to gather the summary at the end.
"""

from __future__ import annotations

import argparse
import functools
import os
import re
import sys
import time
import warnings
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path

from progsr.errors import UserError
from progsr.formats import FORMAT_SUFFIXES, FORMATS
from progsr.network import BACKENDS
from progsr.scales import check_scale, scales_up_to


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of `progsr upscale`."""
    from progsr.limits import DEFAULT_MAX_PIXELS, default_max_output_pixels

    p = argparse.ArgumentParser(
        prog="progsr upscale",
        description="Upscale images x2/x4/x8 with the progressive generator. Outputs keep the input's name "
                    "(and format, unless --format) inside the output folder; folders are mirrored.",
        epilog="Existing outputs: without --skip-existing or --overwrite nothing is done if any output already "
               "exists. Outputs are written to a temp file and renamed, so a failure never leaves a partial file. "
               "Exit status: 0 all done, 1 some inputs failed (the rest were done), 2 bad options (nothing done). "
               "Several processes: torchrun --nproc-per-node N -m progsr.cli upscale DIR -o OUT shards the files "
               "across ranks, one device each.",
    )
    p.add_argument("inputs", nargs="+", metavar="INPUT", help="image files, folders or glob patterns")
    p.add_argument("--scale", type=int, default=None, metavar="{2,4,8}", help="upscaling factor (default 8)")
    p.add_argument("-o", "--output", default="upscaled",
                   help="output folder (default: ./upscaled); with a single input file, a file name with an image "
                        "extension (out.png) writes that file")
    p.add_argument("--model", default=None, metavar="psnr|gan|PATH",
                   help="psnr (default: the shipped fidelity model), gan (the shipped realistic model) "
                        "or PATH to a generator .safetensors or an exported .onnx graph (progsr export --onnx)")
    p.add_argument("--realism", type=float, default=None, metavar="R",
                   help="0..1: blend the shipped psnr (0) and gan (1) weights (network interpolation)")
    p.add_argument("--clean", default=None, metavar="C|auto",
                   help="0..1 or auto (the default for the shipped models): blend towards the real-world model "
                        "trained on noisy, blurred, JPEG-compressed inputs; auto picks the strength per image from "
                        "its JPEG quality, noise and blockiness, and prints what it saw")
    size = p.add_mutually_exclusive_group()
    size.add_argument("--outscale", type=float, default=None, metavar="F",
                      help="any output factor up to 8: runs the next model scale up, then MATLAB-bicubic downscale")
    size.add_argument("--size", default=None, metavar="WxH", help="exact output size, e.g. 1920x1080")
    p.add_argument("--tile", type=int, default=None, metavar="N",
                   help="largest input tile side in pixels (default: chosen from free memory; whole image if it fits)")
    p.add_argument("--tile-overlap", type=int, default=None, metavar="N",
                   help="input pixels shared by neighbouring tiles (default: 2x the model's receptive radius, "
                        "40 for the shipped model: seamless tiles)")
    p.add_argument("--device", default="auto", metavar="auto|cpu|cuda", help="auto (default), cpu, cuda or cuda:N")
    p.add_argument("--precision", default="auto", choices=["auto", "fp32", "fp16", "bf16"],
                   help="auto (default): fp32 on CPU, bf16 (or fp16) on CUDA")
    p.add_argument("--format", default=None, choices=sorted(FORMAT_SUFFIXES), type=str.lower,
                   help="output format (default: the input's, or png when that cannot be written)")
    p.add_argument("--quality", type=int, default=95, metavar="Q", help="JPEG/WebP quality (default 95)")
    p.add_argument("--recursive", action="store_true", help="also upscale images in subfolders of folder inputs")
    exist = p.add_mutually_exclusive_group()
    exist.add_argument("--skip-existing", action="store_true", help="skip inputs whose output already exists")
    exist.add_argument("--overwrite", action="store_true", help="replace existing outputs")
    p.add_argument("--max-pixels", type=int, default=DEFAULT_MAX_PIXELS, metavar="N",
                   help=f"refuse inputs with more pixels than this (default {DEFAULT_MAX_PIXELS}; 0: no limit)")
    p.add_argument("--max-output-pixels", type=int, default=None, metavar="N",
                   help=f"refuse outputs with more pixels than this (default: from this machine's RAM, here "
                        f"{default_max_output_pixels() // 10**6} MP; 0: no limit, though an output that cannot fit "
                        f"in free memory is still refused)")
    p.add_argument("--compile", action="store_true", help="run the model through torch.compile (torch backend)")
    p.add_argument("--backend", default="auto", choices=BACKENDS,
                   help="what runs the network: auto (default) is ONNX Runtime on the CPU and torch on a GPU "
                        "(and for --compile or fp16/bf16); torch needs pip install 'progsr[torch]'")
    ray = p.add_argument_group("cluster (the ray extra: pip install 'progsr[ray]')")
    ray.add_argument("--engine", default="local", choices=["local", "ray"],
                     help="local (default): this process (or torchrun's ranks); ray: Ray Data actors, each loading "
                          "the model once; one bad file never stops the rest, existing outputs are skipped "
                          "(a killed job resumes) and -o may be any pyarrow filesystem URI (s3://bucket/out)")
    ray.add_argument("--ray-address", default=None, metavar="ADDR",
                     help="the Ray cluster to join (default: $RAY_ADDRESS, else a local Ray on this machine)")
    ray.add_argument("--actors", type=int, default=None, metavar="N",
                     help="Ray actors, each with one model (default: the cluster's CPUs, or its GPUs / --actor-gpus)")
    ray.add_argument("--actor-gpus", type=float, default=0, metavar="G",
                     help="GPUs per actor (default 0: CPU actors, one thread each; 1: one GPU each)")
    ray.add_argument("--actor-memory", type=float, default=None, metavar="GIB",
                     help="memory to reserve per actor in GiB, so Ray places no more actors than fit")
    return p


# ------------------------------------------------------------------------------------- outcome, --size


@dataclass
class Outcome:
    """What one rank did: files written, skipped, and failures as 'path: cause' lines."""

    done: int = 0
    skipped: int = 0
    failed: list[str] = field(default_factory=list)


def parse_size(text: str) -> tuple[int, int]:
    """'1920x1080' -> (1920, 1080)."""
    match = re.fullmatch(r"\s*(\d+)\s*[xX]\s*(\d+)\s*", text)
    if not match or min(int(match[1]), int(match[2])) < 1:
        raise UserError(f"--size {text}: expected WIDTHxHEIGHT with positive numbers, e.g. 1920x1080")
    return int(match[1]), int(match[2])


# ---------------------------------------------------------------------------------------------- distributed


def _dist_env() -> tuple[int, int, int]:
    env = os.environ
    return int(env.get("RANK", 0)), int(env.get("WORLD_SIZE", 1)), int(env.get("LOCAL_RANK", 0))


def _init_group(world: int):
    """A gloo process group when launched by torchrun with several ranks, else None."""
    if world <= 1 or "MASTER_ADDR" not in os.environ:
        return None
    import torch.distributed as dist

    # Long timeout: ranks finish their shards at different times; a crashed rank is stopped by torchrun.
    dist.init_process_group("gloo", timeout=timedelta(days=7))
    return dist


def _gather(dist, obj):
    if dist is None:
        return [obj]
    out = [None] * dist.get_world_size()
    dist.all_gather_object(out, obj)
    return out


# ---------------------------------------------------------------------------------------------- main


def upscaler_options(args) -> dict:
    """The Upscaler's keyword arguments from the options (device left out: each engine resolves its own)."""
    max_output = None if args.max_output_pixels == 0 else (args.max_output_pixels or -1)
    return dict(model=args.model or "psnr", precision=args.precision, tile=args.tile, tile_overlap=args.tile_overlap,
                realism=args.realism, clean=args.clean, max_pixels=args.max_pixels or None, compile=args.compile,
                max_output_pixels=max_output, backend=args.backend)


def _device(name: str, local_rank: int):
    """--device as given; under torchrun (local rank > 0) resolved to this rank's GPU, which needs torch."""
    if local_rank == 0:
        return name
    from progsr.devices import resolve_device

    return resolve_device(name, local_rank)


def make_upscaler(args, local_rank: int):
    """Check the options that need no files and load the model: (upscaler, scale, size). UserError if bad."""
    from progsr.inference import Upscaler

    if args.scale is not None and (args.outscale is not None or args.size is not None):
        raise UserError("give --scale or --outscale/--size, not both")
    scale = 8 if args.scale is None else args.scale
    check_scale(scale, scales_up_to(3))  # the shipped models' scales, before any model loads
    size = parse_size(args.size) if args.size is not None else None
    if args.outscale is not None and not 0 < args.outscale <= 8:
        raise UserError(f"--outscale {args.outscale}: must be in (0, 8]")
    if not 1 <= args.quality <= 100:
        raise UserError(f"--quality {args.quality}: must be 1..100")

    if args.realism is not None and args.model in ("psnr", "gan"):
        print(f"progsr upscale: warning: --realism {args.realism:g} sets the blend of the psnr and gan models; "
              f"--model {args.model} is ignored", file=sys.stderr)
    # The model first: a missing weights file or a scale the model lacks stops here, before any folder exists.
    with warnings.catch_warnings(record=True) as caught:  # e.g. a --tile-overlap too small for seamless tiles
        warnings.simplefilter("always")
        upscaler = Upscaler(device=_device(args.device, local_rank), **upscaler_options(args))
    for w in caught:
        print(f"progsr upscale: warning: {w.message}", file=sys.stderr)
    if args.outscale is None and size is None and scale not in upscaler.scales:
        raise UserError(f"--scale {scale}: this model only goes up to x{upscaler.max_scale}")
    if args.outscale is not None and args.outscale > upscaler.max_scale:
        raise UserError(f"--outscale {args.outscale}: this model only goes up to x{upscaler.max_scale}")
    return upscaler, scale, size


def _setup(args, local_rank: int):
    """Everything that can fail before the first file: options, output folder, inputs, model."""
    upscaler, scale, size = make_upscaler(args, local_rank)
    jobs, problems = plan_outputs(args)
    return upscaler, jobs, problems, scale, size


def plan_outputs(args):
    """(jobs, problems) for a local output folder (or file): inputs, output paths, folder and existing checks."""
    from progsr.batch import check_output_folder, collect_inputs, missing_folders, plan_jobs

    out_dir, out_file = Path(args.output), None
    if Path(args.output).suffix.lower() in FORMATS and not Path(args.output).is_dir():
        if len(args.inputs) != 1 or not Path(args.inputs[0]).is_file():
            raise UserError(f"-o {args.output}: an output file name needs exactly one input file "
                            "(for several inputs, -o names a folder)")
        if args.format and FORMATS[FORMAT_SUFFIXES[args.format]] != FORMATS[Path(args.output).suffix.lower()]:
            raise UserError(f"--format {args.format} contradicts the output file name {args.output}")
        out_file, out_dir = Path(args.output), Path(args.output).parent
    pairs, problems = collect_inputs(args.inputs, args.recursive, out_dir)
    if not pairs:
        raise UserError(problems[0] if len(problems) == 1 else "no images to upscale: " + "; ".join(problems))
    created = missing_folders(out_dir)
    check_output_folder(out_dir)
    args.created_folders = created
    jobs = plan_jobs(pairs, out_dir, args.format, out_file)
    existing = [job.dst for job in jobs if job.dst.exists()]
    if existing and not (args.skip_existing or args.overwrite):
        raise UserError(f"{existing[0]}: output already exists ({len(existing)} of {len(jobs)} outputs exist); "
                        "pass --overwrite or --skip-existing")
    return jobs, problems


def failure_reason(src, err: Exception) -> str:
    """The one-line reason a file failed, for the console and the summary: a UserError's own message, else
    'src: cause'."""
    if isinstance(err, UserError):
        return str(err)
    if isinstance(err, OSError):
        return f"{src}: {err.strerror or err}"
    return f"{src}: unexpected {type(err).__name__}: {err}"


def say(line: str, file=None) -> None:
    """Print one line in a single write (ranks share the terminal: separate writes can interleave), clear of bars."""
    from tqdm import tqdm

    file = file or sys.stdout
    with tqdm.external_write_mode(file=file):
        file.write(line + "\n")
        file.flush()


def _process(upscaler, jobs: list, scale, size, args, prefix: str, show_bars: bool) -> Outcome:
    """Upscale each job (a batch.Job) in turn: a bad file is reported and the rest go on."""
    from tqdm import tqdm

    from progsr.batch import check_disk, missing_folders

    outcome = Outcome()
    # Bars only on a terminal; a log gets the plain line per file (and per 10% of a tiled file's tiles).
    files_bar = tqdm(total=len(jobs), unit="file", desc="upscale", disable=not (show_bars and sys.stderr.isatty()))
    for job in jobs:
        if job.dst.exists() and args.skip_existing:
            outcome.skipped += 1
            files_bar.update(1)
            continue
        tile_bar = None

        reported = [0]

        def progress(done, total):
            nonlocal tile_bar
            if total > 1 and show_bars and sys.stderr.isatty():
                if tile_bar is None:
                    tile_bar = tqdm(total=total, unit="tile", desc=job.src.name, leave=False)
                tile_bar.update(done - tile_bar.n)
            elif total > 1 and show_bars and (10 * done) // total > reported[0]:  # a log: a line per 10% of tiles
                reported[0] = (10 * done) // total
                say(f"{prefix}{job.src}: {done}/{total} tiles ({100 * done // total}%)", sys.stderr)

        start = time.perf_counter()
        try:
            args.created_folders += missing_folders(job.dst.parent)
            job.dst.parent.mkdir(parents=True, exist_ok=True)
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always")
                result = upscaler.upscale_file(job.src, job.dst, scale, args.outscale, size, progress,
                                               args.quality, functools.partial(check_disk, job))
                (iw, ih), (ow, oh) = result.in_size, result.out_size
                if size is not None and abs((ow / oh) / (iw / ih) - 1) > 0.01:
                    warnings.warn(f"{job.src}: --size {ow}x{oh} changes the aspect ratio of {iw}x{ih} by "
                                  f"{100 * abs((ow / oh) / (iw / ih) - 1):.0f}% (the image is stretched)")
            for w in caught:
                say(f"progsr upscale: warning: {w.message}", sys.stderr)
            outcome.done += 1
            cleanup = f", {result.cleanup.describe()}" if result.cleanup is not None else ""
            say(f"{prefix}{job.src} -> {job.dst} ({iw}x{ih} -> {ow}x{oh}, {time.perf_counter() - start:.1f}s{cleanup})")
        except Exception as err:  # noqa: BLE001 - one file's failure must not stop the batch
            outcome.failed.append(failure_reason(job.src, err))
            say(f"progsr upscale: error: {outcome.failed[-1]}", sys.stderr)
        finally:
            if tile_bar is not None:
                tile_bar.close()
        files_bar.update(1)
    files_bar.close()
    return outcome


def main(argv: list[str]) -> int:
    """Entry point of `progsr upscale`; returns 0 if every file was upscaled (or skipped), 1 if any failed."""
    from progsr.batch import remove_empty_folders

    args = build_parser().parse_args(argv)
    if args.engine == "ray":
        from progsr.ray_engine import run

        return run(args)
    args.created_folders = []
    rank, world, local_rank = _dist_env()
    dist = _init_group(world)
    try:
        setup_error = None
        try:
            upscaler, jobs, problems, scale, size = _setup(args, local_rank)
        except UserError as err:
            setup_error = str(err)
        errors = [e for e in _gather(dist, setup_error) if e]  # every rank agrees before any file is written
        if errors:
            raise UserError(errors[0])

        shard = jobs[rank::world]
        prefix = f"[rank {rank}/{world}] " if world > 1 else ""
        if rank == 0:
            for problem in problems:
                print(f"progsr upscale: error: {problem}", file=sys.stderr)
        start = time.perf_counter()
        outcome = _process(upscaler, shard, scale, size, args, prefix, show_bars=rank == 0)
        outcomes = _gather(dist, outcome)
        if rank == 0:
            total = Outcome(sum(o.done for o in outcomes), sum(o.skipped for o in outcomes),
                            list(problems) + [line for o in outcomes for line in o.failed])
            where = f"{world} ranks" if world > 1 else upscaler.describe()
            print(f"summary: {total.done} upscaled, {total.skipped} skipped (output exists), "
                  f"{len(total.failed)} failed, in {time.perf_counter() - start:.1f}s ({where})")
            for line in total.failed:
                print(f"  failed: {line}")
            return 1 if total.failed else 0
        return 1 if outcome.failed else 0
    finally:
        remove_empty_folders(getattr(args, "created_folders", []))
        if dist is not None:
            dist.destroy_process_group()
