"""`progsr upscale`: bad inputs, batches with bad files, sizes, existing outputs, folders, file round trips, torchrun."""

import os
import re
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from skimage import data

from progsr.cli import main
from progsr.imageio import read_image, write_image
from progsr.models import save_generator

ICC = b"\x00\x01fake-icc-profile" * 20


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    from helpers import random_tiny

    return str(save_generator(random_tiny(1), tmp_path_factory.mktemp("model") / "tiny.safetensors"))


@pytest.fixture
def rgb():
    return data.chelsea()[60:90, 200:236]  # 30x36


def upscale(capsys, *args):
    rc = main(["upscale", *map(str, args)])
    out, err = capsys.readouterr()
    return rc, out, err


def files_under(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob("*") if p.is_file()) if folder.exists() else []


def _make_bad(tmp_path: Path, rgb, case: str) -> tuple[list[str], list[str]]:
    """Create the input for one bad case; returns (INPUT args, extra options)."""
    good = tmp_path / "good.png"
    Image.fromarray(rgb).save(good)
    if case == "missing":
        return [str(tmp_path / "missing.png")], []
    if case == "no-images":
        (tmp_path / "docs").mkdir()
        (tmp_path / "docs" / "notes.txt").write_text("hello")
        return [str(tmp_path / "docs")], []
    if case == "truncated":
        (tmp_path / "truncated.png").write_bytes(good.read_bytes()[:400])
        return [str(tmp_path / "truncated.png")], []
    if case == "non-image":
        (tmp_path / "notes.txt").write_text("hello")
        return [str(tmp_path / "notes.txt")], []
    if case == "fake-png":
        (tmp_path / "fake.png").write_text("<html>not a png</html>")
        return [str(tmp_path / "fake.png")], []
    if case == "zero-size":
        (tmp_path / "empty.png").write_bytes(b"")
        return [str(tmp_path / "empty.png")], []
    if case == "too-many-pixels":
        return [str(good)], ["--max-pixels", "500"]
    if case == "bad-scale":
        return [str(good)], ["--scale", "3"]
    if case == "unwritable-output":
        (tmp_path / "blocker").write_text("a file where the output folder's parent should be")
        return [str(good)], ["-o", str(tmp_path / "blocker" / "out")]
    raise AssertionError(case)


BAD_CASES = {  # case: (exit code, file named in the message, words of the cause)
    "missing": (2, "missing.png", "no such file"),
    "no-images": (2, "docs", "no images"),
    "truncated": (1, "truncated.png", "corrupt or truncated"),
    "non-image": (1, "notes.txt", "not an image"),
    "fake-png": (1, "fake.png", "not an image"),
    "zero-size": (1, "empty.png", "empty file"),
    "too-many-pixels": (1, "good.png", "--max-pixels"),
    "bad-scale": (2, "--scale 3", "not supported; choose 2, 4 or 8 (for x3 use --outscale 3)"),
    "unwritable-output": (2, "out", "not writable"),
}


@pytest.mark.parametrize("case", sorted(BAD_CASES))
def test_bad_input_gives_one_line_error_and_no_output(tmp_path, capsys, model, rgb, case):
    inputs, options = _make_bad(tmp_path, rgb, case)
    out_dir = tmp_path / "out"
    if "-o" not in options:
        options += ["-o", str(out_dir)]
    rc, out, err = upscale(capsys, *inputs, "--model", model, "--scale", "2", *options) if case != "bad-scale" \
        else upscale(capsys, *inputs, "--model", model, *options)
    code, name, cause = BAD_CASES[case]
    assert rc == code
    assert "Traceback" not in err + out
    errors = [line for line in err.splitlines() if "error:" in line]
    assert len(errors) == 1, err
    assert name in errors[0] and cause in errors[0]
    assert files_under(out_dir) == []  # no output, no temp file
    if code == 1:  # the summary repeats the failure
        assert re.search(rf"failed: .*{re.escape(name)}.*{re.escape(cause)}", out)


def test_bad_file_among_good_ones(tmp_path, capsys, model, rgb):
    src = tmp_path / "in"
    src.mkdir()
    for name in ("a.png", "c.png"):
        Image.fromarray(rgb).save(src / name)
    (src / "b.png").write_bytes((src / "a.png").read_bytes()[:300])
    rc, out, err = upscale(capsys, src, tmp_path / "missing.png", "-o", tmp_path / "out", "--model", model,
                           "--scale", "2")
    assert rc == 1
    assert [p.name for p in files_under(tmp_path / "out")] == ["a.png", "c.png"]
    assert "2 upscaled" in out and "2 failed" in out
    assert re.search(r"failed: .*b\.png: corrupt or truncated", out)
    assert re.search(r"failed: .*missing\.png: no such file", out)
    assert "Traceback" not in err


def test_outscale_and_size_give_exact_dimensions(tmp_path, capsys, model, rgb):
    Image.fromarray(rgb).save(tmp_path / "x.png")
    rc, _, _ = upscale(capsys, tmp_path / "x.png", "-o", tmp_path / "a", "--model", model, "--outscale", "2.5")
    assert rc == 0 and Image.open(tmp_path / "a" / "x.png").size == (90, 75)
    rc, _, _ = upscale(capsys, tmp_path / "x.png", "-o", tmp_path / "b", "--model", model, "--size", "101x37")
    assert rc == 0 and Image.open(tmp_path / "b" / "x.png").size == (101, 37)
    rc, _, err = upscale(capsys, tmp_path / "x.png", "-o", tmp_path / "c", "--model", model, "--size", "100")
    assert rc == 2 and "--size 100" in err and files_under(tmp_path / "c") == []
    rc, out, err = upscale(capsys, tmp_path / "x.png", "-o", tmp_path / "d", "--model", model, "--size", "400x300")
    assert rc == 1 and "above this model's x8; upscale x8 first and run again on that result" in err


def test_existing_outputs_refused_by_default(tmp_path, capsys, model, rgb):
    Image.fromarray(rgb).save(tmp_path / "x.png")
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    (out_dir / "x.png").write_bytes(b"keep me")
    rc, _, err = upscale(capsys, tmp_path / "x.png", "-o", out_dir, "--model", model, "--scale", "2")
    assert rc == 2 and "already exists" in err and "--overwrite" in err
    rc, out, _ = upscale(capsys, tmp_path / "x.png", "-o", out_dir, "--model", model, "--scale", "2", "--skip-existing")
    assert rc == 0 and "1 skipped" in out and (out_dir / "x.png").read_bytes() == b"keep me"
    rc, _, _ = upscale(capsys, tmp_path / "x.png", "-o", out_dir, "--model", model, "--scale", "2", "--overwrite")
    assert rc == 0 and Image.open(out_dir / "x.png").size == (72, 60)


def test_folders_are_mirrored_with_recursive_and_globs(tmp_path, capsys, model, rgb):
    src = tmp_path / "in"
    (src / "sub" / "deeper").mkdir(parents=True)
    Image.fromarray(rgb).save(src / "a.png")
    Image.fromarray(rgb).save(src / "sub" / "b.png")
    Image.fromarray(rgb).save(src / "sub" / "deeper" / "c.jpg")
    (src / "sub" / "readme.txt").write_text("not an image: ignored inside folders")
    rc, _, _ = upscale(capsys, src, "-o", tmp_path / "flat", "--model", model, "--scale", "2")
    assert rc == 0 and [p.relative_to(tmp_path / "flat").as_posix() for p in files_under(tmp_path / "flat")] == ["a.png"]
    rc, _, _ = upscale(capsys, src, "-o", tmp_path / "deep", "--model", model, "--scale", "2", "--recursive")
    got = [p.relative_to(tmp_path / "deep").as_posix() for p in files_under(tmp_path / "deep")]
    assert rc == 0 and got == ["a.png", "sub/b.png", "sub/deeper/c.jpg"]
    rc, _, _ = upscale(capsys, f"{src}/**/*.png", "-o", tmp_path / "glob", "--model", model, "--scale", "2",
                       "--format", "webp")
    got = [p.relative_to(tmp_path / "glob").as_posix() for p in files_under(tmp_path / "glob")]
    assert rc == 0 and got == ["a.webp", "sub/b.webp"]


def test_file_round_trips(tmp_path, capsys, model, rgb, rng):
    src = tmp_path / "in"
    src.mkdir()
    alpha = rng.integers(0, 256, rgb.shape[:2], dtype=np.uint8)
    Image.fromarray(np.dstack([rgb, alpha]), "RGBA").save(src / "rgba.png")
    deep = (rgb.astype(np.uint16) * 257 + rng.integers(0, 257, rgb.shape, dtype=np.uint16))
    write_image(src / "deep.png", deep)
    write_image(src / "deep.tif", deep)
    Image.fromarray(rgb).convert("L").save(src / "grey.png")
    Image.fromarray(rgb).quantize(16).save(src / "palette.png")
    exif = Image.Exif()
    exif[0x0112] = 6  # stored sideways: the upright picture is 30 wide and 36 high
    exif[0x010F] = "progsr-cam"
    Image.fromarray(rgb).save(src / "rotated.jpg", exif=exif.tobytes(), icc_profile=ICC, quality=95)

    rc, _, _ = upscale(capsys, src, "-o", tmp_path / "out", "--model", model, "--scale", "2")
    assert rc == 0
    out = tmp_path / "out"
    rgba = Image.open(out / "rgba.png")
    assert rgba.mode == "RGBA" and rgba.size == (72, 60)
    for name in ("deep.png", "deep.tif"):
        got = read_image(out / name).pixels
        assert got.dtype == np.uint16 and got.shape == (60, 72, 3)
        assert (got % 257 != 0).mean() > 0.5  # not 8-bit values scaled up
    assert Image.open(out / "grey.png").mode == "L"
    assert Image.open(out / "palette.png").mode == "RGB"
    rotated = read_image(out / "rotated.jpg")
    assert rotated.pixels.shape == (72, 60, 3)  # orientation applied: upright and twice the size
    assert rotated.icc_profile == ICC
    carried = Image.Exif()
    carried.load(rotated.exif)
    assert carried[0x010F] == "progsr-cam" and carried.get(0x0112, 1) == 1


def test_jpeg_output_drops_alpha_with_a_warning(tmp_path, capsys, model, rgb):
    Image.fromarray(np.dstack([rgb, np.full(rgb.shape[:2], 128, np.uint8)]), "RGBA").save(tmp_path / "t.png")
    rc, _, err = upscale(capsys, tmp_path / "t.png", "-o", tmp_path / "out", "--model", model, "--scale", "2",
                         "--format", "jpg")
    assert rc == 0 and "warning" in err and "transparency dropped" in err
    assert Image.open(tmp_path / "out" / "t.jpg").mode == "RGB"


def test_torchrun_shards_files_across_ranks(tmp_path, model, rgb):
    src = tmp_path / "in"
    (src / "sub").mkdir(parents=True)
    names = [f"img{i}.png" for i in range(4)] + [f"sub/img{i}.png" for i in range(3)]
    for i, name in enumerate(names):
        Image.fromarray(np.roll(rgb, i, axis=1)).save(src / name)
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONUNBUFFERED="1")
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
           "-m", "progsr.cli", "upscale", str(src), "-o", str(tmp_path / "out"), "--recursive",
           "--model", model, "--scale", "2", "--device", "cpu"]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
                            start_new_session=True)
    try:
        stdout, stderr = proc.communicate(timeout=300)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)  # the launcher and both ranks
        stdout, stderr = proc.communicate()
        pytest.fail(f"torchrun did not finish in 300 s\n{stdout}\n{stderr}")
    assert proc.returncode == 0, stdout + stderr
    done = {0: [], 1: []}
    for line in stdout.splitlines():
        match = re.match(r"\[rank (\d)/2\] (\S+) -> ", line)
        if match:
            done[int(match[1])].append(Path(match[2]).relative_to(src).as_posix())
    assert done[0] and done[1] and not set(done[0]) & set(done[1])  # both ranks worked, on different files
    assert sorted(done[0] + done[1]) == sorted(names)  # none skipped, none twice
    outputs = [p.relative_to(tmp_path / "out").as_posix() for p in files_under(tmp_path / "out")]
    assert outputs == sorted(names)
    assert "summary: 7 upscaled" in stdout


def test_a_model_that_cannot_load_leaves_no_output_folder(tmp_path, capsys, rgb):
    Image.fromarray(rgb).save(tmp_path / "good.png")
    out_dir = tmp_path / "out"
    rc, out, err = upscale(capsys, tmp_path / "good.png", "--model", tmp_path / "nope.safetensors", "-o", out_dir)
    assert rc == 2
    assert "nope.safetensors" in err and "Traceback" not in err
    assert not out_dir.exists()


def test_output_file_name_with_one_input_writes_that_file(tmp_path, model, rgb, capsys):
    src = tmp_path / "in.png"
    Image.fromarray(rgb).save(src)
    rc, _, err = upscale(capsys, src, "-o", tmp_path / "out.png", "--model", model, "--scale", "2")
    assert rc == 0, err
    assert (tmp_path / "out.png").is_file() and read_image(tmp_path / "out.png").pixels.shape == (60, 72, 3)
    rc, _, err = upscale(capsys, src, src, "-o", tmp_path / "two.png", "--model", model)
    assert rc == 2 and "exactly one input file" in err and not (tmp_path / "two.png").exists()


def test_suffix_case_is_kept_and_format_names_are_forgiving(tmp_path, model, rgb, capsys):
    Image.fromarray(rgb).save(tmp_path / "photo.JPG", format="JPEG")
    out = tmp_path / "out"
    assert upscale(capsys, tmp_path / "photo.JPG", "-o", out, "--model", model, "--scale", "2")[0] == 0
    assert [p.name for p in files_under(out)] == ["photo.JPG"]
    assert upscale(capsys, tmp_path / "photo.JPG", "-o", out, "--model", model, "--scale", "2",
                   "--format", "JPEG", "--overwrite")[0] == 0
    assert upscale(capsys, tmp_path / "photo.JPG", "-o", out, "--model", model, "--scale", "2",
                   "--format", "tif")[0] == 0
    assert sorted(p.name for p in files_under(out)) == ["photo.JPG", "photo.jpg", "photo.tiff"]


def test_gif_inputs_in_folders_without_warnings(tmp_path, model, rgb, capsys):
    folder = tmp_path / "in"
    folder.mkdir()
    Image.fromarray(rgb).save(folder / "anim.gif")
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error", ResourceWarning)
        rc, _, err = upscale(capsys, folder, "-o", tmp_path / "out", "--model", model, "--scale", "2")
    assert rc == 0 and "unclosed" not in err
    assert [p.name for p in files_under(tmp_path / "out")] == ["anim.png"]


def test_input_folder_as_output_folder_says_what_is_wrong(tmp_path, model, rgb, capsys):
    Image.fromarray(rgb).save(tmp_path / "a.png")
    rc, _, err = upscale(capsys, tmp_path, "-o", tmp_path, "--model", model)
    assert rc == 2 and "inside the output folder" in err


def test_no_empty_output_folders_are_left_behind(tmp_path, model, capsys):
    (tmp_path / "bad.png").write_bytes(b"not a png")
    out = tmp_path / "new" / "out"
    rc, _, err = upscale(capsys, tmp_path / "bad.png", "-o", out, "--model", model)
    assert rc == 1 and "bad.png" in err
    assert not (tmp_path / "new").exists()


def test_stretching_size_warns(tmp_path, model, rgb, capsys):
    Image.fromarray(rgb).save(tmp_path / "a.png")
    rc, _, err = upscale(capsys, tmp_path / "a.png", "-o", tmp_path / "out", "--model", model, "--size", "100x60")
    assert rc == 0 and "aspect ratio" in err


def test_oversized_output_is_refused_with_the_option_named(tmp_path, model, rgb, capsys):
    Image.fromarray(rgb).save(tmp_path / "a.png")
    rc, _, err = upscale(capsys, tmp_path / "a.png", "-o", tmp_path / "out", "--model", model,
                         "--max-output-pixels", "1000")
    assert rc == 1 and "--max-output-pixels" in err
    assert files_under(tmp_path / "out") == [] and not (tmp_path / "out").exists()


def test_help_into_a_closed_pipe_ends_quietly():
    proc = subprocess.run(f"{sys.executable} -m progsr.cli -h | head -1", shell=True, capture_output=True,
                          text=True, timeout=120, env={**os.environ, "PYTHONPATH": str(Path(__file__).parent.parent)})
    assert proc.stdout.startswith("usage") and "Traceback" not in proc.stderr


def test_export_refuses_to_overwrite(tmp_path, model):
    from progsr.errors import UserError
    from progsr.export import export

    (tmp_path / "w.safetensors").write_bytes(b"precious")
    with pytest.raises(UserError, match="--overwrite"):
        export(tmp_path, tmp_path / "w.safetensors")
    assert (tmp_path / "w.safetensors").read_bytes() == b"precious"


def test_an_output_that_cannot_fit_on_disk_is_refused(tmp_path, model, rgb, capsys, monkeypatch):
    import collections
    import shutil

    Image.fromarray(rgb).save(tmp_path / "a.png")
    usage = collections.namedtuple("usage", "total used free")
    monkeypatch.setattr(shutil, "disk_usage", lambda path: usage(10**9, 10**9 - 100, 100))  # 100 bytes free
    rc, _, err = upscale(capsys, tmp_path / "a.png", "-o", tmp_path / "out", "--model", model)
    assert rc == 1 and "on disk" in err and "GiB is free" in err
    assert files_under(tmp_path / "out") == []


def test_each_file_is_read_once_and_planned_once(tmp_path, model, rgb, capsys, monkeypatch):
    import progsr.imageio
    import progsr.inference

    calls = {"read": 0, "header": 0, "plan": 0}
    real_read, real_plan = progsr.inference.read_image, progsr.inference.Upscaler.plan

    def counted_read(*args, **kwargs):
        calls["read"] += 1
        return real_read(*args, **kwargs)

    def counted_plan(self, *args, **kwargs):
        calls["plan"] += 1
        return real_plan(self, *args, **kwargs)

    def no_header(*args, **kwargs):
        calls["header"] += 1
        raise AssertionError("the header is read again")

    monkeypatch.setattr(progsr.inference, "read_image", counted_read)
    monkeypatch.setattr(progsr.inference.Upscaler, "plan", counted_plan)
    monkeypatch.setattr(progsr.imageio, "image_header", no_header)
    for name in ("a.png", "b.png"):
        Image.fromarray(rgb).save(tmp_path / name)
    rc, _, err = upscale(capsys, tmp_path / "a.png", tmp_path / "b.png", "-o", tmp_path / "out", "--model", model,
                         "--scale", "2")
    assert rc == 0, err
    assert calls == {"read": 2, "header": 0, "plan": 2}


def test_the_ray_engine_without_ray_is_a_one_line_error(tmp_path, rgb, capsys, monkeypatch):
    Image.fromarray(rgb).save(tmp_path / "a.png")
    monkeypatch.setitem(sys.modules, "ray", None)  # as if the ray extra were not installed
    rc, out, err = upscale(capsys, tmp_path / "a.png", "-o", tmp_path / "out", "--engine", "ray")
    assert rc == 2 and "pip install 'progsr[ray]'" in err and "Traceback" not in err
    assert not (tmp_path / "out").exists()
