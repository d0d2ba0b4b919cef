"""Training data: HR images held in memory, random augmented crops, MATLAB-bicubic LR and per-stage targets.

Every sample is a pure function of (seed, sample index): the index picks its own random generator, so
the data order needs no saved state to resume, and DDP ranks (or DataLoader workers) draw disjoint
slices of one stream. The LR and each stage's target are made from the augmented uint8 HR crop with
the same MATLAB-compatible bicubic (uint8 rounding after each pass) that makes the benchmark's LR.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, Sampler

from progsr.errors import UserError
from progsr.imageio import IMAGE_SUFFIXES, read_array, to_8bit
from progsr.resize import imresize


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


def load_images(folders, scale_aug=(1.0,), progress: bool = True) -> list[np.ndarray]:
    """Read every image of `folders` once into memory as uint8 RGB, plus a MATLAB-bicubic copy per factor in scale_aug.

    Scale augmentation (LapSRN / VDSR train on the same 291 images shrunk by 0.5-1.0) is done once here,
    not per crop, so it costs nothing in the training loop.
    """
    from tqdm import tqdm

    files = [path for folder in folders for path in list_images(folder)]
    images = []
    for path in tqdm(files, desc="loading images", unit="img", disable=not progress, dynamic_ncols=True):
        img = to_rgb8(read_array(path))
        for factor in scale_aug:
            if factor == 1.0:
                images.append(img)
            else:
                images.append(shrink(img, factor))
    return images


def shrink(img: np.ndarray, factor: float) -> np.ndarray:
    """A uint8 image shrunk by `factor` (MATLAB bicubic, float maths, rounded once): a new HR image for scale augmentation.

    The torch float path is ~20x faster than the per-pass-rounded uint8 path and exactness does not
    matter here: the result is a new ground truth, whose LR is still made with the exact uint8 path.
    """
    h, w = img.shape[:2]
    size = (max(1, round(h * factor)), max(1, round(w * factor)))
    x = torch.from_numpy(np.ascontiguousarray(img.transpose(2, 0, 1))).float()
    y = imresize(x, size=size).round_().clamp_(0, 255)
    return np.ascontiguousarray(y.to(torch.uint8).numpy().transpose(1, 2, 0))


def augment(img: np.ndarray, k: int) -> np.ndarray:
    """One of the 8 flips/90-degree rotations (k in 0..7) of an HxWxC image."""
    if k >= 4:
        img = img[:, ::-1]
    return np.rot90(img, k % 4)


class CropDataset(Dataset):
    """Sample i is a random HR crop (seeded by (seed, i)) with its LR and its per-stage targets.

    For scale 8 and crop 192: LR 24 px, targets 48, 96 and 192 px (HR shrunk by 1/4, 1/2, 1/1), all
    uint8 MATLAB bicubic of the augmented crop, returned as float32 CxHxW tensors in [0, 1].
    A crop position is drawn uniformly over all valid positions of all images, so each HR pixel is
    equally likely to be seen, whatever the image sizes.
    """

    def __init__(self, images: list[np.ndarray], crop_size: int, scale: int, seed: int, augment: bool = True,
                 stages_at=None):
        if crop_size % scale:
            raise UserError(f"crop_size {crop_size} must be a multiple of the scale {scale}")
        self.images = [img for img in images if min(img.shape[:2]) >= crop_size]
        self.skipped = len(images) - len(self.images)
        if not self.images:
            raise UserError(f"no training image is at least {crop_size} px on its shorter side (crop_size)")
        self.crop_size, self.scale, self.seed, self.augment = crop_size, scale, seed, augment
        self.num_stages = int(round(np.log2(scale)))
        # stages_at(index) -> how many stages sample `index` is trained on (a picklable callable); only those
        # targets are made (the rest are returned as empty arrays), e.g. no 1/2 target while only x2 trains.
        self.stages_at = stages_at
        positions = np.array([(h - crop_size + 1) * (w - crop_size + 1) for h, w, _ in (i.shape for i in self.images)],
                             dtype=np.float64)
        self.cumulative = np.cumsum(positions) / positions.sum()

    def sample(self, index: int) -> tuple[np.ndarray, list[np.ndarray]]:
        """(LR, [stage 1 target, ..., HR]) as uint8 HxWx3 arrays for sample `index` (inactive stages: 0x0x3)."""
        rng = np.random.default_rng([self.seed, index])
        image = self.images[min(int(np.searchsorted(self.cumulative, rng.random(), side="right")),
                                len(self.images) - 1)]
        c = self.crop_size
        y = int(rng.integers(0, image.shape[0] - c + 1))
        x = int(rng.integers(0, image.shape[1] - c + 1))
        hr = image[y : y + c, x : x + c]
        if self.augment:
            hr = augment(hr, int(rng.integers(0, 8)))
        hr = np.ascontiguousarray(hr)
        lr = imresize(hr, scale=1 / self.scale)
        active = self.num_stages if self.stages_at is None else self.stages_at(index)
        empty = np.zeros((0, 0, 3), np.uint8)
        targets = [imresize(hr, scale=2**k / self.scale) if k <= active else empty for k in range(1, self.num_stages)]
        return lr, targets + [hr if active == self.num_stages else empty]

    def __getitem__(self, index: int):
        lr, targets = self.sample(index)
        return to_tensor(lr), [to_tensor(t) for t in targets]


def to_tensor(img: np.ndarray) -> torch.Tensor:
    """uint8 HxWx3 -> float32 3xHxW in [0, 1]."""
    return torch.from_numpy(np.ascontiguousarray(img.transpose(2, 0, 1))).float().div_(255.0)


class IterationSampler(Sampler):
    """Batches of sample indices for iterations [start, stop): rank r of w takes its own slice of each global batch.

    Iteration `it` covers global samples it*B*w ... (it+1)*B*w - 1, so the stream is the same whatever
    iteration a run resumes at.
    """

    def __init__(self, start: int, stop: int, batch_size: int, rank: int = 0, world_size: int = 1):
        self.start, self.stop, self.batch_size, self.rank, self.world_size = start, stop, batch_size, rank, world_size

    def __iter__(self):
        for it in range(self.start, self.stop):
            first = (it * self.world_size + self.rank) * self.batch_size
            yield list(range(first, first + self.batch_size))

    def __len__(self) -> int:
        return max(0, self.stop - self.start)


def make_loader(dataset: CropDataset, start: int, stop: int, batch_size: int, rank: int = 0, world_size: int = 1,
                workers: int = 0, pin_memory: bool = False) -> DataLoader:
    """A DataLoader yielding (lr, [targets]) batches for iterations start..stop-1, in order, on this rank."""
    return DataLoader(
        dataset,
        batch_sampler=IterationSampler(start, stop, batch_size, rank, world_size),
        num_workers=workers,
        pin_memory=pin_memory,
        persistent_workers=False,
        prefetch_factor=4 if workers > 0 else None,
        # Its own generator: creating the iterator draws a seed, which must not touch the global RNG
        # (that would make a resumed run's RNG state differ from an uninterrupted one's).
        generator=torch.Generator().manual_seed(0),
    )


def load_validation(folder) -> list[tuple[str, np.ndarray]]:
    """(name, uint8 HR as the benchmark reads it: HxWx3, or HxW for grey) for each image of a validation folder."""
    from progsr.evaluation import read_hr

    return [(path.stem, read_hr(path)) for path in list_images(folder)]
