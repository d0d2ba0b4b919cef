"""Upscaler: everything between "an image" and "the upscaled image", in one place.

Order of work for one image (Real-ESRGAN's recipe, with blended tiles instead of hard seams):
  1. split colour and alpha; grey is run as RGB and converted back at the end;
  2. optionally pre-pad the colour with a reflection of the image (`pre_pad`, default 0: the models train on
     crops whose borders the network zero-pads, and on the held-out validation split a reflection pre-pad
     of 8 px scored 0.004-0.008 dB below the plain forward pass, pre-pad 0 exactly the same);
  3. cut the padded image into equal tiles that overlap by at least `tile_overlap` LR pixels (by default
     two times the model's receptive radius, see Upscaler.__init__), each axis's tiles shrunk to the
     smallest size that needs no more of them (tiling.fit_tile); or run it whole
     when it fits in memory), run them in batches under inference_mode, channels_last and
     autocast (fp32 on CPU, bf16/fp16 on CUDA), and blend them with a smooth window: each tile's
     weight is 0 on the outer quarter of the overlap (the pixels that saw a tile edge instead of the
     image), rises as a raised cosine over the middle half, and is 1 inside. The windows of two
     neighbours sum to one, so the result equals the whole-image result up to the network's
     sensitivity to context beyond `tile_overlap / 4` pixels;
  4. crop the pre-pad, then for --outscale/--size run the smallest model scale >= the factor and
     shrink with MATLAB bicubic (antialiased) to the exact size; alpha is resized directly to the
     output size with MATLAB bicubic and clamped;
  5. clamp to [0, 1] and return the input's dtype (uint8, uint16 or float) and layout.
A CUDA out-of-memory error halves the tile batch, then the tile size, and tries again (progsr/engine.py).
upscale_stages makes every stage's image (x2, x4, ...) in that same single pass: a whole image streams
them as the network computes them, tiles are blended per stage (windows scaled by the stage's factor).
The tile geometry, windows, memory plan and strip blender are in progsr/tiling.py (numpy), steps 1 and 4-5
in progsr/planes.py, and the network is a backend behind one small interface: ONNX Runtime on the CPU
(progsr/ort_backend.py, no torch needed) or torch on any device (progsr/torch_backend.py). This module
drives them and imports torch only when the torch backend is chosen.
"""

from __future__ import annotations

import dataclasses
import os
import threading
from pathlib import Path
from typing import Iterator, NamedTuple

import numpy as np

from progsr.errors import UserError
from progsr.limits import DEFAULT_MAX_PIXELS, default_max_output_pixels
from progsr.network import open_export, open_network
from progsr.imageio import ImageData, check_pixels, from_pil, read_image, to_pil, write_image
from progsr.planes import alpha_pixels, colour_pixels, finish_planes, num_channels, output_bytes, split_planes
from progsr.engine import TiledRun
from progsr.scales import check_scale
from progsr.tiling import Progress, host_memory_available

DEFAULT_PRE_PAD = 0  # LR pixels of reflection around the image (see step 2 above)


class FileResult(NamedTuple):
    """What upscale_file did: input and output (width, height), and what clean-up `auto` saw (else None)."""

    in_size: tuple[int, int]
    out_size: tuple[int, int]
    cleanup: object = None  # a progsr.cleanup.CleanupEstimate


class Upscaler:
    """Loads a generator once and upscales PIL images, numpy arrays or files with it.

    model: "psnr" or "gan" (the shipped weights in weights/), a path to a generator .safetensors, or an
    exported <stem>_x<S>.onnx graph (run by ONNX Runtime on the CPU; see progsr/ort_backend.py).
    device: "auto", "cpu", "cuda" or "cuda:N". precision: "auto" (fp32 on CPU, bf16/fp16 on CUDA),
    "fp32", "fp16" or "bf16". tile: largest LR tile side in pixels, or None to pick it from free memory
    (whole image when it fits). tile_overlap: LR pixels shared by neighbouring tiles (None: 2x the model's
    receptive radius: seamless; less warns of seams). tile_batch:
    tiles per forward pass (None: as many as memory allows, at most 16). realism: r in [0, 1] blends the
    shipped psnr (0) and gan (1) weights (None: `model`'s own side). clean: "auto" (the default for the
    shipped models: a strength per image from its JPEG table, noise and blockiness, progsr.cleanup) or c in
    [0, 1], blending towards the real-world models; psnr, gan, real and realgan blend bilinearly. max_pixels: the largest
    input accepted (None: no limit). max_output_pixels: the largest output accepted (default: from the
    machine's RAM, see default_max_output_pixels; None: no limit, though an output that cannot fit in free
    memory is still refused). pre_pad: LR pixels of reflection added around the image (and cropped
    off the result). compile: run the model through torch.compile. backend: "auto" (ONNX Runtime on the CPU
    where the architecture has a bundled graph, else torch; progsr/network.py), "onnxruntime" or "torch".
    threads: the backend's CPU threads (None: ONNX Runtime's one per core, torch's setting as it is).
    """

    def __init__(self, model="psnr", device="auto", precision="auto", tile: int | None = None,
                 tile_overlap: int | None = None, tile_batch: int | None = None,
                 realism: float | None = None, max_pixels: int | None = DEFAULT_MAX_PIXELS,
                 pre_pad: int = DEFAULT_PRE_PAD, compile: bool = False,
                 max_output_pixels: int | None = -1, clean: float | str | None = None,
                 backend: str = "auto", threads: int | None = None):
        from progsr.models.io import REALISM_MODELS, ShippedBlend, check_realism, read_weights, shipped_model_path

        TiledRun.check_options(tile, tile_overlap, tile_batch)  # bad options before the weights load
        if max_pixels is not None and max_pixels < 1:
            raise UserError(f"--max-pixels {max_pixels}: must be >= 1")
        if max_output_pixels == -1:
            max_output_pixels = default_max_output_pixels()
        if max_output_pixels is not None and max_output_pixels < 1:
            raise UserError(f"--max-output-pixels {max_output_pixels}: must be >= 1")
        self.max_output_pixels = max_output_pixels
        self.max_pixels = max_pixels
        self._lock = threading.RLock()

        if realism is not None or clean is not None:
            check_realism(model)  # the controls blend the shipped models; a PATH runs as it is
        self._blend, self._blend_key, self.realism, self.clean = None, None, None, None
        self.model_name = str(model)
        if str(model).endswith(".onnx"):  # an exported graph with its weights inside
            self.network = open_export(model, device, precision, compile, backend, threads)
            self.metadata = self.network.metadata
        else:
            if model in REALISM_MODELS:  # the shipped weights, blended by (clean, realism)
                start = float(realism) if realism is not None else float(model == "gan")
                config, state, self.metadata = read_weights(shipped_model_path("gan" if start == 1.0 else "psnr"))
                self._blend = ShippedBlend(config)
                self.realism = start
            else:
                config, state, self.metadata = read_weights(Path(model))
            self.network = open_network(config, state, model, device, precision, compile, backend, threads)
            if self._blend is not None:
                self.set_clean("auto" if clean is None else clean)
                self.set_realism(self.realism)
        self.max_scale = self.network.config.max_scale
        self.scales = self.network.config.scales
        self.engine = TiledRun(self.network, tile, tile_overlap, tile_batch, pre_pad)

    @property
    def backend(self) -> str:
        """The network backend that runs: "onnxruntime" or "torch"."""
        return self.network.name

    @property
    def model(self):
        """The torch generator (torch backend), else None."""
        return getattr(self.network, "model", None)

    def describe(self) -> str:
        """Where and how the network runs, e.g. 'cpu, fp32, onnxruntime' or 'cuda:0, bf16, torch'."""
        return self.network.describe()

    # ------------------------------------------------------------------------------------------ the controls

    @property
    def blends(self) -> bool:
        """Whether this Upscaler runs the shipped weights, blended by the realism and clean-up controls."""
        return self._blend is not None

    def set_realism(self, realism: float) -> None:
        """Set realism r (0 = the psnr side, 1 = the gan side) of the blend of the shipped weights."""
        r = float(realism)
        if not 0.0 <= r <= 1.0:
            raise UserError(f"--realism {realism}: must be between 0 and 1")
        if self._blend is None:
            raise UserError(f"realism blends the shipped models; this Upscaler runs {self.model_name}")
        with self._lock:
            self.realism = round(r, 4)
            self._use(self.clean if isinstance(self.clean, float) else 0.0)

    def set_clean(self, clean: float | str) -> None:
        """Set the clean-up control: c in [0, 1] (0 = the bicubic-trained side, 1 = the real-world side) or "auto"
        (picked per image by progsr.cleanup.estimate)."""
        from progsr.cleanup import parse_clean

        if self._blend is None:
            raise UserError(f"--clean blends the shipped models; this Upscaler runs {self.model_name}")
        c = parse_clean(clean)
        if c == "auto":
            self.clean = "auto"
            return
        with self._lock:
            self.clean = round(c, 4)
            self._use(self.clean)

    def resolve_clean(self, pixels: np.ndarray, quantization=None):
        """(clean-up strength for this image, the CleanupEstimate when `auto` chose it, else None).

        `auto` settles on 0 when the shipped models its choice needs are not installed, and says so.
        """
        from progsr.models.io import blend_weights, shipped_installed

        if self._blend is None:
            return 0.0, None
        if self.clean != "auto":
            return self.clean, None
        from progsr.cleanup import estimate

        found = estimate(pixels, quantization)
        missing = [name for name in blend_weights(found.strength, self.realism) if not shipped_installed(name)]
        if missing:
            found = dataclasses.replace(found, strength=0.0, note=f"the {' and '.join(missing)} model is not installed")
        return found.strength, found

    def _use(self, clean: float) -> None:
        """Load the blend at (clean, self.realism) into the network unless it is already there (lock held)."""
        from progsr.models.io import blend_weights, shipped_installed

        if self._blend is None:
            return
        key = (round(float(clean), 4), self.realism)
        if key != self._blend_key:
            missing = [name for name in blend_weights(*key) if not shipped_installed(name)]
            if missing:
                asked = {"--clean": key[0], "--realism": key[1]}
                setting = " with ".join(f"{option} {value:g}" for option, value in asked.items() if value)
                raise UserError(f"{setting} needs the shipped {missing[0]} model, which is not installed "
                                "(see the model card)")
            self.network.load_state(self._blend.state(*key))
            self._blend_key = key

    # ------------------------------------------------------------------------------------------ planning

    def plan(self, height: int, width: int, scale: int = 8, outscale: float | None = None,
             size: tuple[int, int] | None = None) -> tuple[int, tuple[int, int]]:
        """(model scale to run, (out_height, out_width)) for an input of height x width."""
        if outscale is not None and size is not None:
            raise UserError("give --outscale or --size, not both")
        if outscale is not None:
            factor = float(outscale)
            if not 0 < factor <= self.max_scale:
                raise UserError(f"--outscale {outscale}: must be in (0, {self.max_scale}] for this model")
            out_hw = (max(1, round(height * factor)), max(1, round(width * factor)))
        elif size is not None:
            out_w, out_h = int(size[0]), int(size[1])
            if out_w < 1 or out_h < 1:
                raise UserError(f"--size {size[0]}x{size[1]}: width and height must be positive")
            factor = max(out_h / height, out_w / width)
            if factor > self.max_scale:
                raise UserError(f"--size {out_w}x{out_h}: needs x{factor:.3g} from {width}x{height}, above this "
                                f"model's x{self.max_scale}; upscale x{self.max_scale} first and run again on "
                                f"that result, or ask for a smaller --size")
            out_hw = (out_h, out_w)
        else:
            check_scale(scale, self.scales)
            return scale, (height * scale, width * scale)
        return next(s for s in self.scales if s >= factor - 1e-9), out_hw

    # ------------------------------------------------------------------------------------------ public API

    def upscale(self, img, scale: int = 8, outscale: float | None = None, size: tuple[int, int] | None = None,
                progress: Progress | None = None, realism: float | None = None):
        """Upscale a PIL image, numpy array (uint8/uint16/float [0, 1]; HxW, HxWx1..4) or image path.

        Returns the same kind: PIL in -> PIL out (palette becomes RGB/RGBA), numpy in -> numpy of the same
        dtype and channel layout, and a path (str or Path) -> a PIL image. 16-bit colour files come back as
        8-bit PIL images (Pillow has no 16-bit RGB mode): use upscale_file or a numpy array to keep 16 bits.
        `outscale` (a factor) or `size` (width, height) give an exact output size instead of `scale`.
        `realism`, when given, switches the blend first (see set_realism).
        """
        kind, data = self._as_data(img)
        clean, _ = self.resolve_clean(data.pixels, data.quantization)
        out = self.upscale_pixels(data.pixels, scale, outscale, size, progress, realism, clean)
        return self._as_kind(kind, ImageData(out, data.icc_profile, data.exif, data.format))

    def upscale_stages(self, img, scale: int = 8, progress: Progress | None = None,
                       realism: float | None = None, clean: float | None = None) -> Iterator[tuple[int, object]]:
        """Yield (stage_scale, image) for x2, x4, ... up to `scale`, each as soon as it is ready (for previews).

        Images are the same kind as upscale returns, each what upscale(img, scale=stage_scale) gives (up to
        tile blending). One pass of the network makes them all: a whole image yields x2 before stage 2
        runs; a tiled image yields them all after its last tile. `clean` (a strength) overrides the
        Upscaler's clean-up setting for this image.
        """
        kind, data = self._as_data(img)
        if clean is None:
            clean, _ = self.resolve_clean(data.pixels, data.quantization)
        check_scale(scale, self.scales)
        colour, alpha = split_planes(data.pixels, self.max_pixels)
        height, width = colour.shape[-2:]
        with self._lock:
            if realism is not None:
                self.set_realism(realism)
            blend = self.realism
        run = self.engine.run_iter(colour, scale, progress, stages=True)
        for s in (s for s in self.scales if s <= scale):
            # The lock is held per stage, never across a yield: the caller may resume us from another thread.
            with self._lock:
                if blend is not None:  # another caller may have switched the blend since our last stage
                    self.realism = blend
                    self._use(clean)
                y = next(run)[0]
            out = finish_planes(y, alpha, (height * s, width * s), data.pixels)
            yield s, self._as_kind(kind, ImageData(out, data.icc_profile, data.exif, data.format))

    def upscale_file(self, src, dst, scale: int = 8, outscale: float | None = None,
                     size: tuple[int, int] | None = None, progress: Progress | None = None,
                     quality: int = 95, before_work=None) -> FileResult:
        """Upscale one file to another at full bit depth with ICC/EXIF carried over; the write is atomic.

        The file is read once and planned once; `before_work(out_hw, pixels)`, when given, runs after the
        plan and before the network (e.g. a free-disk check). A JPEG's quantisation table goes to the
        clean-up's `auto`.
        """
        data = read_image(src, self.max_pixels)
        out, result = self.upscale_data(data, scale, outscale, size, progress, before_work)
        write_image(dst, out, data.icc_profile, data.exif, quality)
        return result

    def upscale_data(self, data: ImageData, scale: int = 8, outscale: float | None = None,
                     size: tuple[int, int] | None = None, progress: Progress | None = None,
                     before_work=None) -> tuple[np.ndarray, FileResult]:
        """A decoded file (imageio.ImageData) -> (output pixels, FileResult): upscale_file without the IO."""
        colour, alpha = split_planes(data.pixels, self.max_pixels)
        model_scale, out_hw = self.plan(*colour.shape[-2:], scale, outscale, size)  # bad options before work
        if before_work is not None:
            before_work(out_hw, data.pixels)
        clean, found = self.resolve_clean(data.pixels, data.quantization)
        out = self._upscale_planned(data.pixels, colour, alpha, model_scale, out_hw, progress, clean=clean)
        return out, FileResult((data.pixels.shape[1], data.pixels.shape[0]), (out.shape[1], out.shape[0]), found)

    def upscale_pixels(self, pixels: np.ndarray, scale: int = 8, outscale: float | None = None,
                       size: tuple[int, int] | None = None, progress: Progress | None = None,
                       realism: float | None = None, clean: float | None = None) -> np.ndarray:
        """The numpy core: HxW / HxWxC (C = 1..4) uint8, uint16 or float -> the same dtype and layout.

        At an exact model scale the result is assembled strip by strip straight into its final dtype, so
        memory is the output array plus one strip of float tiles, whatever the image size. `clean` (a
        strength) overrides the clean-up setting; `auto` sees the pixels only here (no JPEG table).
        """
        pixels = np.asarray(pixels)
        colour, alpha = split_planes(pixels, self.max_pixels)
        model_scale, out_hw = self.plan(*colour.shape[-2:], scale, outscale, size)
        if clean is None:
            clean, _ = self.resolve_clean(pixels)
        return self._upscale_planned(pixels, colour, alpha, model_scale, out_hw, progress, realism, clean)

    def _upscale_planned(self, pixels: np.ndarray, colour: np.ndarray, alpha: np.ndarray | None,
                         model_scale: int, out_hw: tuple[int, int], progress: Progress | None,
                         realism: float | None = None, clean: float = 0.0) -> np.ndarray:
        """upscale_pixels once the image is split into planes, its output planned and its clean-up resolved."""
        height, width = colour.shape[-2:]
        self.check_output(height, width, model_scale, out_hw, pixels)
        with self._lock:
            if realism is not None:
                self.set_realism(realism)
            self._use(clean)
            if out_hw != (height * model_scale, width * model_scale):  # shrink after the model: a float image
                y = self.engine.run(colour, model_scale, progress)
                return finish_planes(y[0], alpha, out_hw, pixels)
            channels = num_channels(pixels)
            out = np.empty((out_hw[0], out_hw[1], channels), dtype=pixels.dtype)
            for top, bottom, [rows] in self.engine.stream(colour, model_scale, progress):
                out[top * model_scale: bottom * model_scale, :, : 1 if channels < 3 else 3] = \
                    colour_pixels(rows[0], channels, pixels.dtype)
        if alpha is not None:
            out[:, :, -1] = alpha_pixels(alpha, out_hw, pixels.dtype)
        return out[:, :, 0] if pixels.ndim == 2 else out

    def check_output(self, height: int, width: int, model_scale: int, out_hw: tuple[int, int],
                     pixels: np.ndarray) -> None:
        """Refuse (UserError naming --max-output-pixels) an output over the limit or too big for free memory."""
        out_pixels = out_hw[0] * out_hw[1]
        if self.max_output_pixels is not None and out_pixels > self.max_output_pixels:
            raise UserError(f"output {out_hw[1]}x{out_hw[0]} has {out_pixels / 1e6:.0f} MP, over the "
                            f"{self.max_output_pixels / 1e6:.0f} MP limit (--max-output-pixels; 0 = no limit)")
        need = output_bytes(height, width, model_scale, out_hw, pixels)
        free = host_memory_available()
        if need > free:
            raise UserError(f"output {out_hw[1]}x{out_hw[0]} needs about {need / 2**30:.1f} GiB of memory, "
                            f"{free / 2**30:.1f} GiB is free: use a smaller --scale/--outscale, or free memory")

    # ------------------------------------------------------------------------------------------ kinds

    def _as_data(self, img) -> tuple[str, ImageData]:
        """The kind of an API input ("path", "pil" or "numpy") and its pixels with metadata."""
        from PIL import Image

        if isinstance(img, (str, os.PathLike)):
            return "path", read_image(img, self.max_pixels)
        if isinstance(img, Image.Image):
            check_pixels(img.width, img.height, self.max_pixels, "image")
            return "pil", from_pil(img)
        if isinstance(img, np.ndarray):
            return "numpy", ImageData(img)
        raise UserError(f"cannot upscale a {type(img).__name__}: give a PIL image, a numpy array or a path")

    @staticmethod
    def _as_kind(kind: str, data: ImageData):
        """A result as the kind its input was: numpy for numpy, else PIL."""
        return data.pixels if kind == "numpy" else to_pil(data)
