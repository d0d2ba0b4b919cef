"""`progsr upscale --engine ray`: one batch on Ray Data, with the local engine's outputs, names and failure rules.

The driver checks the options and loads the model once (so a bad option fails before any cluster work),
plans the outputs exactly as the local engine does, and leaves out those that exist (a killed job
resumes). Ray Data reads the remaining files as bytes (read_binary_files: Ray never decodes them) and
streams them through a pool of UpscaleActor actors, each loading the model once: progsr's imageio
decodes, the Upscaler upscales, imageio encodes, and the output is written atomically. A file that fails
becomes a status row with its one-line reason; the other files go on. The driver prints the local
engine's summary line and writes every failure to progsr-summary.json in the output folder.

Outputs go to a local folder (progsr's temp-file-and-rename writes) or to any filesystem pyarrow
supports, given as a URI (s3://bucket/out, gs://..., file:///...): a temp object, then a move.
"""

from __future__ import annotations

import json
import os
import re
import sys
import time
import warnings
from dataclasses import dataclass
from pathlib import Path

from progsr.errors import UserError
from progsr.formats import FORMATS

SUMMARY_NAME = "progsr-summary.json"
TEMP_NAME = re.compile(r"^\.(.+)\.[0-9a-f]{12}\.tmp$")  # imageio.atomic_output's temp files


def _import_ray():
    try:
        import ray
        import ray.data  # noqa: F401
    except ImportError:
        raise UserError("--engine ray needs Ray Data: pip install 'progsr[ray]'") from None
    return ray


# --------------------------------------------------------------------------------------------- destinations


@dataclass
class Destination:
    """Where outputs go: a local folder (fs is None) or a pyarrow filesystem and the root path inside it."""

    root: str
    fs: object = None

    @staticmethod
    def of(output: str) -> "Destination":
        """-o as given: a URI (scheme://...) goes through pyarrow.fs, anything else is a local path."""
        if "://" not in output:
            return Destination(output)
        import pyarrow.fs

        try:
            fs, root = pyarrow.fs.FileSystem.from_uri(output)
        except (ValueError, OSError) as err:
            raise UserError(f"-o {output}: not a filesystem pyarrow can open ({err})") from None
        return Destination(root.rstrip("/") or "/", fs)

    def join(self, rel: Path) -> str:
        """The output path of a path relative to the root."""
        return str(Path(self.root) / rel) if self.fs is None else f"{self.root}/{rel.as_posix()}"

    def existing(self, paths: list[str]) -> set[str]:
        """Those of `paths` that exist."""
        if self.fs is None:
            return {p for p in paths if os.path.exists(p)}
        import pyarrow.fs

        infos = self.fs.get_file_info(paths)
        return {p for info, p in zip(infos, paths) if info.type != pyarrow.fs.FileType.NotFound}

    def write(self, path: str, data: bytes) -> None:
        """Write bytes all or nothing: a hidden temp file beside `path`, then a rename (a move on pyarrow)."""
        if self.fs is None:  # the folder exists: plan() made the root, the actor an output's subfolder
            from progsr.imageio import write_bytes_atomic

            write_bytes_atomic(path, data)
            return
        import secrets

        folder, name = path.rsplit("/", 1)
        tmp = f"{folder}/.{name}.{secrets.token_hex(6)}.tmp"
        self.fs.create_dir(folder, recursive=True)
        try:
            with self.fs.open_output_stream(tmp) as stream:
                stream.write(data)
            self.fs.move(tmp, path)
        except BaseException:
            try:
                self.fs.delete_file(tmp)
            except OSError:
                pass
            raise


def plan(args, dest: Destination):
    """(jobs as [(input as given, output path)], problems): the local engine's inputs and output names."""
    from progsr.batch import collect_inputs, output_name
    from progsr.upscale import plan_outputs

    if dest.fs is None:
        jobs, problems = plan_outputs(args)
        return [(str(job.src), str(job.dst)) for job in jobs], problems
    pairs, problems = collect_inputs(args.inputs, args.recursive, None)
    if not pairs:
        raise UserError(problems[0] if len(problems) == 1 else "no images to upscale: " + "; ".join(problems))
    jobs, seen = [], {}
    for src, rel in pairs:
        dst = dest.join(output_name(rel, args.format))
        if dst in seen:
            raise UserError(f"{src} and {seen[dst]} would both be written to {dst}; upscale them separately")
        seen[dst] = src
        jobs.append((str(src), dst))
    return jobs, problems


def remove_stale_temps(dsts: list[str]) -> None:
    """Delete the temp files that a killed actor left beside the planned local outputs."""
    wanted: dict[str, set[str]] = {}
    for dst in dsts:
        wanted.setdefault(os.path.dirname(dst) or ".", set()).add(os.path.basename(dst))
    for folder, names in wanted.items():
        if not os.path.isdir(folder):
            continue
        for entry in os.scandir(folder):
            match = TEMP_NAME.match(entry.name)
            if match and match[1] in names and entry.is_file():
                os.unlink(entry.path)


# -------------------------------------------------------------------------------------------------- actor


class UpscaleActor:
    """A Ray Data actor: loads the model once, then decodes, upscales, encodes and writes each file it is given."""

    def __init__(self, options: dict, targets: dict, output: str, device: str, settings: dict):
        from progsr.inference import Upscaler

        # A CPU actor holds one CPU slot: one thread (a GPU actor is given its GPU, and torch runs it).
        self.upscaler = Upscaler(device=device, threads=1 if device in ("auto", "cpu") else None, **options)
        self.targets = targets  # absolute input path -> (input as given, output path)
        self.dest = Destination.of(output)
        self.settings = settings

    def __call__(self, batch: dict) -> dict:
        """A batch of {path, bytes} rows -> {input, output, error, warnings} rows, one per file."""
        from progsr.upscale import failure_reason

        rows = {"input": [], "output": [], "error": [], "warnings": []}
        for path, data in zip(batch["path"], batch["bytes"]):
            src, dst = self.targets[os.path.abspath(path)]
            error, caught = "", []
            try:
                with warnings.catch_warnings(record=True) as caught:
                    warnings.simplefilter("always")
                    self._upscale(src, dst, bytes(data))
            except Exception as err:  # noqa: BLE001 - one file's failure must not stop the batch
                error = failure_reason(src, err)
            rows["input"].append(src)
            rows["output"].append(dst)
            rows["error"].append(error)
            rows["warnings"].append(json.dumps([str(w.message) for w in caught]))
        return rows

    def _upscale(self, src: str, dst: str, data: bytes) -> None:
        from progsr.imageio import decode_image, encode_image

        s = self.settings
        before_work = None
        if self.dest.fs is None:  # the local engine's free-disk check
            import functools

            from progsr.batch import Job, check_disk

            Path(dst).parent.mkdir(parents=True, exist_ok=True)
            before_work = functools.partial(check_disk, Job(Path(src), Path(dst)))
        image = decode_image(data, src, self.upscaler.max_pixels)
        out, _ = self.upscaler.upscale_data(image, s["scale"], s["outscale"], s["size"], before_work=before_work)
        self.dest.write(dst, encode_image(dst, out, image.icc_profile, image.exif, s["quality"]))


# ---------------------------------------------------------------------------------------------------- run


def _start(ray, address: str | None) -> None:
    """Join the cluster at `address` ($RAY_ADDRESS), or start a local Ray; nothing if this process already has one."""
    if ray.is_initialized():
        return
    try:
        ray.init(address=address, include_dashboard=False,
                 logging_level="WARNING", configure_logging=True)
    except ConnectionError as err:
        raise UserError(f"--ray-address {address}: cannot join the Ray cluster ({err})") from None


def _actors(ray, args) -> int:
    """--actors, else as many as the cluster's CPUs (or GPUs / --actor-gpus) allow; UserError for what no node
    can give (Ray would wait for it forever)."""
    resources = ray.cluster_resources()
    if args.actor_gpus > resources.get("GPU", 0):
        raise UserError(f"--actor-gpus {args.actor_gpus:g}: the Ray cluster has {resources.get('GPU', 0):g} GPUs")
    if args.actor_memory is not None and args.actor_memory * 2**30 > resources.get("memory", 0):
        raise UserError(f"--actor-memory {args.actor_memory:g}: more than the Ray cluster's "
                        f"{resources.get('memory', 0) / 2**30:.1f} GiB")
    if args.actors is not None:
        if args.actors < 1:
            raise UserError(f"--actors {args.actors}: must be at least 1")
        return args.actors
    if args.actor_gpus > 0:
        return max(1, int(resources.get("GPU", 0) / args.actor_gpus))
    return max(1, int(resources.get("CPU", 1)))


def _dataset(ray, todo: list[tuple[str, str]], args, actors: int, scale: int, size):
    """The streaming pipeline: file bytes -> UpscaleActor pool -> status rows."""
    from progsr.upscale import upscaler_options

    targets = {os.path.abspath(src): (src, dst) for src, dst in todo}  # about 200 bytes per file in each actor
    settings = {"scale": scale, "outscale": args.outscale, "size": size, "quality": args.quality}
    device = "cuda" if args.actor_gpus > 0 and args.device == "auto" else args.device
    # Reading bytes is IO: it takes no CPU slot, so the actors can hold every core.
    files = ray.data.read_binary_files([os.path.abspath(src) for src, _ in todo], include_paths=True, num_cpus=0)
    memory = None if args.actor_memory is None else int(args.actor_memory * 2**30)
    return files.map_batches(
        UpscaleActor, batch_size=1, compute=ray.data.ActorPoolStrategy(size=actors),
        num_cpus=0 if args.actor_gpus > 0 else 1, num_gpus=args.actor_gpus or None, memory=memory,
        fn_constructor_kwargs=dict(options=upscaler_options(args), targets=targets, output=args.output,
                                   device=device, settings=settings))


def run(args) -> int:
    """`progsr upscale --engine ray`: returns 0 if every file was upscaled (or skipped), 1 if any failed."""
    ray = _import_ray()
    if int(os.environ.get("WORLD_SIZE", 1)) > 1:
        raise UserError("--engine ray runs from one process: start it without torchrun")
    if Path(args.output).suffix.lower() in FORMATS:
        raise UserError(f"-o {args.output}: --engine ray writes into a folder; for one file use the local engine")
    args.skip_existing = not args.overwrite  # this engine always resumes
    args.created_folders = []
    try:
        return _run(ray, args)
    finally:
        from progsr.batch import remove_empty_folders

        remove_empty_folders(args.created_folders)


def _run(ray, args) -> int:
    """run() once the engine is known to be usable."""
    from progsr.upscale import make_upscaler, say

    dest = Destination.of(args.output)
    upscaler, scale, size = make_upscaler(args, 0)  # every option and the model checked before any cluster work
    del upscaler
    jobs, problems = plan(args, dest)
    existing = dest.existing([dst for _, dst in jobs]) if not args.overwrite else set()
    todo = [(src, dst) for src, dst in jobs if dst not in existing]
    if dest.fs is None:
        remove_stale_temps([dst for _, dst in todo])
    for problem in problems:
        print(f"progsr upscale: error: {problem}", file=sys.stderr)

    start, done, failed, actors = time.perf_counter(), 0, list(problems), 0
    if todo:
        _start(ray, args.ray_address)
        actors = min(_actors(ray, args), len(todo))
        for row in _dataset(ray, todo, args, actors, scale, size).iter_rows():
            for message in json.loads(row["warnings"]):
                say(f"progsr upscale: warning: {message}", sys.stderr)
            if row["error"]:
                failed.append(row["error"])
                say(f"progsr upscale: error: {row['error']}", sys.stderr)
            else:
                done += 1
    skipped = len(jobs) - len(todo)
    seconds = time.perf_counter() - start
    summary = {"upscaled": done, "skipped": skipped, "failed": sorted(failed), "seconds": round(seconds, 1),
               "actors": actors}
    dest.write(dest.join(Path(SUMMARY_NAME)), (json.dumps(summary, indent=1) + "\n").encode())
    print(f"summary: {done} upscaled, {skipped} skipped (output exists), {len(failed)} failed, "
          f"in {seconds:.1f}s (ray, {actors} actors)")
    for line in sorted(failed):
        print(f"  failed: {line}")
    return 1 if failed else 0
