import numpy as np
import pytest
import torch
from PIL import Image

from progsr.errors import UserError
from progsr.pixels import tensor_to_u8
from progsr.resize import imresize, modcrop
from progsr.training.config import batch_split
from progsr.training.data import (SKIMAGE_VALIDATION, PyramidCrops, augment, build_pyramid, list_images,
                                  load_pyramids, load_validation, shrink, to_rgb8)


def _images(rng, sizes=((56, 72), (80, 64))):
    return [rng.integers(0, 256, (h, w, 3), dtype=np.uint8) for h, w in sizes]


def test_to_rgb8_layouts():
    grey = np.arange(12, dtype=np.uint8).reshape(3, 4)
    assert np.array_equal(to_rgb8(grey), np.repeat(grey[..., None], 3, axis=2))
    rgba = np.zeros((3, 4, 4), np.uint8)
    rgba[..., 3] = 255
    assert to_rgb8(rgba).shape == (3, 4, 3) and to_rgb8(rgba).max() == 0
    deep = np.array([[0, 257, 65535, 32896]], dtype=np.uint16)
    assert to_rgb8(deep)[0, :, 0].tolist() == [0, 1, 255, 128]


def test_pyramid_levels_are_the_benchmark_lr_of_the_whole_image(rng):
    img = _images(rng, ((61, 75),))[0]
    levels = build_pyramid(img, 3)
    hr = modcrop(img, 8)
    assert np.array_equal(levels[0], hr) and [lv.shape for lv in levels] == [(56, 72, 3), (28, 36, 3), (14, 18, 3),
                                                                               (7, 9, 3)]
    for k in (1, 2, 3):  # made directly from the HR, as the benchmark makes its LR (not level by level)
        assert np.array_equal(levels[k], imresize(hr, scale=1 / 2**k))


@pytest.mark.parametrize("scale", [2, 4, 8])
def test_a_crops_lr_and_targets_are_the_same_region_of_the_whole_image_levels(rng, scale):
    images = _images(rng)
    crops = PyramidCrops([build_pyramid(i, 3) for i in images], lr_crop=(10, 6, 4), seed=3, augment=False)
    indices = list(range(7))
    lr, targets = crops.crops(indices, scale)
    c = {2: 10, 4: 6, 8: 4}[scale]
    assert lr.shape == (7, 3, c, c) and lr.dtype == torch.float32
    assert [t.shape[-1] for t in targets] == [c * 2**k for k in range(1, scale.bit_length())]
    for n, index in enumerate(indices):
        image, y, x, _ = crops.describe(index, scale)
        hr = modcrop(images[image], 8)
        whole_lr = imresize(hr, scale=1 / scale)  # the benchmark's LR of the whole image
        assert np.array_equal(tensor_to_u8(lr[n]), whole_lr[y : y + c, x : x + c])
        for k, target in enumerate(targets, start=1):  # stage k's target: the same window of HR / (scale / 2^k)
            f = 2**k
            level = hr if f == scale else imresize(hr, scale=f / scale)
            assert np.array_equal(tensor_to_u8(target[n]), level[y * f : (y + c) * f, x * f : (x + c) * f])


def test_samples_are_a_pure_function_of_seed_and_index_and_augment_as_one(rng):
    pyramids = [build_pyramid(i, 3) for i in _images(rng)]
    plain = PyramidCrops(pyramids, (8, 6, 4), seed=1, augment=False)
    aug = PyramidCrops(pyramids, (8, 6, 4), seed=1, augment=True)
    a, b = aug.crops([4, 5], 4), aug.crops([4, 5], 4)
    assert torch.equal(a[0], b[0]) and all(torch.equal(x, y) for x, y in zip(a[1], b[1]))
    assert not torch.equal(PyramidCrops(pyramids, (8, 6, 4), seed=2).crops([4], 4)[0], a[0][:1])
    seen = set()
    for index in range(16):  # the augmented sample is the plain one flipped/rotated, LR and targets alike
        k = aug.describe(index, 4)[3]
        seen.add(k)
        lr_p, t_p = plain.crops([index], 4)
        lr_a, t_a = aug.crops([index], 4)
        assert torch.equal(augment(lr_p, k), lr_a) and all(torch.equal(augment(p, k), q) for p, q in zip(t_p, t_a))
    assert len(seen) > 2


def test_augment_covers_the_dihedral_group():
    img = torch.arange(6).reshape(1, 2, 3)
    assert len({augment(img, k).numpy().tobytes() + bytes(augment(img, k).shape) for k in range(8)}) == 8


def test_crops_are_uniform_over_positions(rng):
    small = rng.integers(0, 256, (16, 16, 3), dtype=np.uint8)  # one 8 px LR window at x2
    big = rng.integers(0, 256, (48, 48, 3), dtype=np.uint8)  # 17 * 17 = 289 windows
    crops = PyramidCrops([build_pyramid(small, 1), build_pyramid(big, 1)], (8,), seed=0, augment=False)
    from_small = sum(crops.describe(i, 2)[0] == 0 for i in range(600))
    assert from_small <= 8  # expected 600/290 ~ 2; uniform over images would give ~300


def test_images_too_small_for_a_crop_are_never_drawn(rng):
    pyramids = [build_pyramid(i, 3) for i in _images(rng, ((16, 16), (64, 64)))]
    crops = PyramidCrops(pyramids, (12, 6, 4), seed=0)
    assert {crops.describe(i, 2)[0] for i in range(50)} == {1}
    with pytest.raises(UserError, match="lr_crop"):
        PyramidCrops(pyramids, (40, 6, 4), seed=0)


def test_batches_mix_native_scales_and_shard_one_stream(rng):
    crops = PyramidCrops([build_pyramid(i, 3) for i in _images(rng)], (8, 6, 4), seed=0, augment=False)
    assert batch_split(8, (0.25, 0.25, 0.5), 3) == [2, 2, 4]
    assert batch_split(8, (0.25, 0.25, 0.5), 2) == [4, 4, 0]  # x8 not active yet: its share is spread
    assert batch_split(8, (0.0, 0.0, 1.0), 1) == [8, 0, 0]  # x8 only, during stage 1: the x2 stage still trains
    assert sum(batch_split(7, (0.3, 0.3, 0.4), 3)) == 7
    groups = crops.batch(5, [2, 2, 4])
    assert [(s, lr.shape[0], lr.shape[-1], [t.shape[-1] for t in targets]) for s, lr, targets in groups] == \
        [(2, 2, 8, [16]), (4, 2, 6, [12, 24]), (8, 4, 4, [8, 16, 32])]
    ranks = [crops.batch(5, [1, 1, 2], rank=r, world_size=2) for r in range(2)]
    first = 5 * 2 * 4  # iteration 5 of 2 ranks x 4 samples
    assert torch.equal(ranks[1][0][1], crops.crops([first + 4], 2)[0])  # rank 1 takes the second slice
    assert not torch.equal(ranks[0][0][1], ranks[1][0][1])


def test_pyramids_are_cached_and_the_cache_follows_the_files(tmp_path, rng):
    data, cache = tmp_path / "data", tmp_path / "cache"
    data.mkdir()
    Image.fromarray(rng.integers(0, 256, (40, 56, 3), dtype=np.uint8)).save(data / "a.png")
    Image.fromarray(rng.integers(0, 256, (30, 20), dtype=np.uint8)).save(data / "b.webp", lossless=True)
    (data / "notes.txt").write_text("not an image")
    first = load_pyramids([data], (1.0, 0.5), 3, progress=False, cache=cache)
    assert [p[0].shape for p in first] == [(40, 56, 3), (16, 24, 3), (24, 16, 3), (8, 8, 3)]  # modcropped to 8
    assert len(list(cache.iterdir())) == 1
    again = load_pyramids([data], (1.0, 0.5), 3, progress=False, cache=cache)
    assert all(np.array_equal(a, b) for p, q in zip(first, again) for a, b in zip(p, q))
    Image.fromarray(rng.integers(0, 256, (40, 56, 3), dtype=np.uint8)).save(data / "a.png")  # the data changed
    changed = load_pyramids([data], (1.0, 0.5), 3, progress=False, cache=cache)
    assert not np.array_equal(changed[0][0], first[0][0]) and len(list(cache.iterdir())) == 2


def test_shrink_is_close_to_the_uint8_path():
    img = (np.add.outer(np.arange(60), np.arange(50)) * 2 % 256).astype(np.uint8)[..., None].repeat(3, axis=2)
    out = shrink(img, 0.7)
    assert out.shape == (42, 35, 3) and out.dtype == np.uint8
    assert np.abs(out.astype(int) - imresize(img, size=out.shape[:2])).max() <= 1


def test_list_images_errors(tmp_path):
    with pytest.raises(UserError, match="not found"):
        list_images(tmp_path / "missing")
    with pytest.raises(UserError, match="no images"):
        list_images(tmp_path)


def _thumb(img: np.ndarray) -> np.ndarray:
    grey = to_rgb8(img).astype(np.float64).mean(axis=2)
    return imresize(grey, size=(24, 24))


def _near_duplicates(a: list, b: list, tol: float = 6.0) -> list:
    """Pairs whose 24x24 grey thumbnails differ by less than `tol` grey levels on average (same picture, any size)."""
    return [(na, nb) for na, ta in a for nb, tb in b if np.abs(ta - tb).mean() < tol]


def test_the_validation_split_is_no_benchmark_and_no_training_image(shared):
    name, val = load_validation("skimage")
    assert [n for n, _ in val] == list(SKIMAGE_VALIDATION) and "skimage" in name
    val_thumbs = [(n, _thumb(img)) for n, img in val]
    # a picture at another size or crop would still have a close thumbnail; exact copies have identical ones
    others = []
    for folder in [shared / "data" / "test" / s for s in ("Set5", "Set14", "BSD100")] + \
                  [shared / "data" / "train" / s for s in ("T91", "BSD200")]:
        from progsr.imageio import read_array

        others += [(f"{folder.name}/{p.stem}", _thumb(read_array(p))) for p in list_images(folder)]
    assert len(others) == 5 + 14 + 100 + 291
    assert _near_duplicates(val_thumbs, others) == []
    assert _near_duplicates(val_thumbs[:1], val_thumbs[:1]) == [(val[0][0], val[0][0])]  # the check can fire


@pytest.mark.parametrize("scale", [2, 4, 8])
def test_degraded_crops_keep_clean_targets_and_resume_bit_identically(rng, scale):
    from progsr.degradations import DegradationConfig, degrade

    pyramids = [build_pyramid(i, 3) for i in _images(rng)]
    clean = PyramidCrops(pyramids, (10, 6, 4), seed=3)
    degraded = PyramidCrops(pyramids, (10, 6, 4), seed=3, degradation=DegradationConfig())
    lr_c, targets_c = clean.crops([5, 6, 7], scale)
    lr_d, targets_d = degraded.crops([5, 6, 7], scale)
    assert lr_d.shape == lr_c.shape and not torch.equal(lr_d, lr_c)
    assert all(torch.equal(a, b) for a, b in zip(targets_c, targets_d))  # the targets stay the clean levels
    assert torch.equal(lr_d[1], degrade(targets_d[-1][1], scale, DegradationConfig(), 3, 6))  # LR from the HR crop
    again, _ = PyramidCrops(pyramids, (10, 6, 4), seed=3, degradation=DegradationConfig()).crops([6], scale)
    assert torch.equal(again[0], lr_d[1])


def test_training_never_reads_the_held_out_validation_images(tmp_path, monkeypatch):
    """load_pyramids skips every file named in heldout.txt, whatever else the folders hold."""
    import progsr.training.data as data

    held = sorted(data.held_out())
    assert len(held) >= 30 and all(entry.split("/")[0] in ("T91", "BSD200") for entry in held)
    rng = np.random.default_rng(0)
    for entry in held[:2] + ["T91/not_held.png", "BSD200/also_not.png"]:  # two held-out names, two others
        (tmp_path / entry).parent.mkdir(exist_ok=True)
        Image.fromarray(rng.integers(0, 256, (24, 24, 3), dtype=np.uint8)).save(tmp_path / entry, format="PNG")
    read = []
    real_read = data.read_array
    monkeypatch.setattr(data, "read_array", lambda p, *a, **k: read.append(p.name) or real_read(p, *a, **k))
    folders = [tmp_path / "T91", tmp_path / "BSD200"]
    pyramids = data.load_pyramids(folders, (1.0,), 3, progress=False, cache=tmp_path / "cache")
    assert sorted(read) == ["also_not.png", "not_held.png"] and len(pyramids) == 2


def test_the_default_split_is_the_photos_plus_fixed_crops_of_the_held_out_images(shared):
    from progsr.training.data import DEFAULT_VALIDATION, HELD_OUT_CROP, held_out

    name, images = load_validation(DEFAULT_VALIDATION)
    assert [n for n, _ in images[:5]] == list(SKIMAGE_VALIDATION)
    assert sorted(n for n, _ in images[5:]) == sorted(held_out()) and len(images) >= 35
    assert all(max(img.shape[:2]) <= HELD_OUT_CROP and img.shape[2] == 3 for _, img in images[5:])
    again = load_validation(DEFAULT_VALIDATION)[1]
    assert all(np.array_equal(a, b) for (_, a), (_, b) in zip(images, again))  # the crops are fixed
    assert "held-out" in name
