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
import socket
from pathlib import Path

import numpy as np

from progsr.errors import UserError
from progsr.webapp_jobs import CLEAN_CHOICES, DETAIL_SIZE, FORMATS, TILE_CHOICES, Handlers

EXAMPLES_DIR = Path(__file__).resolve().parent / "examples"
MODEL_ENV = "PROGSR_APP_MODEL"  # default for --model: "psnr", "gan" or a .safetensors path


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

        from progsr.models.io import REALISM_MODELS, realism_available, shipped_installed

        shipped = config.model in REALISM_MODELS
        self.has_gan = realism_available(config.model)  # a --model PATH runs as is, without the slider
        self.has_clean = shipped and shipped_installed("real")  # the clean-up control needs the real-world model
        self.default_realism = 1.0 if config.model == "gan" else 0.0
        if not shipped and not Path(config.model).expanduser().is_file():
            raise UserError(f"{config.model}: no such weights file (give --model psnr, gan or a .safetensors path)")
        self.upscaler = Upscaler(model=config.model, device=config.device,
                                 precision=config.precision, max_pixels=config.max_pixels,
                                 realism=self.default_realism if self.has_gan else None)
        self.device = self.upscaler.describe()
        self.scales = tuple(self.upscaler.scales)
        self.model_name = config.model

    def clean_for(self, data, choice: str):
        """(clean-up strength, CleanupEstimate or None) for a job: "auto" reads the image (and its JPEG table)."""
        if not self.upscaler.blends:
            return 0.0, None
        if choice == "auto":
            return self.upscaler.resolve_clean(data.pixels, data.quantization)
        return float(choice), None

    def stages(self, pixels: np.ndarray, scale: int, realism: float, tile: int | None, clean: float = 0.0):
        """Yield (stage_scale, pixels) for x2 ... x`scale`. The queue runs one job per device at a time,
        which is what makes setting the shared Upscaler's tile size here safe."""
        self.upscaler.engine.tile = tile
        yield from self.upscaler.upscale_stages(pixels, scale, realism=realism if self.has_gan else None,
                                                clean=clean)


def example_images() -> list[Path]:
    """The bundled example inputs (progsr/examples/*.png|jpg), sorted."""
    return sorted(p for p in EXAMPLES_DIR.glob("*") if p.suffix.lower() in (".png", ".jpg", ".jpeg"))


# ---- the app ---------------------------------------------------------------------------------------


def _layout(config: AppConfig, engine: Engine) -> dict:
    """The app's components inside the current gr.Blocks, by name."""
    import gradio as gr

    scale_names = [f"{s}x" for s in engine.scales]
    if engine.has_gan:
        realism_info = "0 = faithful (PSNR model), 1 = GAN detail; in between blends the two networks"
    else:
        realism_info = (f"Off: this server has no pair of shipped psnr + gan weights "
                        f"(it runs {Path(engine.model_name).name})")
    ui = {}
    gr.Markdown("## progsr: progressive super-resolution\nUpload an image, pick a scale and press **Upscale**. "
                "The x2 result appears first, then x4, then x8.")
    with gr.Row():
        with gr.Column(scale=2):
            ui["image_in"] = gr.Image(label="Input image", type="filepath", image_mode=None, height=320,
                                      sources=["upload", "clipboard"], elem_id="input-image")
            if config.examples and example_images():
                gr.Examples([[str(p)] for p in example_images()[:6]], inputs=[ui["image_in"]], label="Examples",
                            elem_id="examples")
            ui["scale"] = gr.Radio(scale_names, value="4x" if "4x" in scale_names else scale_names[-1],
                                   label="Scale", elem_id="scale")
            ui["realism"] = gr.Slider(0.0, 1.0, value=engine.default_realism, step=0.05, label="Realism",
                                      info=realism_info, interactive=engine.has_gan, elem_id="realism")
            clean_info = ("auto: from the file's JPEG quality, noise and blockiness; 0 = the model for clean "
                          "downscales, 1 = the real-world model for noisy, blurred, compressed photos"
                          if engine.has_clean else "Off: this server has no real-world model installed")
            ui["clean"] = gr.Dropdown(list(CLEAN_CHOICES), value="auto", label="Clean-up", info=clean_info,
                                      interactive=engine.has_clean, elem_id="clean")
            with gr.Accordion("Advanced", open=False):
                ui["tile"] = gr.Dropdown(list(TILE_CHOICES), value="auto", label="Tile size (input pixels)",
                                         info="auto: from free memory; smaller tiles need less memory", elem_id="tile")
                ui["fmt"] = gr.Radio(list(FORMATS), value="png", label="Output format", elem_id="format")
            ui["run"] = gr.Button("Upscale", variant="primary", elem_id="run")
        with gr.Column(scale=3):
            ui["compare"] = gr.ImageSlider(label="Before (bicubic) / after (progsr)", interactive=False,
                                           max_height=560, buttons=["fullscreen"], elem_id="compare")
            ui["info"] = gr.Markdown(elem_id="info")
            ui["detail"] = gr.ImageSlider(label=f"1:1 detail: the centre {DETAIL_SIZE} px of the result at full "
                                          "resolution", interactive=False, max_height=DETAIL_SIZE, elem_id="detail")
            ui["download"] = gr.File(label="Full-resolution download", interactive=False, elem_id="download")
    return ui


def _wire(ui: dict, handlers: Handlers, device: str) -> None:
    """Connect the components to the handlers."""
    # preprocess=False: the handlers get the uploaded file's path and validate it with progsr.imageio,
    # so a corrupt file is a readable message instead of Pillow's exception inside Gradio.
    # change, not upload: an example pick is checked (and described) like an upload.
    for trigger in (ui["image_in"].change, ui["scale"].change):
        trigger(handlers.check_upload, [ui["image_in"], ui["scale"]], [ui["image_in"], ui["info"]], preprocess=False,
                show_progress="hidden", api_name=False, concurrency_limit=4, concurrency_id="check-upload")
    # "hidden": Gradio's time estimate would come from earlier jobs of other sizes; the info line says the stage.
    ui["run"].click(handlers.upscale, [ui["image_in"], ui["scale"], ui["realism"], ui["tile"], ui["fmt"], ui["clean"]],
                    [ui["compare"], ui["download"], ui["info"], ui["detail"]], preprocess=False, api_name="upscale",
                    concurrency_limit=1, concurrency_id=f"upscale-{device}", show_progress="hidden")
    for control in (ui["realism"], ui["clean"]):  # a result made with other settings is marked as such
        control.change(handlers.mark_stale, [ui["download"], ui["info"]], [ui["info"]], api_name=False,
                       show_progress="hidden", queue=False)


def build_app(config: AppConfig | None = None, engine: Engine | None = None, **overrides):
    """The gr.Blocks app, queued but not launched. Pass an AppConfig or its fields as keywords (model=PATH)."""
    import gradio as gr

    config = config or AppConfig.from_env(**overrides)
    engine = engine or Engine(config)
    handlers = Handlers(config, engine)
    with gr.Blocks(title="progsr: progressive super-resolution", analytics_enabled=False,
                   delete_cache=(max(60, config.cache_seconds // 4), config.cache_seconds)) as demo:
        _wire(_layout(config, engine), handlers, engine.device)
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
