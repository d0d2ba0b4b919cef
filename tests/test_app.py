"""The web app through its public API (gradio_client against a server on localhost), plus its CLI errors."""

import re
import threading
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

pytest.importorskip("gradio")
gradio_client = pytest.importorskip("gradio_client")

from progsr import webapp, webapp_jobs  # noqa: E402
from progsr.cli import main as cli_main  # noqa: E402
from progsr.inference import Upscaler  # noqa: E402
from progsr.models import ProgressiveGenerator, save_generator, tiny_config  # noqa: E402

pytestmark = pytest.mark.filterwarnings("ignore::Warning:gradio.queueing")  # gradio's own pandas deprecation noise
INFO = re.compile(r"^(\d+)x(\d+) → (\d+)x(\d+), [\d.]+ s, cpu, fp32, (?:torch|onnxruntime)$")


def tiny_weights(path: Path, seed: int) -> Path:
    """A tiny random generator whose stages really change the image (its to_rgb heads start at zero)."""
    torch.manual_seed(seed)
    model = ProgressiveGenerator(tiny_config())
    with torch.no_grad():
        for p in model.parameters():
            p.normal_(0.0, 0.05)
    return save_generator(model, path)


def noise_png(path: Path, width: int, height: int, seed: int) -> Path:
    rng = np.random.default_rng(seed)
    Image.fromarray(rng.integers(0, 256, (height, width, 3), dtype=np.uint8)).save(path)
    return path


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    """A running app on a free localhost port: tiny model, small pixel and upload limits."""
    root = tmp_path_factory.mktemp("app")
    weights = tiny_weights(root / "tiny.safetensors", seed=1)
    config = webapp.AppConfig(model=str(weights), device="cpu", max_pixels=64 * 64, max_output_pixels=64 * 64 * 16,
                              max_file_bytes=100_000, temp_dir=str(root / "requests"), examples=False)
    engine = webapp.Engine(config)
    running, peak = [0], [0]
    real_stages = engine.stages

    def counted_stages(*args, **kwargs):  # the real stages, counting how many jobs run at once
        running[0] += 1
        peak[0] = max(peak[0], running[0])
        try:
            yield from real_stages(*args, **kwargs)
        finally:
            running[0] -= 1

    engine.stages = counted_stages
    demo = webapp.launch(webapp.build_app(config, engine), host="127.0.0.1", port=0, block=False)
    yield {"url": demo.local_url, "weights": weights, "root": root, "config": config, "peak_jobs": peak}
    demo.close()


@pytest.fixture
def client(server, tmp_path):
    return gradio_client.Client(server["url"], verbose=False, download_files=str(tmp_path / "downloads"))


def call(client, image, scale="4x", realism=0.0, tile="auto", fmt="png"):
    return client.predict(gradio_client.handle_file(str(image)), scale, realism, tile, fmt, api_name="/upscale")


def test_upscale_4x_returns_the_models_output(server, client, tmp_path):
    src = noise_png(tmp_path / "in.png", 32, 24, seed=0)
    (before, after), download, info, (detail_before, detail_after) = call(client, src, "4x")
    out = np.asarray(Image.open(download))
    assert Path(download).name == "in_x4.png"
    assert out.shape == (96, 128, 3)
    expected = Upscaler(model=str(server["weights"]), device="cpu").upscale(np.asarray(Image.open(src)), scale=4)
    np.testing.assert_array_equal(out, expected)
    assert INFO.match(info).groups() == ("32", "24", "128", "96"), info
    assert Image.open(before).size == Image.open(after).size == (128, 96)
    np.testing.assert_array_equal(np.asarray(Image.open(after).convert("RGB")), expected)
    # the 1:1 detail view: the centre of the result (here all of it: smaller than the detail window)
    np.testing.assert_array_equal(np.asarray(Image.open(detail_after).convert("RGB")), expected)
    assert Image.open(detail_before).size == (128, 96)


def test_stages_stream_in_order_then_the_file(client, tmp_path):
    src = noise_png(tmp_path / "in.png", 16, 12, seed=1)
    job = client.submit(gradio_client.handle_file(str(src)), "8x", 0.0, "auto", "jpg", api_name="/upscale")
    job.result(timeout=120)
    updates = job.outputs()
    assert updates[0] == (None, None, "Upscaling 16x12 by 8x: working on x2 ...", None)  # the old result cleared
    stages = [u for u in updates[1:] if u[1] is None]
    assert [u[2].split(" ")[0] for u in stages] == ["x2", "x4", "x8"]
    assert [Image.open(u[0][1]).size for u in stages] == [(32, 24), (64, 48), (128, 96)]
    final = updates[-1]
    assert Path(final[1]).suffix == ".jpg" and Image.open(final[1]).format == "JPEG"
    assert Image.open(final[1]).size == (128, 96)
    assert INFO.match(final[2]).groups() == ("16", "12", "128", "96")


def test_alpha_and_grey_keep_their_channels(client, tmp_path):
    rng = np.random.default_rng(2)
    rgba = tmp_path / "rgba.png"
    Image.fromarray(rng.integers(0, 256, (10, 12, 4), dtype=np.uint8), "RGBA").save(rgba)
    grey = tmp_path / "grey.png"
    Image.fromarray(rng.integers(0, 256, (10, 12), dtype=np.uint8), "L").save(grey)
    _, download, _, _ = call(client, rgba, "2x")
    assert Image.open(download).mode == "RGBA" and Image.open(download).size == (24, 20)
    _, download, _, _ = call(client, grey, "2x", fmt="webp")
    assert Image.open(download).format == "WEBP" and Image.open(download).size == (24, 20)


@pytest.mark.parametrize("content, expected", [
    (b"this is a text file, not a picture", "notes.png: not an image file"),
    (None, "notes.png: corrupt or truncated image"),
    (b"", "notes.png: empty file"),
])
def test_bad_files_give_one_readable_line(client, tmp_path, content, expected):
    bad = tmp_path / "notes.png"
    if content is None:  # the first 100 bytes of a real PNG
        content = noise_png(tmp_path / "ok.png", 32, 24, seed=3).read_bytes()[:100]
    bad.write_bytes(content)
    with pytest.raises(gradio_client.exceptions.AppError) as err:
        call(client, bad)
    message = str(err.value)
    assert message.startswith(expected), message
    assert "Traceback" not in message and "/tmp" not in message and "\n" not in message


def test_pixel_limits_are_explained(client, tmp_path):
    big = noise_png(tmp_path / "big.png", 80, 60, seed=4)  # 4800 pixels > 64 * 64
    with pytest.raises(gradio_client.exceptions.AppError, match=r"big.png is 80x60 .* accepts images up to"):
        call(client, big, "2x")
    ok = noise_png(tmp_path / "ok.png", 64, 64, seed=5)  # fits, but x8 would exceed the output limit
    with pytest.raises(gradio_client.exceptions.AppError, match=r"8x would make 512x512 .* Pick a smaller scale"):
        call(client, ok, "8x")


def test_bad_options_are_refused(client, tmp_path):
    src = noise_png(tmp_path / "in.png", 8, 8, seed=6)
    with pytest.raises(gradio_client.exceptions.AppError, match="needs the shipped psnr and gan weights"):
        call(client, src, realism=0.5)  # a --model PATH server has no GAN to blend with
    with pytest.raises(gradio_client.exceptions.AppError, match="tile size"):
        call(client, src, tile="12")


def test_upload_size_limit_is_enforced_by_the_server(server, tmp_path):
    import httpx

    payload = tmp_path / "huge.png"
    payload.write_bytes(b"\0" * (server["config"].max_file_bytes + 1))
    with open(payload, "rb") as f:
        response = httpx.post(server["url"] + "gradio_api/upload", files={"files": ("huge.png", f, "image/png")})
    assert response.status_code == 413
    with pytest.raises(ValueError, match="exceeds the maximum file size"):
        call(gradio_client.Client(server["url"], verbose=False), payload)


def test_concurrent_users_get_their_own_results_and_temp_files_go(server, tmp_path):
    sizes = [(20, 16), (12, 20), (16, 8)]
    results, errors = {}, []

    def user(k):
        try:
            src = noise_png(tmp_path / f"user{k}.png", *sizes[k], seed=10 + k)
            own = gradio_client.Client(server["url"], verbose=False, download_files=str(tmp_path / f"dl{k}"))
            results[k] = (src, call(own, src, "2x")[1])
        except Exception as err:  # noqa: BLE001 - reported below
            errors.append(err)

    threads = [threading.Thread(target=user, args=(k,)) for k in range(len(sizes))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert not errors and len(results) == len(sizes)
    assert server["peak_jobs"][0] == 1  # the queue ran one job at a time on the one device
    upscaler = Upscaler(model=str(server["weights"]), device="cpu")
    for k, (src, download) in results.items():
        assert Path(download).name == f"user{k}_x2.png"
        expected = upscaler.upscale(np.asarray(Image.open(src)), scale=2)
        np.testing.assert_array_equal(np.asarray(Image.open(download)), expected)
    assert list((server["root"] / "requests").iterdir()) == []  # every per-request folder was removed


def test_realism_blends_the_shipped_weights(tmp_path, monkeypatch):
    weights = tmp_path / "weights"
    psnr = tiny_weights(weights / "progsr_x8_psnr.safetensors", seed=1)
    gan = tiny_weights(weights / "progsr_x8_gan.safetensors", seed=2)
    monkeypatch.setenv("PROGSR_WEIGHTS", str(weights))
    engine = webapp.Engine(webapp.AppConfig(model="psnr", device="cpu"))
    assert engine.has_gan
    img = np.asarray(Image.open(noise_png(tmp_path / "in.png", 12, 10, seed=7)))
    final = {r: list(engine.stages(img, 4, r, None))[-1][1] for r in (0.0, 1.0, 0.5)}
    np.testing.assert_array_equal(final[0.0], Upscaler(model=str(psnr), device="cpu").upscale(img, 4))
    np.testing.assert_array_equal(final[1.0], Upscaler(model=str(gan), device="cpu").upscale(img, 4))
    assert not np.array_equal(final[0.5], final[0.0]) and not np.array_equal(final[0.5], final[1.0])

    def slider(demo):
        return next(b for b in demo.blocks.values() if getattr(b, "elem_id", None) == "realism")

    assert slider(webapp.build_app(engine=engine)).interactive is True
    no_gan = webapp.Engine(webapp.AppConfig(model=str(psnr), device="cpu"))
    assert not no_gan.has_gan and slider(webapp.build_app(engine=no_gan)).interactive is False


def test_cli_reports_missing_weights_without_traceback(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("PROGSR_WEIGHTS", str(tmp_path / "empty"))
    monkeypatch.delenv(webapp.MODEL_ENV, raising=False)
    assert cli_main(["app", "--port", "0"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("progsr app: error: ") and "--model PATH" in err and "Traceback" not in err
    assert cli_main(["app", "--model", str(tmp_path / "nope.safetensors")]) == 2
    assert "nope.safetensors: no such weights file" in capsys.readouterr().err


def test_centre_box_is_the_middle_at_most_size_pixels():
    assert webapp_jobs.centre_box(1000, 800, 384) == (slice(308, 692), slice(208, 592))
    assert webapp_jobs.centre_box(100, 50, 384) == (slice(0, 100), slice(0, 50))


def test_a_port_in_use_is_one_line_naming_the_option(tmp_path):
    import socket

    from progsr.errors import UserError

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        port = sock.getsockname()[1]
        with pytest.raises(UserError, match=f"127.0.0.1:{port}.*--port N"):
            webapp.launch(host="127.0.0.1", port=port, block=False, model="nowhere.safetensors")
