"""progsr.imageio: full bit depth, modes, EXIF orientation, ICC/EXIF carried over, clear errors, atomic writes."""

import os
import warnings

import numpy as np
import pytest
from PIL import Image, ImageOps
from skimage import data

from progsr import imageio
from progsr.errors import UserError
from progsr.imageio import apply_orientation, read_array, read_image, write_image

ICC = b"\x00\x01fake-icc-profile" * 20  # Pillow carries the bytes without parsing them


def _exif(orientation: int, make: str = "progsr-test") -> bytes:
    exif = Image.Exif()
    exif[0x0112] = orientation
    exif[0x010F] = make
    return exif.tobytes()


def _orientation(exif_bytes: bytes) -> int:
    exif = Image.Exif()
    exif.load(exif_bytes)
    return exif.get(0x0112, 1)


@pytest.fixture
def rgb():
    return data.astronaut()[100:140, 200:248]  # 40x48, not square so rotations show


@pytest.mark.parametrize(
    "suffix,channels",
    [(s, c) for s in (".png", ".tiff") for c in (1, 2, 3, 4)] + [(".webp", c) for c in (1, 3, 4)],  # no grey+alpha WebP
)
def test_8bit_lossless_round_trip(tmp_path, rng, suffix, channels):
    shape = (13, 17) if channels == 1 else (13, 17, channels)
    pixels = rng.integers(0, 256, shape, dtype=np.uint8)
    path = tmp_path / f"x{suffix}"
    if suffix == ".webp":
        Image.fromarray(pixels).save(path, lossless=True, exact=True)  # lossless WebP to check the reader
    else:
        write_image(path, pixels)
    back = read_image(path).pixels
    if suffix == ".webp" and channels == 1:
        assert back.shape == (13, 17, 3) and (back == pixels[:, :, None]).all()  # WebP stores grey as RGB
    else:
        assert back.dtype == np.uint8 and back.shape == pixels.shape
        assert np.array_equal(back, pixels)


@pytest.mark.parametrize("suffix", [".png", ".tif"])
@pytest.mark.parametrize("channels", [1, 3, 4])
def test_16bit_round_trip_is_exact(tmp_path, rng, suffix, channels):
    shape = (11, 9) if channels == 1 else (11, 9, channels)
    pixels = rng.integers(0, 65536, shape, dtype=np.uint16)
    path = tmp_path / f"x{suffix}"
    write_image(path, pixels)
    back = read_image(path).pixels
    assert back.dtype == np.uint16
    assert np.array_equal(back, pixels)  # values that are not multiples of 257 survive: no 8-bit step
    assert np.array_equal(read_array(path), pixels)


def test_16bit_colour_tiff_carries_icc(tmp_path, rng):
    pixels = rng.integers(0, 65536, (8, 6, 4), dtype=np.uint16)
    with pytest.warns(UserWarning, match="EXIF is not written"):
        write_image(tmp_path / "x.tif", pixels, icc_profile=ICC, exif=_exif(1))
    back = read_image(tmp_path / "x.tif")
    assert np.array_equal(back.pixels, pixels) and back.icc_profile == ICC


def test_16bit_colour_png_carries_icc_and_exif(tmp_path, rng):
    pixels = rng.integers(0, 65536, (8, 6, 3), dtype=np.uint16)
    path = tmp_path / "x.png"
    write_image(path, pixels, icc_profile=ICC, exif=_exif(1))
    with Image.open(path) as img:  # Pillow (an independent reader) sees the chunks we inserted
        img.load()
        assert img.info["icc_profile"] == ICC
        assert img.getexif()[0x010F] == "progsr-test"
    back = read_image(path)
    assert np.array_equal(back.pixels, pixels) and back.icc_profile == ICC


@pytest.mark.parametrize("orientation", range(1, 9))
def test_exif_orientation_matches_pillow(tmp_path, rgb, orientation):
    path = tmp_path / "o.png"
    Image.fromarray(rgb).save(path, exif=_exif(orientation), icc_profile=ICC)
    with Image.open(path) as img:
        expected = np.asarray(ImageOps.exif_transpose(img))
    got = read_image(path)
    assert np.array_equal(got.pixels, expected)
    assert _orientation(got.exif) == 1  # reset, so viewers do not rotate it twice
    assert got.icc_profile == ICC


def test_exif_orientation_on_16bit_colour(tmp_path, rng):
    pixels = rng.integers(0, 65536, (5, 7, 3), dtype=np.uint16)
    path = tmp_path / "o.png"
    write_image(path, pixels, exif=_exif(6))
    got = read_image(path)
    assert got.pixels.shape == (7, 5, 3)
    assert np.array_equal(got.pixels, np.rot90(pixels, -1))  # orientation 6: rotate 90 degrees clockwise


def test_apply_orientation_is_inverted_by_pillow_transpose(rgb):
    # Orientation k stores the picture transformed; Pillow's exif_transpose ops undo it. Check against Pillow
    # directly on arrays for every value.
    ops = {2: Image.Transpose.FLIP_LEFT_RIGHT, 3: Image.Transpose.ROTATE_180, 4: Image.Transpose.FLIP_TOP_BOTTOM,
           5: Image.Transpose.TRANSPOSE, 6: Image.Transpose.ROTATE_270, 7: Image.Transpose.TRANSVERSE,
           8: Image.Transpose.ROTATE_90}
    for k, op in ops.items():
        assert np.array_equal(apply_orientation(rgb, k), np.asarray(Image.fromarray(rgb).transpose(op)))


@pytest.mark.parametrize("suffix", [".jpg", ".webp", ".png"])
def test_icc_and_exif_carried_to_each_format(tmp_path, rgb, suffix):
    path = tmp_path / f"m{suffix}"
    write_image(path, rgb, icc_profile=ICC, exif=_exif(1, "cam"))
    got = read_image(path)
    assert got.icc_profile == ICC
    exif = Image.Exif()
    exif.load(got.exif)
    assert exif[0x010F] == "cam"


def test_palette_becomes_rgb_or_rgba(tmp_path, rgb):
    pal = Image.fromarray(rgb).quantize(16)
    pal.save(tmp_path / "p.png")
    back = read_image(tmp_path / "p.png").pixels
    assert back.shape == rgb.shape and np.array_equal(back, np.asarray(pal.convert("RGB")))
    pal.save(tmp_path / "pt.png", transparency=0)
    back = read_image(tmp_path / "pt.png").pixels
    assert back.shape == rgb.shape[:2] + (4,)
    assert np.array_equal(back[:, :, 3] == 0, np.asarray(pal) == 0)


def test_read_array_keeps_its_contract(tmp_path, rng):
    la = rng.integers(0, 256, (6, 5, 2), dtype=np.uint8)
    write_image(tmp_path / "la.png", la)
    arr = read_array(tmp_path / "la.png")
    assert arr.shape == (6, 5, 4) and arr.dtype == np.uint8  # grey+alpha as RGBA, as before
    assert np.array_equal(arr[:, :, 0], la[:, :, 0]) and np.array_equal(arr[:, :, 3], la[:, :, 1])
    assert read_image(tmp_path / "la.png").pixels.shape == (6, 5, 2)


def test_jpeg_drops_alpha_with_a_warning(tmp_path, rng):
    rgba = rng.integers(0, 256, (8, 8, 4), dtype=np.uint8)
    with pytest.warns(UserWarning, match="transparency dropped"):
        write_image(tmp_path / "a.jpg", rgba)
    assert read_image(tmp_path / "a.jpg").pixels.shape == (8, 8, 3)


def test_jpeg_reduces_16bit_with_a_warning(tmp_path):
    pixels = np.full((8, 8, 3), 257 * 200, np.uint16)
    with pytest.warns(UserWarning, match="8 bits"):
        write_image(tmp_path / "a.jpg", pixels)
    back = read_image(tmp_path / "a.jpg").pixels
    assert back.dtype == np.uint8 and abs(int(back.mean()) - 200) <= 1


def _bad_files(tmp_path, rgb):
    good = tmp_path / "good.png"
    Image.fromarray(rgb).save(good)
    (tmp_path / "truncated.png").write_bytes(good.read_bytes()[: len(good.read_bytes()) // 2])
    (tmp_path / "notes.txt").write_text("not an image\n")
    (tmp_path / "fake.png").write_text("not a png either\n")
    (tmp_path / "empty.png").write_bytes(b"")
    (tmp_path / "folder.png").mkdir()
    return {
        "truncated.png": "corrupt or truncated",
        "notes.txt": "not an image",
        "fake.png": "not an image",
        "empty.png": "empty file",
        "folder.png": "is a folder",
        "missing.png": "no such file",
    }


def test_bad_files_raise_one_line_user_errors(tmp_path, rgb):
    for name, cause in _bad_files(tmp_path, rgb).items():
        with pytest.raises(UserError) as err:
            read_image(tmp_path / name)
        message = str(err.value)
        assert "\n" not in message and str(tmp_path / name) in message and cause in message


def test_pixel_limit_is_checked_before_decoding_and_names_the_option(tmp_path, rgb):
    path = tmp_path / "big.png"
    Image.fromarray(rgb).save(path)
    path.write_bytes(path.read_bytes()[:200])  # truncated: decoding would fail, the size check must come first
    with pytest.raises(UserError, match="--max-pixels") as err:
        read_image(path, max_pixels=100)
    assert "48x40" in str(err.value)


def test_failed_write_leaves_no_file(tmp_path, rgb, monkeypatch):
    def broken_fsync(fd):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "fsync", broken_fsync)
    with pytest.raises(UserError, match="No space left"):
        write_image(tmp_path / "out.png", rgb)
    assert list(tmp_path.iterdir()) == []  # neither the output nor the temp file


def test_write_replaces_atomically(tmp_path, rgb):
    path = tmp_path / "out.png"
    write_image(path, rgb)
    write_image(path, rgb[::-1])
    assert np.array_equal(read_image(path).pixels, rgb[::-1])
    assert [p.name for p in tmp_path.iterdir()] == ["out.png"]


def test_unwritable_suffix_is_a_user_error(tmp_path, rgb):
    with pytest.raises(UserError, match=r"\.gif"):
        write_image(tmp_path / "x.gif", rgb)


def test_to_pil_modes():
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert imageio.to_pil(imageio.ImageData(np.zeros((3, 4), np.uint16))).mode == "I;16"
        assert imageio.to_pil(imageio.ImageData(np.zeros((3, 4, 2), np.uint8))).mode == "LA"
        img = imageio.to_pil(imageio.ImageData(np.zeros((3, 4, 4), np.uint8), icc_profile=ICC))
    assert img.mode == "RGBA" and img.info["icc_profile"] == ICC


@pytest.mark.parametrize("mask", [0o022, 0o027])
def test_written_files_get_the_umask_mode(tmp_path, rgb, mask):
    old = os.umask(mask)
    try:
        write_image(tmp_path / "out.png", rgb)
    finally:
        os.umask(old)
    assert (tmp_path / "out.png").stat().st_mode & 0o777 == 0o666 & ~mask


def test_atomic_output_keeps_the_old_file_and_no_temp_when_the_writer_fails(tmp_path):
    path = tmp_path / "out.bin"
    path.write_bytes(b"old")
    with pytest.raises(RuntimeError, match="writer broke"):
        with imageio.atomic_output(path) as tmp:
            assert tmp.parent == tmp_path and tmp.name.startswith(".")
            tmp.write_bytes(b"half")
            raise RuntimeError("writer broke")
    assert [p.name for p in tmp_path.iterdir()] == ["out.bin"] and path.read_bytes() == b"old"
    with imageio.atomic_output(path) as tmp:
        tmp.write_bytes(b"new")
    assert [p.name for p in tmp_path.iterdir()] == ["out.bin"] and path.read_bytes() == b"new"


def test_to_8bit_rounds_every_16bit_value_to_the_nearest_8bit_one():
    x = np.arange(65536, dtype=np.uint16)
    assert np.array_equal(imageio.to_8bit(x), np.floor(x / 257 + 0.5).astype(np.uint8))  # 257 is odd: no ties
    u8 = np.arange(256, dtype=np.uint8)
    assert imageio.to_8bit(u8) is u8


def test_8bit_tiff_keeps_exif(tmp_path, rng):
    pixels = rng.integers(0, 256, (8, 6, 3), dtype=np.uint8)
    write_image(tmp_path / "x.tiff", pixels, icc_profile=ICC, exif=_exif(1))
    back = read_image(tmp_path / "x.tiff")
    assert np.array_equal(back.pixels, pixels) and back.icc_profile == ICC
    with Image.open(tmp_path / "x.tiff") as img:  # TIFF holds EXIF tags in its own IFD
        assert img.getexif().get(0x010F) == "progsr-test"


@pytest.mark.parametrize("suffix,dtype,channels", [(".png", np.uint16, 3), (".png", np.uint8, 2), (".jpg", np.uint8, 3),
                                                   (".tif", np.uint16, 4)])
def test_bytes_in_and_out_match_the_file_functions(tmp_path, rng, suffix, dtype, channels):
    """decode_image/encode_image (the Ray engine's IO) give what read_image/write_image give for files."""
    top = 65535 if dtype == np.uint16 else 255
    pixels = rng.integers(0, top + 1, (20, 24, channels), dtype=np.int64).astype(dtype)
    path = tmp_path / f"a{suffix}"
    write_image(path, pixels, b"icc-profile" * 4)
    assert imageio.encode_image(path, pixels, b"icc-profile" * 4) == path.read_bytes()
    from_file, from_bytes = read_image(path), imageio.decode_image(path.read_bytes(), path)
    np.testing.assert_array_equal(from_bytes.pixels, from_file.pixels)
    assert from_bytes.pixels.dtype == dtype
    assert (from_bytes.icc_profile, from_bytes.quantization) == (from_file.icc_profile, from_file.quantization)


def test_decode_image_names_the_file_in_its_errors():
    with pytest.raises(UserError, match=r"^in/x\.png: empty file"):
        imageio.decode_image(b"", "in/x.png")
    with pytest.raises(UserError, match=r"^in/x\.png: not an image file"):
        imageio.decode_image(b"hello", "in/x.png")
