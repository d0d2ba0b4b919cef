"""One upscale job of the web app: the request helpers and the event handlers (progsr.webapp builds the page).

The handlers run over the app's one Engine; each job writes into its own temp folder, removed when the
request ends.
"""

from __future__ import annotations

import re
import shutil
import tempfile
import time
import traceback
import warnings
from pathlib import Path

import numpy as np
from PIL import Image

from progsr.errors import UserError
from progsr.imageio import to_8bit

FORMATS = ("png", "jpg", "webp")
TILE_CHOICES = ("auto", "128", "256", "512", "1024")
CLEAN_CHOICES = ("auto", "0", "0.25", "0.5", "0.75", "1")
STALE_NOTE = "**Settings changed** since this result was made: press **Upscale** to redo it."
DISPLAY_PNG_MAX_PIXELS = 4_000_000  # bigger slider images go to the browser as JPEG; the download is lossless
DETAIL_SIZE = 384  # output pixels per side of the 1:1 detail view


def image_size(path: Path) -> tuple[int, int]:
    """(width, height) from the file header without decoding; UserError (via progsr.imageio) if unreadable."""
    try:
        with Image.open(path) as img:
            return img.size
    except Exception:
        from progsr import imageio

        imageio.read_image(path)  # raises the precise UserError: empty, not an image, corrupt ...
        raise UserError(f"{path}: not an image file (or a format Pillow cannot read)") from None


def check_limits(width: int, height: int, scale: int | None, config, name: str) -> None:
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


def parse_clean(value, available: bool) -> str:
    """The clean-up choice as text ("auto" or a strength in [0, 1]); a strength needs the real-world model."""
    from progsr.cleanup import parse_clean as parse

    choice = parse("auto" if value is None else value)
    if choice != "auto" and choice and not available:
        raise UserError("clean-up needs the shipped real-world model, which this server does not have")
    return str(choice)


def parse_tile(value) -> int | None:
    """Tile dropdown -> the Upscaler's tile: None = automatic (from free memory), else N LR pixels."""
    text = str(value).strip().lower()
    if text in ("", "auto", "none"):
        return None
    if not text.isdigit() or not 64 <= int(text) <= 4096:
        raise UserError(f"tile size must be 'auto' or a number of pixels from 64 to 4096, got {value!r}")
    return int(text)



# ---- the handlers ----------------------------------------------------------------------------------


def _fail(message: str, title: str = "Cannot upscale this image"):
    """A gr.Error shown to the user as one message, without a traceback in the server log."""
    import gradio as gr

    return gr.Error(message, title=title, print_exception=False)


class Handlers:
    """The app's event handlers over one Engine: the upload check and the upscale job."""

    def __init__(self, config, engine):
        self.config, self.engine = config, engine
        self.temp_root = Path(config.temp_dir or Path(tempfile.gettempdir()) / "progsr-app")
        self.temp_root.mkdir(parents=True, exist_ok=True)

    @staticmethod
    def uploaded(payload) -> tuple[Path, str]:
        """(server path, the name the user gave it) of the uploaded file; gr.Error when there is none."""
        if not payload or not payload.get("path"):
            raise _fail("No image yet: upload one or pick an example first.")
        path = Path(payload["path"])
        return path, payload.get("orig_name") or path.name

    def read(self, path: Path, name: str, scale: int | None):
        """Check limits from the header, then decode; every UserError names the upload, not our temp path."""
        from progsr import imageio

        try:
            width, height = image_size(path)
            check_limits(width, height, scale, self.config, name)
            return imageio.read_image(path)
        except UserError as err:
            raise _fail(str(err).replace(str(path), name)) from None

    def check_upload(self, payload, scale_value):
        """On upload, example pick or scale change: a bad file is cleared with one message; an output over the
        limit at the chosen scale is said at once, not after queueing."""
        import gradio as gr

        from progsr import imageio

        if not payload or not payload.get("path"):
            return gr.update(), gr.update()
        path, name = self.uploaded(payload)
        try:
            width, height = image_size(path)
            check_limits(width, height, None, self.config, name)
            height, width = imageio.read_image(path).pixels.shape[:2]
        except UserError as err:
            message = str(err).replace(str(path), name)
            gr.Warning(message, title="Cannot use this file")
            return None, f"**Cannot use this file.** {message}"
        try:
            check_limits(width, height, parse_scale(scale_value), self.config, name)
        except UserError as err:
            gr.Warning(str(err), title="Too large at this scale")
            return gr.update(), f"{name}: {width}x{height}. **{err}**"
        return gr.update(), f"{name}: {width}x{height}. Pick a scale and press **Upscale**."

    @staticmethod
    def mark_stale(download, info):
        """When realism or clean-up moves after a run, say that the result on screen used the earlier settings."""
        import gradio as gr

        if not download or STALE_NOTE in str(info or ""):
            return gr.update()
        return f"{info}\n\n{STALE_NOTE}"

    def parse_job(self, scale, realism, tile, fmt, clean="auto") -> tuple[int, float, int | None, str, str]:
        """(scale, realism, tile, format, clean-up) of a job, checked against this server; gr.Error when one is wrong."""
        engine = self.engine
        try:
            clean = parse_clean(clean, engine.has_clean)
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
            raise _fail(str(err)) from None
        return scale, realism, tile, str(fmt).lower(), clean

    def upscale(self, payload, scale, realism, tile, fmt, clean="auto"):
        """Stream (before, after) at x2, x4, ... as each stage finishes; then the download and the info line."""
        path, name = self.uploaded(payload)
        scale, realism, tile, fmt, clean = self.parse_job(scale, realism, tile, fmt, clean)
        data = self.read(path, name, scale)
        request_dir = Path(tempfile.mkdtemp(prefix="request-", dir=self.temp_root))
        try:
            yield from self._run_job(data, name, scale, realism, tile, fmt, clean, request_dir)
        except UserError as err:
            raise _fail(str(err).replace(str(path), name)) from None
        except Exception as err:  # a bug or out of memory: the traceback goes to the server log, one line to the user
            traceback.print_exc()
            oom = "out of memory" in str(err).lower()
            hint = "try a smaller image, scale or tile size" if oom else "the details are in the server log"
            raise _fail(f"{type(err).__name__}: {str(err).splitlines()[0][:200] if str(err) else ''} ({hint})",
                        title="Upscaling failed") from None
        finally:
            # Runs after Gradio has copied the last yield's files into its cache, or when the client leaves.
            shutil.rmtree(request_dir, ignore_errors=True)

    def _run_job(self, data, name: str, scale: int, realism: float, tile, fmt: str, clean: str, request_dir: Path):
        """The stages as (before/after pair, download, info, detail pair) updates, then the written file."""
        import gradio as gr

        from progsr import imageio

        engine = self.engine
        height, width = data.pixels.shape[:2]
        # First, clear the previous result and its download: nothing on screen belongs to an older job.
        yield None, None, f"Upscaling {width}x{height} by {scale}x: working on x2 ...", None
        start = time.perf_counter()
        strength, found = engine.clean_for(data, clean)
        shown = Image.fromarray(to_display(data.pixels))
        pair = detail = result = None
        for stage, result in engine.stages(data.pixels, scale, realism, tile, strength):
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
        out_path = request_dir / f"{Path(name).stem or 'image'}_x{scale}.{fmt}"
        with warnings.catch_warnings(record=True) as caught:  # e.g. "JPEG has no alpha channel"
            warnings.simplefilter("always")
            imageio.write_image(out_path, result, data.icc_profile, data.exif)
        notes = [str(warning.message).replace(str(out_path), out_path.name) for warning in caught]
        for note in notes:
            gr.Warning(note)
        out_h, out_w = result.shape[:2]
        info = (f"{width}x{height} → {out_w}x{out_h}, {time.perf_counter() - start:.2f} s, "
                + engine.device)
        if engine.has_gan:
            info += f", realism {realism:g}"
        if engine.has_clean:
            info += f", {found.describe()}" if found is not None else f", clean-up {strength:g}"
        info += "".join(f"\n\nNote: {note}" for note in notes)  # also here: toasts fade, the info line stays
        yield pair, str(out_path), info, detail
