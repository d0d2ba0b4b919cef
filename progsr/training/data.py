"""Training data: whole-image MATLAB-bicubic pyramids, made once and cached, and aligned crops of them.

For each training image (and each scale-augmented copy) the pyramid HR, HR/2, HR/4, HR/8 is made from
the modcropped uint8 HR with the benchmark's own `imresize`, exactly as the benchmark makes its LR.
A training sample at scale s is an aligned slice of the levels: its LR is a window of HR/s, its
stage targets the same window in HR/(s/2), ..., HR. Nothing is resized in the training loop, and no
crop sees a border the real image does not have.

The levels are held as flat uint8 tensors on the training device (the GPU too), and a batch is cut
out with one gather per level. Every sample is a pure function of (seed, sample index), so the data
order needs no saved state to resume, and DDP ranks draw disjoint slices of one stream.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import numpy as np
import torch

from progsr.errors import UserError
from progsr.formats import IMAGE_SUFFIXES
from progsr.imageio import atomic_output, read_array, to_8bit
from progsr.pixels import u8_tensor_to_float
from progsr.resize import imresize, modcrop
from progsr.scales import scale_of, scales_up_to, stage_of

CACHE_VERSION = 1
# Colour photos shipped inside scikit-image, none of them in the 291 or in any benchmark set.
SKIMAGE_VALIDATION = ("astronaut", "chelsea", "coffee", "rocket", "motorcycle_left")
# The default validation split: those five photos plus the training images listed in HELD_OUT_FILE, which
# training never reads. A fixed 256 px crop of each held-out image keeps validation cheap on a CPU.
DEFAULT_VALIDATION = "default"
HELD_OUT_FILE = Path(__file__).with_name("heldout.txt")
HELD_OUT_CROP = 256


def held_out() -> frozenset[str]:
    """The held-out training images as "<folder name>/<file name>" (T91/t1.webp, BSD200/100075.webp, ...)."""
    lines = HELD_OUT_FILE.read_text(encoding="utf-8").splitlines()
    return frozenset(line.strip() for line in lines if line.strip() and not line.startswith("#"))


def training_images(folders) -> list[Path]:
    """The image files of the training folders, without the held-out validation images."""
    excluded = held_out()
    return [p for folder in folders for p in list_images(folder) if f"{p.parent.name}/{p.name}" not in excluded]


def list_images(folder) -> list[Path]:
    """The image files directly inside `folder`, sorted by name; a UserError if there are none."""
    folder = Path(folder).expanduser()
    if not folder.is_dir():
        raise UserError(f"{folder}: data folder not found")
    files = sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
    if not files:
        raise UserError(f"{folder}: no images in folder (looked for {', '.join(sorted(IMAGE_SUFFIXES))})")
    return files


def to_rgb8(img: np.ndarray) -> np.ndarray:
    """Any read_array result as uint8 HxWx3: grey is repeated, alpha dropped, 16-bit rounded to 8-bit."""
    img = to_8bit(img)
    if img.ndim == 2:
        img = img[..., None]
    if img.shape[2] in (2, 4):  # grey+alpha or RGBA
        img = img[..., :-1]
    if img.shape[2] == 1:
        img = np.repeat(img, 3, axis=2)
    return np.ascontiguousarray(img)


def shrink(img: np.ndarray, factor: float) -> np.ndarray:
    """A uint8 image shrunk by `factor` (MATLAB bicubic, float maths, rounded once): a new HR image for scale augmentation.

    The torch float path is ~20x faster than the per-pass-rounded uint8 path and exactness does not
    matter here: the result is a new ground truth, whose pyramid is still made with the exact uint8 path.
    """
    h, w = img.shape[:2]
    size = (max(1, round(h * factor)), max(1, round(w * factor)))
    x = torch.from_numpy(np.ascontiguousarray(img.transpose(2, 0, 1))).float()
    y = imresize(x, size=size).round_().clamp_(0, 255)
    return np.ascontiguousarray(y.to(torch.uint8).numpy().transpose(1, 2, 0))


def build_pyramid(hr: np.ndarray, num_stages: int) -> list[np.ndarray]:
    """[HR modcropped to 2^num_stages, HR/2, ..., HR/2^num_stages], each level made directly from that HR."""
    hr = np.ascontiguousarray(modcrop(hr, scale_of(num_stages)))
    return [hr] + [imresize(hr, scale=1 / s) for s in scales_up_to(num_stages)]


def cache_dir() -> Path:
    """Where pyramids are cached: $PROGSR_CACHE, else ~/.cache/progsr."""
    return Path(os.environ.get("PROGSR_CACHE") or Path.home() / ".cache" / "progsr").expanduser()


def _cache_key(files: list[Path], scale_aug, num_stages: int) -> str:
    stats = [(str(p.resolve()), p.stat().st_size, p.stat().st_mtime_ns) for p in files]
    blob = json.dumps({"v": CACHE_VERSION, "files": stats, "scale_aug": list(scale_aug), "stages": num_stages})
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def load_pyramids(folders, scale_aug=(1.0,), num_stages: int = 3, progress: bool = True,
                  cache: Path | None = None) -> list[list[np.ndarray]]:
    """The pyramid of every image of `folders` and of each scale-augmented copy (factors in scale_aug).

    Cached as one .npz keyed by the files (path, size, mtime) and the settings, so a later run starts in
    seconds; `cache=None` uses cache_dir(), a missing or unwritable cache folder just means no cache.
    """
    from tqdm import tqdm

    files = training_images(folders)
    path = (cache or cache_dir()) / f"pyramids_{_cache_key(files, scale_aug, num_stages)}.npz"
    if path.is_file():
        try:
            with np.load(path) as blob:
                count = int(blob["count"])
                return [[blob[f"{i}_{j}"] for j in range(num_stages + 1)] for i in range(count)]
        except (OSError, KeyError, ValueError):
            pass  # a damaged cache is rebuilt
    pyramids = []
    for file in tqdm(files, desc="building pyramids", unit="img", disable=not progress, dynamic_ncols=True):
        img = to_rgb8(read_array(file))
        for factor in scale_aug:
            copy = img if factor == 1.0 else shrink(img, factor)
            if min(copy.shape[:2]) >= scale_of(num_stages):
                pyramids.append(build_pyramid(copy, num_stages))
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        arrays = {f"{i}_{j}": level for i, pyr in enumerate(pyramids) for j, level in enumerate(pyr)}
        with atomic_output(path) as tmp, open(tmp, "wb") as f:
            np.savez(f, count=np.array(len(pyramids)), **arrays)
    except OSError:
        pass
    return pyramids


def augment(x: torch.Tensor, k: int) -> torch.Tensor:
    """One of the 8 flips/90-degree rotations (k in 0..7) of a ...xHxW tensor."""
    if k >= 4:
        x = x.flip(-1)
    return torch.rot90(x, k % 4, dims=(-2, -1))


class PyramidCrops:
    """Batches of aligned pyramid crops: sample `index` at scale s is a pure function of (seed, index).

    The LR crop is lr_crop[k-1] px of level k (s = 2^k); its targets are the same window in levels
    k-1, ..., 0. The window is drawn uniformly over all valid positions of all images (so each pixel is
    equally likely, whatever the image sizes), then flipped/rotated as one.
    """

    def __init__(self, pyramids: list[list[np.ndarray]], lr_crop, seed: int, augment: bool = True, device="cpu",
                 degradation=None):
        self.num_stages = len(pyramids[0]) - 1 if pyramids else 0
        self.degradation = degradation  # a DegradationConfig: the LR is made from the HR crop, not cut from HR/s
        self.lr_crop, self.seed, self.augment, self.device = tuple(lr_crop), seed, augment, torch.device(device)
        self.sizes = np.array([[level.shape[:2] for level in pyr] for pyr in pyramids], dtype=np.int64)  # (N, L, 2)
        self.flat, self.offsets = [], []
        for j in range(self.num_stages + 1):
            levels = [pyr[j].reshape(-1) for pyr in pyramids]
            self.offsets.append(torch.tensor(np.cumsum([0] + [lv.size for lv in levels[:-1]]), device=self.device))
            self.flat.append(torch.from_numpy(np.concatenate(levels)).to(self.device))
        self.cumulative = []  # per scale: cumulative share of valid crop positions per image
        for k in range(1, self.num_stages + 1):
            c = self.lr_crop[k - 1]
            h, w = self.sizes[:, k, 0], self.sizes[:, k, 1]
            positions = (np.clip(h - c + 1, 0, None) * np.clip(w - c + 1, 0, None)).astype(np.float64)
            if positions.sum() == 0:
                raise UserError(f"no training image is large enough for a {c} px LR crop at x{scale_of(k)} (lr_crop)")
            self.cumulative.append(np.cumsum(positions) / positions.sum())
        self.sizes_t = torch.from_numpy(self.sizes).to(self.device)

    def describe(self, index: int, scale: int) -> tuple[int, int, int, int]:
        """(image, y, x, transform) of sample `index` at `scale`; y and x are LR-level pixel coordinates."""
        k = stage_of(scale)
        rng = np.random.default_rng([self.seed, index])
        cumulative = self.cumulative[k - 1]
        image = min(int(np.searchsorted(cumulative, rng.random(), side="right")), len(cumulative) - 1)
        c = self.lr_crop[k - 1]
        h, w = self.sizes[image, k]
        y, x = int(rng.integers(0, h - c + 1)), int(rng.integers(0, w - c + 1))
        return image, y, x, int(rng.integers(0, 8)) if self.augment else 0

    def crops(self, indices, scale: int) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """(LR Nx3xhxw, [stage 1 target, ..., HR]) float32 in [0, 1] on the device for these sample indices.

        With a degradation the targets stay the clean pyramid levels and the LR is the degraded HR crop.
        """
        k = stage_of(scale)
        picks = torch.tensor([self.describe(i, scale) for i in indices], device=self.device, dtype=torch.int64)
        image, y, x, transform = picks.unbind(1)
        levels = []
        for j in range(k, -1, -1):  # LR first, then each stage's target, HR last
            factor, c = 2 ** (k - j), self.lr_crop[k - 1] * 2 ** (k - j)
            ar = torch.arange(c, device=self.device)
            width = self.sizes_t[image, j, 1]
            rows = (y * factor)[:, None] + ar[None]  # (N, c)
            cols = (x * factor)[:, None] + ar[None]
            pixel = rows[:, :, None] * width[:, None, None] + cols[:, None, :]  # (N, c, c)
            idx = self.offsets[j][image][:, None, None, None] + pixel[..., None] * 3 + torch.arange(3, device=self.device)
            levels.append(u8_tensor_to_float(self.flat[j][idx].permute(0, 3, 1, 2)))
        if self.augment:
            codes = transform.tolist()
            levels = [torch.stack([augment(t[n], code) for n, code in enumerate(codes)]) for t in levels]
        if self.degradation is not None:
            from progsr.degradations import degrade_batch

            levels[0] = degrade_batch(levels[-1], scale, self.degradation, self.seed, indices)
        return levels[0], levels[1:]

    def batch(self, it: int, counts: list[int], rank: int = 0, world_size: int = 1):
        """Iteration `it`'s batch on this rank: [(scale, LR, targets)] for each scale with a nonzero count.

        Global samples it*B*W ... (it+1)*B*W - 1 (B = sum(counts)); rank r takes its own B of them.
        """
        first = (it * world_size + rank) * sum(counts)
        groups = []
        for k, n in enumerate(counts, start=1):
            if n:
                lr, targets = self.crops(range(first, first + n), scale_of(k))
                groups.append((scale_of(k), lr, targets))
            first += n
        return groups


def _held_out_crop(name: str, img: np.ndarray) -> np.ndarray:
    """A HELD_OUT_CROP px square of an image (smaller sides whole) at a position fixed by the name."""
    import zlib

    rng = np.random.default_rng(zlib.crc32(name.encode("utf-8")))
    h, w = img.shape[:2]
    ch, cw = min(h, HELD_OUT_CROP), min(w, HELD_OUT_CROP)
    y, x = int(rng.integers(0, h - ch + 1)), int(rng.integers(0, w - cw + 1))
    return np.ascontiguousarray(img[y : y + ch, x : x + cw])


def _skimage_photos() -> list[tuple[str, np.ndarray]]:
    import skimage.data

    images = []
    for name in SKIMAGE_VALIDATION:
        img = skimage.data.stereo_motorcycle()[0] if name == "motorcycle_left" else getattr(skimage.data, name)()
        images.append((name, np.ascontiguousarray(img[..., :3])))
    return images


def load_validation(spec) -> tuple[str, list[tuple[str, np.ndarray]]]:
    """(description, [(name, uint8 HR)]) for --val: "default" (DEFAULT_VALIDATION: the scikit-image photos and
    fixed crops of the held-out training images; the photos alone when ../shared is absent), "skimage" (the
    photos alone, the split before the held-out images) or an HR folder."""
    from progsr.paths import shared_dir
    from progsr.protocol import read_hr

    if str(spec) == "skimage":
        return f"skimage.data ({', '.join(SKIMAGE_VALIDATION)})", _skimage_photos()
    if str(spec) == DEFAULT_VALIDATION:
        train = shared_dir() / "data" / "train" if shared_dir() is not None else None
        if train is None or not train.is_dir():
            return f"skimage.data ({', '.join(SKIMAGE_VALIDATION)}; ../shared absent, no held-out images)", \
                _skimage_photos()
        held = sorted(held_out())
        crops = [(entry, _held_out_crop(entry, to_rgb8(read_hr(train / entry)))) for entry in held]
        return (f"default: skimage.data ({len(SKIMAGE_VALIDATION)} photos) + {len(held)} held-out training images "
                f"({HELD_OUT_FILE.name}, {HELD_OUT_CROP} px crops)"), _skimage_photos() + crops
    folder = Path(spec)
    return folder.name, [(path.stem, read_hr(path)) for path in list_images(folder)]
