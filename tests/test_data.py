import numpy as np
import pytest
import torch
from PIL import Image

from progsr.data import (CropDataset, IterationSampler, augment, list_images, load_images, make_loader, shrink,
                         to_rgb8)
from progsr.errors import UserError
from progsr.resize import imresize


def _images(rng, sizes=((40, 56), (72, 48))):
    return [rng.integers(0, 256, (h, w, 3), dtype=np.uint8) for h, w in sizes]


def test_to_rgb8_layouts():
    grey = np.arange(12, dtype=np.uint8).reshape(3, 4)
    assert np.array_equal(to_rgb8(grey), np.repeat(grey[..., None], 3, axis=2))
    rgba = np.zeros((3, 4, 4), np.uint8)
    rgba[..., 3] = 255
    assert to_rgb8(rgba).shape == (3, 4, 3) and to_rgb8(rgba).max() == 0
    deep = np.array([[0, 257, 65535, 32896]], dtype=np.uint16)
    assert to_rgb8(deep)[0, :, 0].tolist() == [0, 1, 255, 128]


def test_sample_is_a_pure_function_of_seed_and_index(rng):
    ds = CropDataset(_images(rng), crop_size=32, scale=8, seed=3)
    lr_a, t_a = ds.sample(5)
    lr_b, t_b = ds.sample(5)
    assert np.array_equal(lr_a, lr_b) and all(np.array_equal(x, y) for x, y in zip(t_a, t_b))
    lr_c, _ = ds.sample(6)
    other_seed = CropDataset(ds.images, crop_size=32, scale=8, seed=4)
    assert not np.array_equal(lr_a, lr_c)
    assert not np.array_equal(lr_a, other_seed.sample(5)[0])


def test_lr_and_targets_are_matlab_bicubic_of_the_hr_crop(rng):
    ds = CropDataset(_images(rng), crop_size=32, scale=8, seed=0)
    for index in range(4):
        lr, targets = ds.sample(index)
        hr = targets[-1]
        assert [t.shape for t in targets] == [(8, 8, 3), (16, 16, 3), (32, 32, 3)]
        assert lr.dtype == np.uint8 and lr.shape == (4, 4, 3)
        assert np.array_equal(lr, imresize(hr, scale=1 / 8))
        assert np.array_equal(targets[0], imresize(hr, scale=1 / 4))
        assert np.array_equal(targets[1], imresize(hr, scale=1 / 2))


def test_only_the_active_stages_targets_are_made(rng):
    full = CropDataset(_images(rng), crop_size=32, scale=8, seed=0)
    staged = CropDataset(full.images, crop_size=32, scale=8, seed=0, stages_at=lambda index: 1 + index % 3)
    for index in range(3):
        lr, targets = staged.sample(index)
        lr_full, targets_full = full.sample(index)
        assert np.array_equal(lr, lr_full)
        for k, (t, t_full) in enumerate(zip(targets, targets_full), start=1):
            assert np.array_equal(t, t_full) if k <= 1 + index % 3 else t.shape == (0, 0, 3)
    per_iteration = CropDataset(full.images, crop_size=32, scale=8, seed=0, stages_at=lambda index: 1 + index // 2)
    shapes = [[tuple(t.shape) for t in targets] for _, targets in make_loader(per_iteration, 0, 3, batch_size=2)]
    assert shapes == [[(2, 3, 8, 8), (2, 3, 0, 0), (2, 3, 0, 0)],
                      [(2, 3, 8, 8), (2, 3, 16, 16), (2, 3, 0, 0)],
                      [(2, 3, 8, 8), (2, 3, 16, 16), (2, 3, 32, 32)]]


def test_hr_crop_is_an_augmented_window_of_a_source_image(rng):
    images = _images(rng)
    ds = CropDataset(images, crop_size=16, scale=2, seed=1)
    seen_transforms = set()
    for index in range(12):
        hr = ds.sample(index)[1][-1]
        found = False
        for k in range(8):
            # undo augment(., k): rotate back, then flip back
            back = np.rot90(hr, -(k % 4))
            back = back[:, ::-1] if k >= 4 else back
            for img in images:
                windows = np.lib.stride_tricks.sliding_window_view(img, (16, 16, 3))[..., 0, :, :, :]
                if (windows == back).all(axis=(-3, -2, -1)).any():
                    found = True
                    seen_transforms.add(k)
        assert found, f"sample {index} is not a flipped/rotated window of any image"
    assert len(seen_transforms) > 2  # augmentation actually varies


def test_augment_covers_the_dihedral_group():
    img = np.arange(2 * 3 * 1).reshape(2, 3, 1)
    outs = {augment(img, k).tobytes() + bytes(augment(img, k).shape) for k in range(8)}
    assert len(outs) == 8


def test_crops_are_uniform_over_positions(rng):
    small = rng.integers(0, 256, (20, 20, 3), dtype=np.uint8)  # 1 position for a 20 px crop
    big = rng.integers(0, 256, (40, 40, 3), dtype=np.uint8)  # 21*21 = 441 positions
    ds = CropDataset([small, big], crop_size=20, scale=2, seed=0, augment=False)
    from_small = sum(np.array_equal(ds.sample(i)[1][-1], small) for i in range(400))
    assert from_small <= 6  # expected 400/442 ~ 1; uniform over images would give ~200


def test_images_smaller_than_the_crop_are_skipped(rng):
    ds = CropDataset(_images(rng, ((10, 10), (40, 40))), crop_size=32, scale=8, seed=0)
    assert ds.skipped == 1 and len(ds.images) == 1
    with pytest.raises(UserError, match="crop_size"):
        CropDataset(_images(rng, ((10, 10),)), crop_size=32, scale=8, seed=0)
    with pytest.raises(UserError, match="multiple"):
        CropDataset(_images(rng), crop_size=30, scale=8, seed=0)


def test_sampler_shards_one_stream_across_ranks():
    single = list(IterationSampler(0, 5, batch_size=6))
    ranks = [list(IterationSampler(0, 5, batch_size=3, rank=r, world_size=2)) for r in range(2)]
    for it in range(5):
        assert sorted(ranks[0][it] + ranks[1][it]) == single[it]
        assert not set(ranks[0][it]) & set(ranks[1][it])


def test_loader_resumes_the_same_stream(rng):
    ds = CropDataset(_images(rng), crop_size=16, scale=4, seed=0)
    full = list(make_loader(ds, 0, 6, batch_size=2))
    tail = list(make_loader(ds, 3, 6, batch_size=2))
    assert len(full) == 6 and len(tail) == 3
    for (lr_a, t_a), (lr_b, t_b) in zip(full[3:], tail):
        assert torch.equal(lr_a, lr_b) and all(torch.equal(x, y) for x, y in zip(t_a, t_b))
    lr, targets = full[0]
    assert lr.shape == (2, 3, 4, 4) and lr.dtype == torch.float32 and 0 <= lr.min() and lr.max() <= 1
    assert [t.shape[-1] for t in targets] == [8, 16]
    state = torch.get_rng_state()
    list(make_loader(ds, 0, 1, batch_size=2))
    assert torch.equal(state, torch.get_rng_state())  # iterating does not consume the global RNG


def test_shrink_is_close_to_the_uint8_path(rng):
    img = (np.add.outer(np.arange(60), np.arange(50)) * 2 % 256).astype(np.uint8)[..., None].repeat(3, axis=2)
    out = shrink(img, 0.7)
    ref = imresize(img, size=out.shape[:2])
    assert out.shape == (42, 35, 3) and out.dtype == np.uint8
    assert np.abs(out.astype(int) - ref).max() <= 1


def test_load_images_with_scale_augmentation(tmp_path, rng):
    Image.fromarray(rng.integers(0, 256, (40, 50, 3), dtype=np.uint8)).save(tmp_path / "a.png")
    Image.fromarray(rng.integers(0, 256, (30, 20), dtype=np.uint8)).save(tmp_path / "b.webp", lossless=True)
    (tmp_path / "notes.txt").write_text("not an image")
    images = load_images([tmp_path], scale_aug=(1.0, 0.5), progress=False)
    assert [i.shape for i in images] == [(40, 50, 3), (20, 25, 3), (30, 20, 3), (15, 10, 3)]


def test_list_images_errors(tmp_path):
    with pytest.raises(UserError, match="not found"):
        list_images(tmp_path / "missing")
    with pytest.raises(UserError, match="no images"):
        list_images(tmp_path)
