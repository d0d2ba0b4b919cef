"""Which files a batch reads and writes: inputs from files, folders and globs, output paths, and the checks
on the output folder and free disk space made before any work."""

from __future__ import annotations

import glob
import secrets
from dataclasses import dataclass
from pathlib import Path

from progsr.errors import UserError
from progsr.formats import FORMAT_SUFFIXES, FORMATS, IMAGE_SUFFIXES



@dataclass
class Job:
    """One input file and the output it becomes."""

    src: Path
    dst: Path


def _is_image(path: Path) -> bool:
    """An image file by its suffix, not a hidden file."""
    return path.suffix.lower() in IMAGE_SUFFIXES and not path.name.startswith(".")


def _inside(path: Path, folder: Path | None) -> bool:
    """Whether path lies inside the (resolved) folder; never for None (an output that is not a local folder)."""
    if folder is None:
        return False
    try:
        path.resolve().relative_to(folder)
        return True
    except ValueError:
        return False


def collect_inputs(inputs: list[str], recursive: bool, out_dir: Path | None) -> tuple[list[tuple[Path, Path]], list[str]]:
    """[(file, path relative to the output folder)] for every input, and 'input: cause' lines for bad inputs.

    Files keep their name; files found in a folder (or by a glob) keep their path below that folder
    (below the glob's fixed prefix). Anything inside the output folder is left out.
    """
    found: dict[Path, tuple[Path, Path]] = {}
    problems: list[str] = []
    out_real = out_dir.resolve() if out_dir is not None else None

    def add(path: Path, rel: Path):
        found.setdefault(path.resolve(), (path, rel))

    for text in inputs:
        path = Path(text)
        if path.is_file():
            add(path, Path(path.name))
        elif path.is_dir():
            walk = path.rglob("*") if recursive else path.iterdir()
            images = [f for f in walk if f.is_file() and _is_image(f)]
            files = sorted(f for f in images if not _inside(f, out_real))
            if images and not files:
                problems.append(f"{path}: every image in it is inside the output folder {out_dir}; "
                                "choose another -o folder")
            elif not files:
                hint = "" if recursive or not any(d.is_dir() for d in path.iterdir()) else " (--recursive to look in subfolders)"
                problems.append(f"{path}: folder has no images ({', '.join(sorted(IMAGE_SUFFIXES))}){hint}")
            for f in files:
                add(f, f.relative_to(path))
        elif glob.has_magic(text):
            parts = path.parts
            fixed = next((i for i, part in enumerate(parts) if glob.has_magic(part)), len(parts))
            base = Path(*parts[:fixed]) if fixed else Path(".")
            matches = sorted(Path(m) for m in glob.glob(text, recursive=True))
            files = [m for m in matches if m.is_file() and _is_image(m) and not _inside(m, out_real)]
            if not files:
                problems.append(f"{text}: no image files match this pattern")
            for f in files:
                add(f, f.relative_to(base))
        else:
            problems.append(f"{path}: no such file or folder")
    pairs = sorted(found.values(), key=lambda pair: str(pair[1]))
    return pairs, problems


def plan_jobs(pairs: list[tuple[Path, Path]], out_dir: Path, fmt: str | None, out_file: Path | None = None) -> list[Job]:
    """Output paths for the inputs; UserError if two inputs would write the same file or one overwrite its input.

    The input's suffix is kept as written (.JPG stays .JPG) when progsr can write it; `out_file` names the
    output of a single input.
    """
    jobs, seen = [], {}
    for src, rel in pairs:
        dst = out_file if out_file is not None else out_dir / output_name(rel, fmt)
        key = dst.resolve()
        if key in seen:
            raise UserError(f"{src} and {seen[key]} would both be written to {dst}; upscale them separately")
        if key == src.resolve():
            raise UserError(f"{src}: the output would overwrite the input; choose another -o folder")
        seen[key] = src
        jobs.append(Job(src, dst))
    return jobs


def output_name(rel: Path, fmt: str | None) -> Path:
    """An input's path relative to the output folder, with the output's suffix (--format, else the input's or .png)."""
    if fmt:
        return rel.with_suffix(FORMAT_SUFFIXES[fmt])
    return rel.with_suffix(rel.suffix if rel.suffix.lower() in FORMATS else ".png")


def missing_folders(folder: Path) -> list[Path]:
    """The folders that creating `folder` would make, deepest first."""
    missing = []
    for path in [folder, *folder.parents]:
        if path.exists():
            break
        missing.append(path)
    return missing


def remove_empty_folders(folders) -> None:
    """Remove the folders this run created that hold nothing (deepest first), so a failed run leaves no litter."""
    for folder in sorted(set(folders), key=lambda p: len(p.parts), reverse=True):
        try:
            folder.rmdir()
        except OSError:
            pass  # not empty, or already gone


def check_output_folder(out_dir: Path) -> None:
    """Create the output folder and prove it is writable, before any work."""
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
        probe = out_dir / f".progsr-write-test-{secrets.token_hex(4)}"
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as err:
        raise UserError(f"{out_dir}: output folder is not writable ({err.strerror or err})") from None


def check_disk(job: Job, out_hw: tuple[int, int], pixels) -> None:
    """Refuse (UserError) an output that cannot fit in the free space of its folder, before any work.

    Called by Upscaler.upscale_file once the file is read and planned. The estimate is a floor: a third
    of the raw pixels for lossless formats, a twentieth for JPEG/WebP.
    """
    import shutil

    out_h, out_w = out_hw
    channels = 1 if pixels.ndim == 2 else pixels.shape[2]
    lossy = FORMATS.get(job.dst.suffix.lower()) in ("JPEG", "WEBP")
    need = out_h * out_w * channels * pixels.dtype.itemsize // (20 if lossy else 3)
    free = shutil.disk_usage(job.dst.parent).free
    if need > free:
        raise UserError(f"{job.src}: the {out_w}x{out_h} output needs at least {need / 2**30:.1f} GiB on disk, "
                        f"{free / 2**30:.1f} GiB is free in {job.dst.parent}")
