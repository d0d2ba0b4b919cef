"""`progsr upscale --engine ray` on a local Ray (2 CPUs): the local engine's bytes, failures reported, resumes."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from progsr.cli import main
from progsr.imageio import write_image
from progsr.models import save_generator

ray = pytest.importorskip("ray", reason="the ray extra is not installed")


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    """A local Ray with 2 CPUs for this module; its session files stay under pytest's temp folder."""
    temp = tmp_path_factory.mktemp("ray")
    ray.init(num_cpus=2, include_dashboard=False, logging_level="WARNING", _temp_dir=str(temp))
    yield ray.get_runtime_context().gcs_address
    ray.shutdown()


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    from helpers import random_tiny

    return str(save_generator(random_tiny(3), tmp_path_factory.mktemp("model") / "tiny.safetensors"))


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    """RGB, RGBA, 16-bit colour, grey and a JPEG in a subfolder, plus one corrupt file."""
    root = tmp_path_factory.mktemp("inputs")
    rng = np.random.default_rng(0)
    smooth = np.kron(rng.integers(0, 256, (6, 7, 3), dtype=np.uint8), np.ones((5, 5, 1), np.uint8))  # 30x35
    write_image(root / "rgb.png", smooth)
    write_image(root / "rgba.png", np.dstack([smooth, rng.integers(0, 256, (30, 35), dtype=np.uint8)]))
    write_image(root / "deep.png", smooth.astype(np.uint16) * 257 + rng.integers(0, 200, smooth.shape).astype(np.uint16))
    write_image(root / "grey.png", smooth[:, :, 0])
    (root / "sub").mkdir()
    Image.fromarray(smooth).save(root / "sub" / "photo.jpg", quality=80)
    (root / "corrupt.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"\x00" * 40)
    return root


def run(capsys, *args) -> tuple[int, str]:
    rc = main(["upscale", *map(str, args)])
    out, err = capsys.readouterr()
    return rc, out + err


def outputs(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*"))
            if p.is_file() and p.name != "progsr-summary.json"}


@pytest.fixture(scope="module")
def local(folder, model, tmp_path_factory):
    """The local engine's outputs for the folder (the reference)."""
    out = tmp_path_factory.mktemp("local")
    assert main(["upscale", str(folder), "-o", str(out), "--scale", "2", "--model", model, "--recursive"]) == 1
    return outputs(out)


def test_outputs_are_the_local_engines_and_the_corrupt_file_is_reported(cluster, folder, model, local, tmp_path,
                                                                        capsys):
    rc, text = run(capsys, folder, "-o", tmp_path, "--scale", 2, "--model", model, "--recursive",
                   "--engine", "ray", "--actors", 2)
    assert rc == 1
    assert set(local) == {"rgb.png", "rgba.png", "deep.png", "grey.png", "sub/photo.jpg"}
    assert outputs(tmp_path) == local  # byte for byte: 16-bit, alpha, grey and JPEG alike
    summary = json.loads((tmp_path / "progsr-summary.json").read_text())
    assert summary["upscaled"] == 5 and summary["skipped"] == 0
    reason = f"{folder / 'corrupt.png'}: not an image file (or a format Pillow cannot read)"  # the local engine's
    assert summary["failed"] == [reason]
    assert "summary: 5 upscaled, 0 skipped (output exists), 1 failed" in text
    assert f"failed: {reason}" in text
    assert not list(tmp_path.rglob("*.tmp"))


def test_a_second_run_writes_nothing_new(cluster, folder, model, local, tmp_path, capsys):
    args = (folder, "-o", tmp_path, "--scale", 2, "--model", model, "--recursive", "--engine", "ray", "--actors", 1)
    run(capsys, *args)
    written = {p: (p.stat().st_mtime_ns, p.stat().st_ino) for p in tmp_path.rglob("*.*g") if p.is_file()}
    rc, text = run(capsys, *args)
    assert rc == 1  # the corrupt file is tried again and fails again
    assert "summary: 0 upscaled, 5 skipped (output exists), 1 failed" in text
    assert {p: (p.stat().st_mtime_ns, p.stat().st_ino) for p in written} == written


def test_a_pyarrow_uri_output_gets_the_same_files(cluster, folder, model, local, tmp_path, capsys):
    rc, _ = run(capsys, folder, "-o", f"file://{tmp_path}/out", "--scale", 2, "--model", model, "--recursive",
                "--engine", "ray", "--actors", 2)
    assert rc == 1
    assert outputs(tmp_path / "out") == local


def test_a_killed_job_resumes_to_the_same_outputs(cluster, model, tmp_path, capsys):
    src, ref, out = tmp_path / "in", tmp_path / "ref", tmp_path / "out"
    src.mkdir()
    rng = np.random.default_rng(1)
    for i in range(12):
        write_image(src / f"img{i:02d}.png", rng.integers(0, 256, (64, 64, 3), dtype=np.uint8))
    common = ["--scale", "8", "--model", model]
    assert main(["upscale", str(src), "-o", str(ref), *common]) == 0
    cmd = [sys.executable, "-m", "progsr.cli", "upscale", str(src), "-o", str(out), *common,
           "--engine", "ray", "--actors", "1", "--ray-address", cluster]
    job = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    deadline = time.monotonic() + 240
    while not list(out.glob("*.png")) and job.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    os.killpg(job.pid, signal.SIGKILL)
    job.wait()
    written = len(list(out.glob("*.png")))
    assert 0 < written < 12, f"the job was not caught halfway ({written} of 12 written)"
    rc, text = run(capsys, src, "-o", out, *common, "--engine", "ray", "--actors", 2)
    assert rc == 0 and f"{12 - written} upscaled, {written} skipped" in text
    assert outputs(out) == outputs(ref)
    assert not list(out.glob(".*.tmp"))


def test_resources_no_node_has_are_refused_not_waited_for(cluster, folder, model, tmp_path, capsys):
    common = (folder, "-o", tmp_path / "out", "--model", model, "--scale", 2, "--engine", "ray")
    rc, text = run(capsys, *common, "--actor-gpus", 1)
    assert rc == 2 and "--actor-gpus 1: the Ray cluster has 0 GPUs" in text
    rc, text = run(capsys, *common, "--actor-memory", 100000)
    assert rc == 2 and "--actor-memory 100000: more than the Ray cluster's" in text
    assert not (tmp_path / "out").exists()


def test_bad_options_fail_before_any_cluster_work(tmp_path, folder, capsys):
    rc, text = run(capsys, folder, "-o", tmp_path / "x.png", "--engine", "ray")
    assert rc == 2 and "writes into a folder" in text
    rc, text = run(capsys, folder, "-o", tmp_path / "out", "--engine", "ray", "--scale", 3)
    assert rc == 2 and "--scale 3" in text
    assert not (tmp_path / "out").exists()
