"""TiledRun: a network backend run over a whole numpy image in tiles sized to free memory.

Pre-pad, cut into overlapping tiles (progsr/tiling.py), run them in batches, blend, crop the pad; a CUDA
out-of-memory error halves the tile batch, then the tile size, and tries again. numpy in and out: the
network behind it is ONNX Runtime or torch (progsr/network.py).
"""

from __future__ import annotations

import warnings
from typing import Iterator

import numpy as np

from progsr.errors import UserError
from progsr.tiling import MIN_TILE, Progress, choose_tiling, run_tiles


class TiledRun:
    """Runs `network` over 1x3xHxW float32 images at any size, with its tile settings and out-of-memory retries.

    tile: largest LR tile side (None: from free memory, whole image when it fits). tile_overlap: LR pixels
    shared by neighbouring tiles (None: 2x the network's receptive radius; less warns of seams). tile_batch:
    tiles per forward pass (None: as many as memory allows). pre_pad: LR pixels of reflection around the image.
    """

    @staticmethod
    def check_options(tile: int | None, tile_overlap: int | None, tile_batch: int | None) -> None:
        """The checks that need no network (a one-line UserError), so a caller can run them before loading one."""
        if tile_overlap is not None and tile_overlap < 0:
            raise UserError(f"--tile-overlap {tile_overlap}: must be >= 0")
        if tile is not None and tile < MIN_TILE:
            raise UserError(f"--tile {tile}: must be at least {MIN_TILE} pixels")
        if tile_batch is not None and tile_batch < 1:
            raise UserError(f"tile_batch {tile_batch}: must be >= 1")

    def __init__(self, network, tile: int | None = None, tile_overlap: int | None = None,
                 tile_batch: int | None = None, pre_pad: int = 0):
        self.check_options(tile, tile_overlap, tile_batch)
        self.network, self.scales = network, network.config.scales
        self.tile, self.tile_batch, self.pre_pad = tile, tile_batch, pre_pad
        self.tile_cap: int | None = None  # lowered after an out-of-memory retry
        self.receptive_radius = network.receptive_radius(network.config.max_scale)
        # Twice the radius: the blend window's zero margin (overlap / 4) then holds over 99.9% of each output
        # pixel's input gradient (measured for the shipped model: all within 8 of its 20 px), and tiles matched
        # the whole image within 1/255 on 2e-6 of the pixels; four times the radius costs ~2x the compute.
        seamless = 2 * self.receptive_radius
        self.tile_overlap = seamless if tile_overlap is None else tile_overlap
        if self.tile_overlap < seamless:
            warnings.warn(f"--tile-overlap {tile_overlap} is below {seamless} (2x this model's receptive radius of "
                          f"{self.receptive_radius} px): tile seams may show", stacklevel=3)
        if tile is not None and tile < 2 * self.tile_overlap:
            raise UserError(f"--tile {tile}: tiles must be at least twice the overlap ({self.tile_overlap} px, "
                            f"--tile-overlap); use --tile {2 * self.tile_overlap} or more, or a smaller --tile-overlap")

    def run(self, x: np.ndarray, scale: int, progress: Progress | None = None) -> np.ndarray:
        """Upscale a 1x3xHxW float32 image by `scale` into one float image: pre-pad, tiles, blend, crop; unclamped."""
        [out] = self.run_iter(x, scale, progress)
        return out

    def run_iter(self, x: np.ndarray, scale: int, progress: Progress | None,
                 stages: bool = False) -> Iterator[np.ndarray]:
        """run as a generator: yields the x`scale` image, or with stages=True the x2, x4, ... x`scale` images.

        A whole image streams each stage as soon as the network has computed it; a tiled one yields them
        after its last tile.
        """
        padded, ph, pw = self.pad(x)
        tile, _ = self.choose_tiling(padded.shape[-2], padded.shape[-1], scale)
        done = 0  # images already yielded: after an out-of-memory error the tiled retry does not yield them again
        if stages and tile >= max(padded.shape[-2:]):
            _, _, h, w = x.shape
            images = self.network.iter_stages(padded, scale)
            try:
                for s in (s for s in self.scales if s <= scale):
                    result = next(images)
                    if progress is not None and s == scale:
                        progress(1, 1)
                    done += 1
                    yield result[:, :, ph * s: (ph + h) * s, pw * s: (pw + w) * s]
                return
            except Exception as err:  # noqa: BLE001 - only out-of-memory errors are retried, with tiles
                if not self.network.is_oom(err):
                    raise
                self.network.release()
                self.tile_cap = max(MIN_TILE, 2 * self.tile_overlap, tile // 2)
                warnings.warn(f"out of memory ({self.network.describe()}); retrying with {self.tile_cap}px tiles",
                              stacklevel=2)
        blocks: list[list[np.ndarray]] = []
        for top, _, rows in self.stream(x, scale, progress, stages):
            if top == 0:  # the first strip, or the first again after an out-of-memory retry
                blocks = [[] for _ in rows]
            for block, r in zip(blocks, rows):
                block.append(r)
        for k, block in enumerate(blocks):
            if k >= done:
                yield np.concatenate(block, axis=-2)

    def pad(self, x: np.ndarray) -> tuple[np.ndarray, int, int]:
        """The image with `pre_pad` LR pixels of reflection around it (fewer for a tiny image), and the pads."""
        _, _, h, w = x.shape
        ph, pw = min(self.pre_pad, h - 1), min(self.pre_pad, w - 1)
        return (np.pad(x, ((0, 0), (0, 0), (ph, ph), (pw, pw)), mode="reflect") if ph or pw else x), ph, pw

    def stream(self, x: np.ndarray, scale: int, progress: Progress | None,
               stages: bool = False) -> Iterator[tuple[int, int, list[np.ndarray]]]:
        """Yield (top, bottom, [rows per scale]): the finished output rows of LR rows [top, bottom), strip by strip.

        Rows are float32 1x3xrxW on the CPU, pre-pad cropped; [rows per scale] is the x`scale` rows, or with
        stages=True the x2, x4, ... rows. After an out-of-memory error it starts again from top = 0 with
        smaller tiles or batches.
        """
        _, _, h, w = x.shape
        padded, ph, pw = self.pad(x)
        scales = [s for s in self.scales if s <= scale] if stages else [scale]
        tile, batch = self.choose_tiling(padded.shape[-2], padded.shape[-1], scale)

        def forward(tiles: np.ndarray) -> list[np.ndarray]:
            return self.network.forward(tiles, scale, scales)

        while True:
            try:
                for top, bottom, rows in run_tiles(forward, padded, scale, tile, batch, self.tile_overlap,
                                                   progress, scales):
                    a, b = max(top, ph), min(bottom, ph + h)
                    if a < b:
                        yield a - ph, b - ph, [r[:, :, (a - top) * s: (b - top) * s, pw * s: (pw + w) * s]
                                               for r, s in zip(rows, scales)]
                return
            except Exception as err:  # noqa: BLE001 - only out-of-memory errors are retried
                if not self.network.is_oom(err):
                    raise
                tile, batch = self._smaller(tile, batch, padded.shape[-2:])

    def _smaller(self, tile: int, batch: int, padded_hw) -> tuple[int, int]:
        """After an out-of-memory error: half the batch, else half the tile, else a one-line UserError."""
        self.network.release()
        tile = min(tile, max(padded_hw))
        if batch > 1:
            batch //= 2
        elif tile // 2 >= max(MIN_TILE, 2 * self.tile_overlap):
            tile //= 2
            self.tile_cap = tile
        else:
            on_accelerator = self.network.free_memory() is not None
            hint = "try --device cpu" if on_accelerator else "try a smaller image or --outscale"
            raise UserError(f"out of memory ({self.network.describe()}) even with {tile}px tiles; {hint}") from None
        warnings.warn(f"out of memory ({self.network.describe()}); retrying with {tile}px tiles, batch {batch}",
                      stacklevel=3)
        return tile, batch

    def choose_tiling(self, h: int, w: int, scale: int) -> tuple[int, int]:
        """(tile, batch) for a padded h x w input: the user's or one sized to free memory (tiling.choose_tiling)."""
        return choose_tiling(h, w, scale, self.network.bytes_per_pixel(scale), self.network.free_memory(), self.tile,
                             self.tile_batch, max(MIN_TILE, 2 * self.tile_overlap), self.tile_cap)
