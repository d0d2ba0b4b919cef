"""The Gradio web app: upload, pick scale and realism, watch x2 -> x4 -> x8 stream in, compare, download.

`progsr app [--host H] [--port P] [--share] [--model psnr|gan|PATH] ...`, or `python app/app.py`.

One Engine (one Upscaler, weights loaded once) serves every request. The upscale event runs one job
per device at a time behind a bounded queue. Each request writes into its own temp folder, removed
when the request ends; Gradio keeps its copies of uploads and results under content-hashed folders
and `delete_cache` sweeps them.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import re
import shutil
import socket
import tempfile
import time
import traceback
import warnings
from pathlib import Path

import numpy as np
from PIL import Image

from progsr.errors import UserError
from progsr.imageio import to_8bit

EXAMPLES_DIR = Path(__file__).resolve().parent / "examples"
MODEL_ENV = "PROGSR_APP_MODEL"  # default for --model: "psnr", "gan" or a .safetensors path
FORMATS = ("png", "jpg", "webp")
TILE_CHOICES = ("auto", "128", "256", "512", "1024")
DISPLAY_PNG_MAX_PIXELS = 4_000_000  # bigger slider images go to the browser as JPEG; the download is lossless
DETAIL_SIZE = 384  # output pixels per side of the 1:1 detail view
PRECISION_NAMES = {"torch.float32": "fp32", "torch.float16": "fp16", "torch.bfloat16": "bf16"}


@dataclasses.dataclass
class AppConfig:
    """Start-up settings of the app; the `progsr app` flags map onto these one to one."""

    model: str = "psnr"  # "psnr" / "gan" (shipped weights; realism slider on when both exist) or a path
    device: str = "auto"  # auto: the GPU when there is one (bf16/fp16), else the CPU (fp32)
    precision: str = "auto"
    max_file_bytes: int = 20 * 2**20  # per upload; Gradio refuses bigger files before they reach us
    max_pixels: int = 2**21  # input width * height (2 MP)
    max_output_pixels: int = 2**24  # output width * height (4096 x 4096)
    max_queue: int = 16  # jobs waiting beyond this are turned away with "queue is full"
    temp_dir: str | None = None  # parent of the per-request folders; default <system tmp>/progsr-app
    cache_seconds: int = 3600  # Gradio's copies of uploads and results older than this are deleted
    examples: bool = True

    @classmethod
    def from_env(cls, **overrides) -> "AppConfig":
        """Defaults, then $PROGSR_APP_MODEL, then the keyword overrides that are not None."""
        config = cls()
        if os.environ.get(MODEL_ENV):
            config.model = os.environ[MODEL_ENV]
        for key, value in overrides.items():
            if value is not None:
                setattr(config, key, value)
        return config


class Engine:
    """The server's one model: an Upscaler loaded once; realism and tile size are chosen per job."""

    def __init__(self, config: AppConfig):
        from progsr.inference import Upscaler

        from progsr.models.io import REALISM_MODELS, realism_available

        shipped = config.model in REALISM_MODELS
        self.has_gan = realism_available(config.model)  # a --model PATH runs as is, without the slider
        self.default_realism = 1.0 if config.model == "gan" else 0.0
        if not shipped and not Path(config.model).expanduser().is_file():
            raise UserError(f"{config.model}: no such weights file (give --model psnr, gan or a .safetensors path)")
        self.upscaler = Upscaler(model=config.model, device=config.device,
                                 precision=config.precision, max_pixels=config.max_pixels,
                                 realism=self.default_realism if self.has_gan else None)
        self.device = str(self.upscaler.device)
        self.precision = PRECISION_NAMES.get(str(self.upscaler.dtype), str(self.upscaler.dtype))
        self.scales = tuple(self.upscaler.scales)
        self.model_name = config.model

    def stages(self, pixels: np.ndarray, scale: int, realism: float, tile: int | None):
        """Yield (stage_scale, pixels) for x2 ... x`scale`. The queue runs one job per device at a time,
        which is what makes setting the shared Upscaler's tile size here safe."""
        self.upscaler.tile = tile
        yield from self.upscaler.upscale_stages(pixels, scale, realism=realism if self.has_gan else None)


# ---- request helpers -------------------------------------------------------------------------------


def image_size(path: Path) -> tuple[int, int]:
    """(width, height) from the file header without decoding; UserError (via progsr.imageio) if unreadable."""
    try:
        with Image.open(path) as img:
            return img.size
    except Exception:
        from progsr import imageio

        imageio.read_image(path)  # raises the precise UserError: empty, not an image, corrupt ...
        raise UserError(f"{path}: not an image file (or a format Pillow cannot read)") from None


def check_limits(width: int, height: int, scale: int | None, config: AppConfig, name: str) -> None:
    """Refuse inputs above the pixel limits, saying what the limit is and what to do instead."""
    pixels = width * height
    if pixels > config.max_pixels:
        raise UserError(
            f"{name} is {width}x{height} ({pixels / 1e6:.1f} MP); this app accepts images up to "
            f"{config.max_pixels / 1e6:.1f} MP. Downscale it first, or run `progsr upscale` on your own machine."
        )
    if scale is not None and pixels * scale * scale > config.max_output_pixels:
        raise UserError(
            f"{name}: {scale}x would make {width * scale}x{height * scale} ({pixels * scale * scale / 1e6:.1f} MP); "
            f"this app makes at most {config.max_output_pixels / 1e6:.1f} MP. Pick a smaller scale or image."
        )


def to_display(pixels: np.ndarray) -> np.ndarray:
    """uint8 RGB or RGBA for the browser: 16-bit drops to 8-bit, grey (+alpha) becomes RGB(A)."""
    pixels = to_8bit(pixels)
    if pixels.ndim == 2:
        pixels = pixels[:, :, None]
    if pixels.shape[2] in (1, 2):
        grey = np.repeat(pixels[:, :, :1], 3, axis=2)
        pixels = np.concatenate([grey, pixels[:, :, 1:]], axis=2)
    return np.ascontiguousarray(pixels)


def save_display(pixels: np.ndarray, stem: Path) -> str:
    """Write the browser's copy: PNG when small, JPEG (quality 92) when large; returns its path."""
    img = Image.fromarray(to_display(pixels))
    if img.width * img.height <= DISPLAY_PNG_MAX_PIXELS:
        path = stem.with_suffix(".png")
        img.save(path, compress_level=1)
    else:
        path = stem.with_suffix(".jpg")
        img.convert("RGB").save(path, quality=92)
    return str(path)


def centre_box(height: int, width: int, size: int) -> tuple[slice, slice]:
    """The centre size x size window (or the whole image when smaller) as numpy slices."""
    h, w = min(height, size), min(width, size)
    top, left = (height - h) // 2, (width - w) // 2
    return slice(top, top + h), slice(left, left + w)


def parse_scale(value) -> int:
    """'4x' / 'x4' / 4 -> 4."""
    match = re.fullmatch(r"x?(\d+)x?", str(value).strip().lower())
    if not match:
        raise UserError(f"scale must look like 2x, 4x or 8x, got {value!r}")
    return int(match.group(1))


def parse_tile(value) -> int | None:
    """Tile dropdown -> the Upscaler's tile: None = automatic (from free memory), else N LR pixels."""
    text = str(value).strip().lower()
    if text in ("", "auto", "none"):
        return None
    if not text.isdigit() or not 64 <= int(text) <= 4096:
        raise UserError(f"tile size must be 'auto' or a number of pixels from 64 to 4096, got {value!r}")
    return int(text)


def example_images() -> list[Path]:
    """The bundled example inputs (progsr/examples/*.png|jpg), sorted."""
    return sorted(p for p in EXAMPLES_DIR.glob("*") if p.suffix.lower() in (".png", ".jpg", ".jpeg"))


# ---- the app ---------------------------------------------------------------------------------------


def build_app(config: AppConfig | None = None, engine: Engine | None = None, **overrides):
    """The gr.Blocks app, queued but not launched. Pass an AppConfig or its fields as keywords (model=PATH)."""
    import gradio as gr

    from progsr import imageio

    config = config or AppConfig.from_env(**overrides)
    engine = engine or Engine(config)
    temp_root = Path(config.temp_dir or Path(tempfile.gettempdir()) / "progsr-app")
    temp_root.mkdir(parents=True, exist_ok=True)

    def fail(message: str, title: str = "Cannot upscale this image") -> gr.Error:
        return gr.Error(message, title=title, print_exception=False)

    def uploaded(payload) -> tuple[Path, str]:
        """(server path, the name the user gave it) of the uploaded file; gr.Error when there is none."""
        if not payload or not payload.get("path"):
            raise fail("No image yet: upload one or pick an example first.")
        path = Path(payload["path"])
        return path, payload.get("orig_name") or path.name

    def read(path: Path, name: str, scale: int | None) -> imageio.ImageData:
        """Check limits from the header, then decode; every UserError names the upload, not our temp path."""
        try:
            width, height = image_size(path)
            check_limits(width, height, scale, config, name)
            return imageio.read_image(path)
        except UserError as err:
            raise fail(str(err).replace(str(path), name)) from None

    def check_upload(payload, scale_value):
        """On upload, example pick or scale change: a bad file is cleared with one message; an output over the
        limit at the chosen scale is said at once, not after queueing."""
        if not payload or not payload.get("path"):
            return gr.update(), gr.update()
        path, name = uploaded(payload)
        try:
            width, height = image_size(path)
            check_limits(width, height, None, config, name)
            height, width = imageio.read_image(path).pixels.shape[:2]
        except UserError as err:
            message = str(err).replace(str(path), name)
            gr.Warning(message, title="Cannot use this file")
            return None, f"**Cannot use this file.** {message}"
        try:
            check_limits(width, height, parse_scale(scale_value), config, name)
        except UserError as err:
            gr.Warning(str(err), title="Too large at this scale")
            return gr.update(), f"{name}: {width}x{height}. **{err}**"
        return gr.update(), f"{name}: {width}x{height}. Pick a scale and press **Upscale**."

    def upscale(payload, scale, realism, tile, fmt):
        """Stream (before, after) at x2, x4, ... as each stage finishes; then the download and the info line."""
        path, name = uploaded(payload)
        try:
            scale, tile, realism = parse_scale(scale), parse_tile(tile), float(realism)
            if scale not in engine.scales:
                raise UserError(f"this model makes {', '.join(f'{s}x' for s in engine.scales)}, not {scale}x")
            if str(fmt).lower() not in FORMATS:
                raise UserError(f"output format must be one of {', '.join(FORMATS)}, got {fmt!r}")
            if not 0.0 <= realism <= 1.0:
                raise UserError(f"realism must be between 0 and 1, got {realism}")
            if realism != engine.default_realism and not engine.has_gan:
                raise UserError(f"realism needs the shipped psnr and gan weights; this server runs "
                                f"{Path(engine.model_name).name} only (realism {engine.default_realism:g})")
        except (UserError, ValueError) as err:
            raise fail(str(err)) from None
        data = read(path, name, scale)
        height, width = data.pixels.shape[:2]

        request_dir = Path(tempfile.mkdtemp(prefix="request-", dir=temp_root))
        try:
            start = time.perf_counter()
            shown = Image.fromarray(to_display(data.pixels))
            pair = detail = result = None
            for stage, result in engine.stages(data.pixels, scale, realism, tile):
                # Each stage arrives as a before/after pair at its own size: the slider is the live preview,
                # and the detail slider shows its centre at 1:1, where an x8 result is judged.
                h, w = result.shape[:2]
                before = np.asarray(shown.resize((w, h), Image.Resampling.BICUBIC))
                pair = (save_display(before, request_dir / f"before_x{stage}"),
                        save_display(result, request_dir / f"after_x{stage}"))
                box = centre_box(h, w, DETAIL_SIZE)
                detail = (save_display(before[box], request_dir / f"detail_before_x{stage}"),
                          save_display(result[box], request_dir / f"detail_after_x{stage}"))
                more = f", working on x{stage * 2} ..." if stage < scale else ", writing the file ..."
                yield pair, None, f"x{stage} ready ({w}x{h}){more}", detail
            out_path = request_dir / f"{Path(name).stem or 'image'}_x{scale}.{str(fmt).lower()}"
            with warnings.catch_warnings(record=True) as caught:  # e.g. "JPEG has no alpha channel"
                warnings.simplefilter("always")
                imageio.write_image(out_path, result, data.icc_profile, data.exif)
            notes = [str(warning.message).replace(str(out_path), out_path.name) for warning in caught]
            for note in notes:
                gr.Warning(note)
            seconds = time.perf_counter() - start
            out_h, out_w = result.shape[:2]
            info = f"{width}x{height} → {out_w}x{out_h}, {seconds:.2f} s, {engine.device} ({engine.precision})"
            if engine.has_gan:
                info += f", realism {realism:g}"
            info += "".join(f"\n\nNote: {note}" for note in notes)  # also here: toasts fade, the info line stays
            yield pair, str(out_path), info, detail
        except UserError as err:
            raise fail(str(err).replace(str(path), name)) from None
        except Exception as err:  # a bug or out of memory: the traceback goes to the server log, one line to the user
            traceback.print_exc()
            oom = "out of memory" in str(err).lower()
            hint = "try a smaller image, scale or tile size" if oom else "the details are in the server log"
            raise fail(f"{type(err).__name__}: {str(err).splitlines()[0][:200] if str(err) else ''} ({hint})",
                       title="Upscaling failed") from None
        finally:
            # Runs after Gradio has copied the last yield's files into its cache, or when the client leaves.
            shutil.rmtree(request_dir, ignore_errors=True)

    scale_names = [f"{s}x" for s in engine.scales]
    if engine.has_gan:
        realism_info = "0 = faithful (PSNR model), 1 = GAN detail; in between blends the two networks"
    else:
        realism_info = (f"Off: this server has no pair of shipped psnr + gan weights "
                        f"(it runs {Path(engine.model_name).name})")
    with gr.Blocks(title="progsr: progressive super-resolution", analytics_enabled=False,
                   delete_cache=(max(60, config.cache_seconds // 4), config.cache_seconds)) as demo:
        gr.Markdown("## progsr: progressive super-resolution\nUpload an image, pick a scale and press **Upscale**. "
                    "The x2 result appears first, then x4, then x8.")
        with gr.Row():
            with gr.Column(scale=2):
                image_in = gr.Image(label="Input image", type="filepath", image_mode=None, height=320,
                                    sources=["upload", "clipboard"], elem_id="input-image")
                if config.examples and example_images():
                    gr.Examples([[str(p)] for p in example_images()[:6]], inputs=[image_in], label="Examples",
                                elem_id="examples")
                scale = gr.Radio(scale_names, value="4x" if "4x" in scale_names else scale_names[-1], label="Scale",
                                 elem_id="scale")
                realism = gr.Slider(0.0, 1.0, value=engine.default_realism, step=0.05, label="Realism",
                                    info=realism_info, interactive=engine.has_gan, elem_id="realism")
                with gr.Accordion("Advanced", open=False):
                    tile = gr.Dropdown(list(TILE_CHOICES), value="auto", label="Tile size (input pixels)",
                                       info="auto: from free memory; smaller tiles need less memory", elem_id="tile")
                    fmt = gr.Radio(list(FORMATS), value="png", label="Output format", elem_id="format")
                run = gr.Button("Upscale", variant="primary", elem_id="run")
            with gr.Column(scale=3):
                compare = gr.ImageSlider(label="Before (bicubic) / after (progsr)", interactive=False, max_height=560,
                                         buttons=["fullscreen"], elem_id="compare")
                info = gr.Markdown(elem_id="info")
                detail = gr.ImageSlider(label=f"1:1 detail: the centre {DETAIL_SIZE} px of the result at full resolution",
                                        interactive=False, max_height=DETAIL_SIZE, elem_id="detail")
                download = gr.File(label="Full-resolution download", interactive=False, elem_id="download")

        # preprocess=False: the handlers get the uploaded file's path and validate it with progsr.imageio,
        # so a corrupt file is a readable message instead of Pillow's exception inside Gradio.
        # change, not upload: an example pick is checked (and described) like an upload.
        for trigger in (image_in.change, scale.change):
            trigger(check_upload, [image_in, scale], [image_in, info], preprocess=False, show_progress="hidden",
                    api_name=False, concurrency_limit=4, concurrency_id="check-upload")
        # "minimal": Gradio's time estimate comes from earlier jobs of other sizes; the info line says the stage.
        run.click(upscale, [image_in, scale, realism, tile, fmt], [compare, download, info, detail],
                  preprocess=False, api_name="upscale", concurrency_limit=1, concurrency_id=f"upscale-{engine.device}",
                  show_progress="minimal")
    demo.queue(max_size=config.max_queue, default_concurrency_limit=1)
    demo.progsr_config = config  # launch() takes the upload limit from here
    return demo


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port that is free on host right now."""
    with socket.socket() as sock:
        sock.bind((host, 0))
        return sock.getsockname()[1]


def check_port(host: str, port: int) -> None:
    """A port in use is one line naming the option, not Gradio's traceback."""
    with socket.socket() as sock:
        try:
            sock.bind((host, port))
        except OSError as err:
            raise UserError(f"cannot listen on {host}:{port} ({err.strerror or err}); pass --port N "
                            "(0 = any free port)") from None


def launch(demo=None, host: str = "127.0.0.1", port: int | None = 7860, share: bool = False, block: bool = True,
           **overrides):
    """Serve the app (built from overrides when demo is None); port 0/None = a free one. block=False returns
    at once with the running app (demo.local_url; stop it with demo.close())."""
    port = port or free_port(host)
    check_port(host, port)
    demo = demo or build_app(**overrides)
    config = getattr(demo, "progsr_config", AppConfig())
    demo.launch(server_name=host, server_port=port, share=share, max_file_size=config.max_file_bytes,
                prevent_thread_lock=True, ssr_mode=False, show_error=False, quiet=True)
    if block:
        print(f"progsr app: open {demo.local_url}" + (f" or {demo.share_url}" if demo.share_url else
                                                         " (--share for a temporary public link)")
              + "; Ctrl-C to stop", flush=True)
        try:
            demo.block_thread()
        except KeyboardInterrupt:
            demo.close()
    return demo


def parse_bytes(text: str) -> int:
    """'20MB' / '512kb' / '1000000' -> bytes (binary multiples)."""
    match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([kmg]?)i?b?\s*", str(text).lower())
    if not match:
        raise argparse.ArgumentTypeError(f"not a size: {text!r} (e.g. 20MB)")
    return int(float(match.group(1)) * 1024 ** " kmg".index(match.group(2) or " "))


def main(argv: list[str] | None = None) -> int:
    """`progsr app`: serve the web app until interrupted."""
    parser = argparse.ArgumentParser(prog="progsr app", description="Start the progsr web app (Gradio).")
    parser.add_argument("--host", default="127.0.0.1", help="interface to listen on; 0.0.0.0 for every interface")
    parser.add_argument("--port", type=int, default=7860, help="port; 0 for any free port (default 7860)")
    parser.add_argument("--share", action="store_true", help="also open a temporary public gradio.live link")
    parser.add_argument("--model", help=f"psnr, gan or a weights path (default ${MODEL_ENV}, else psnr)")
    parser.add_argument("--device", help="auto, cpu, cuda or cuda:N (default auto)")
    parser.add_argument("--precision", help="auto, fp32, fp16 or bf16 (default auto: fp32 on CPU, bf16/fp16 on GPU)")
    parser.add_argument("--max-file-size", type=parse_bytes, dest="max_file_bytes",
                        help="largest upload (default 20MB)")
    parser.add_argument("--max-pixels", type=int, help=f"largest input in pixels (default {AppConfig.max_pixels})")
    parser.add_argument("--max-output-pixels", type=int,
                        help=f"largest output in pixels (default {AppConfig.max_output_pixels})")
    parser.add_argument("--max-queue", type=int, help=f"jobs that may wait (default {AppConfig.max_queue})")
    args = parser.parse_args(argv)
    config = AppConfig.from_env(**{k: v for k, v in vars(args).items() if k not in ("host", "port", "share")})
    if args.port:
        check_port(args.host, args.port)  # before the model loads
    demo = build_app(config)
    print(f"progsr app: model {config.model}, max {config.max_pixels} input pixels, "
          f"uploads up to {config.max_file_bytes // 2**20} MB", flush=True)
    launch(demo, host=args.host, port=args.port, share=args.share, block=True)
    return 0
