"""Reading and writing image files. Every file that enters or leaves progsr passes through here.

What goes in comes out the same kind: grey stays grey (HxW), grey+alpha is HxWx2, colour HxWx3,
colour+alpha HxWx4; 8-bit files give uint8 and 16-bit PNG/TIFF give uint16 (never squeezed through
8 bits). Palette images become RGB or RGBA. EXIF orientation is applied to the pixels, and the ICC
profile and EXIF block travel alongside (orientation reset to 1) so that writers can carry them over.

Pillow reads 16-bit colour PNG/TIFF as 8-bit, so those are decoded by pypng and tifffile instead; Pillow
cannot write them either, so 16-bit colour PNG is encoded by pypng (with the ICC/EXIF chunks added
here) and 16-bit colour TIFF by tifffile. Writes are atomic: a temp file beside the target, then
os.replace, so a failed or interrupted write never leaves a partial output file.
"""

from __future__ import annotations

import contextlib
import io
import os
import secrets
import struct
import warnings
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

from progsr.errors import UserError
from progsr.formats import FORMATS

ORIENTATION = 0x0112
# progsr enforces its own pixel limit (--max-pixels, checked before decoding), which the user can lift;
# Pillow's fixed decompression-bomb guard (179 MP) would otherwise refuse large images whatever the option says.
Image.MAX_IMAGE_PIXELS = None


@dataclass
class ImageData:
    """Decoded pixels plus the metadata a writer should carry over."""

    pixels: np.ndarray  # uint8/uint16: HxW grey, HxWx2 grey+alpha, HxWx3 RGB, HxWx4 RGBA
    icc_profile: bytes | None = None
    exif: bytes | None = None  # orientation already applied to `pixels` and reset to 1 here
    format: str | None = None  # Pillow's name for the source format ("PNG", "JPEG", ...), None for in-memory images
    quantization: tuple[int, ...] | None = None  # a JPEG's luminance quantisation table (64 values), else None


def check_pixels(width: int, height: int, max_pixels: int | None, name) -> None:
    """Raise a UserError pointing at --max-pixels when width*height is above the limit."""
    if max_pixels is not None and width * height > max_pixels:
        raise UserError(
            f"{name}: {width}x{height} image ({width * height} pixels) is above the pixel limit of {max_pixels}; "
            "raise it with --max-pixels (Upscaler(max_pixels=...))"
        )


def apply_orientation(pixels: np.ndarray, orientation: int) -> np.ndarray:
    """Turn raw pixels (HxW or HxWxC) upright according to an EXIF orientation value (1-8)."""
    ops = {
        2: lambda a: a[:, ::-1],  # mirrored left-right
        3: lambda a: a[::-1, ::-1],  # rotated 180
        4: lambda a: a[::-1],  # mirrored top-bottom
        5: lambda a: a.swapaxes(0, 1),  # transposed
        6: lambda a: np.rot90(a, -1),  # needs 90 degrees clockwise
        7: lambda a: np.rot90(a, 2).swapaxes(0, 1),  # transversed
        8: lambda a: np.rot90(a, 1),  # needs 90 degrees counter-clockwise
    }
    op = ops.get(orientation)
    return np.ascontiguousarray(op(pixels)) if op else pixels


def _pil_pixels(img: Image.Image) -> np.ndarray:
    """Pixels of a loaded Pillow image in progsr's layouts (no orientation applied)."""
    mode = img.mode
    if mode in ("I;16", "I;16L", "I;16B", "I;16N", "I"):
        return np.asarray(img, dtype=np.uint32).clip(0, 65535).astype(np.uint16)
    if mode == "F":
        raise UserError(f"{img.filename or 'image'}: 32-bit float images are not supported; convert to 16-bit first")
    if mode in ("L", "LA", "RGB", "RGBA"):
        return np.asarray(img)
    if mode == "1":
        return np.asarray(img.convert("L"))
    if mode == "La":
        return np.asarray(img.convert("LA"))
    has_alpha = mode in ("PA", "RGBa") or "transparency" in img.info
    return np.asarray(img.convert("RGBA" if has_alpha else "RGB"))


def _pil_metadata(img: Image.Image) -> tuple[int, bytes | None, bytes | None]:
    """(EXIF orientation, ICC profile, EXIF bytes with orientation reset) of a Pillow image."""
    orientation = int(img.getexif().get(ORIENTATION, 1) or 1)
    icc = img.info.get("icc_profile") or None
    if img.mode == "CMYK":
        icc = None  # a CMYK profile does not describe the RGB pixels we produce
    exif = None
    raw = img.info.get("exif")  # JPEG APP1, PNG eXIf, WebP EXIF; TIFF tags are not an EXIF block
    if raw:
        parsed = Image.Exif()
        try:
            parsed.load(raw)
            if ORIENTATION in parsed:
                parsed[ORIENTATION] = 1
            exif = parsed.tobytes()
        except Exception:  # unparsable EXIF is dropped, not fatal
            exif = None
    return orientation, icc, exif


def _luma_table(img: Image.Image) -> tuple[int, ...] | None:
    """The first (luminance) quantisation table of a JPEG, as Pillow reads it; None for other formats."""
    tables = getattr(img, "quantization", None)
    if not tables or 0 not in tables or len(tables[0]) != 64:
        return None
    return tuple(int(v) for v in tables[0])


def from_pil(img: Image.Image) -> ImageData:
    """An in-memory Pillow image as ImageData (orientation applied, metadata kept; a JPEG keeps its table)."""
    img.load()
    orientation, icc, exif = _pil_metadata(img)
    return ImageData(apply_orientation(_pil_pixels(img), orientation), icc, exif, None, _luma_table(img))


def _is_16bit_colour(img: Image.Image) -> bool:
    """True for 16-bit colour PNG/TIFF, which Pillow would decode to 8 bits. Call before load()."""
    for tile in img.tile or []:
        args = tile[3] if len(tile) > 3 else None
        rawmode = args[0] if isinstance(args, tuple) else args
        if isinstance(rawmode, str) and ";16" in rawmode and rawmode.split(";")[0] in ("RGB", "RGBA", "LA"):
            return True
    return False


def _decode_16bit(source, name, fmt: str) -> np.ndarray:
    """A 16-bit colour PNG (pypng) or TIFF (tifffile) as H x W x C uint16; orientation is the caller's."""
    data = source.getvalue() if isinstance(source, io.BytesIO) else Path(source).read_bytes()
    try:
        if fmt == "PNG":
            import png

            width, height, flat, info = png.Reader(bytes=data).read_flat()
            arr = np.asarray(flat, dtype=np.uint16).reshape(height, width, info["planes"])
        else:
            import tifffile

            arr = tifffile.imread(io.BytesIO(data))
    except Exception:  # noqa: BLE001 - both readers raise their own error types
        arr = None
    if arr is None or arr.dtype != np.uint16 or arr.ndim != 3 or arr.shape[2] not in (2, 3, 4):
        raise UserError(f"{name}: corrupt 16-bit image (could not decode it)")
    return np.ascontiguousarray(arr)


def read_image(path, max_pixels: int | None = None) -> ImageData:
    """Decode an image file: pixels in progsr's layouts at full bit depth, EXIF orientation applied, ICC/EXIF kept.

    Raises UserError for a missing/empty/corrupt/non-image file or one above `max_pixels` (checked before decoding).
    """
    path = Path(path)
    _check_file(path)
    return _decode(path, path, max_pixels)


def decode_image(data: bytes, name, max_pixels: int | None = None) -> ImageData:
    """read_image for a file's bytes (read elsewhere, e.g. by Ray Data); `name` is the file in messages."""
    if len(data) == 0:
        raise UserError(f"{name}: empty file (0 bytes)")
    return _decode(io.BytesIO(data), name, max_pixels)


def _decode(source, name, max_pixels: int | None) -> ImageData:
    """Decode a path or a BytesIO (read_image, decode_image)."""
    with _open_lazy(source, name, max_pixels) as img:  # closed when done: GIF and TIFF readers keep the file open
        sixteen = _is_16bit_colour(img)
        img = _load(img, name)
        orientation, icc, exif = _pil_metadata(img)
        pixels = _decode_16bit(source, name, img.format) if sixteen else _pil_pixels(img)
        return ImageData(apply_orientation(pixels, orientation), icc, exif, img.format, _luma_table(img))


def _check_file(path: Path) -> None:
    if not path.exists():
        raise UserError(f"{path}: no such file")
    if path.is_dir():
        raise UserError(f"{path}: is a folder, not an image")
    if path.stat().st_size == 0:
        raise UserError(f"{path}: empty file (0 bytes)")


def _open_lazy(source, name, max_pixels: int | None) -> Image.Image:
    try:
        img = Image.open(source)
    except UnidentifiedImageError:
        raise UserError(f"{name}: not an image file (or a format Pillow cannot read)") from None
    except Image.DecompressionBombError as err:
        raise UserError(f"{name}: refused by Pillow's decompression-bomb check ({err})") from None
    except (OSError, SyntaxError, ValueError, EOFError) as err:
        raise UserError(f"{name}: corrupt or truncated image ({err})") from None
    check_pixels(img.width, img.height, max_pixels, name)  # before decoding a single pixel
    return img


def image_header(path) -> tuple[int, int, int, int]:
    """(width, height, channels, bytes per channel) from the file header, without decoding the pixels."""
    path = Path(path)
    _check_file(path)
    with _open_lazy(path, path, None) as img:
        channels = len(img.getbands())
        itemsize = 2 if _is_16bit_colour(img) or img.mode.startswith("I;16") else 1
        return img.width, img.height, channels, itemsize


def _load(img: Image.Image, name) -> Image.Image:
    try:
        img.load()
    except (OSError, SyntaxError, ValueError, EOFError, struct.error) as err:
        raise UserError(f"{name}: corrupt or truncated image ({err})") from None
    return img


def read_array(path, max_pixels: int | None = None) -> np.ndarray:
    """Pixels of an image file as uint8 (or uint16 for 16-bit files), HxW for grey or HxWxC, EXIF orientation applied.

    Grey+alpha comes back as RGBA here (C is 3 or 4); read_image keeps it as HxWx2.
    """
    pixels = read_image(path, max_pixels).pixels
    if pixels.ndim == 3 and pixels.shape[2] == 2:
        grey, alpha = pixels[:, :, :1], pixels[:, :, 1:]
        pixels = np.concatenate([grey, grey, grey, alpha], axis=2)
    return pixels


# ----------------------------------------------------------------------------------------------- writing


def format_for(path) -> str:
    """Pillow's format name for an output path's suffix; UserError for a suffix progsr cannot write."""
    suffix = Path(path).suffix.lower()
    if suffix not in FORMATS:
        raise UserError(f"{path}: cannot write '{suffix or '(no suffix)'}' files; use one of {sorted(FORMATS)}")
    return FORMATS[suffix]


def to_8bit(pixels: np.ndarray) -> np.ndarray:
    """uint16 pixels rounded to uint8 (round(x / 257), exact integer maths); other dtypes pass through."""
    if pixels.dtype == np.uint16:
        return ((pixels.astype(np.uint32) * 255 + 32767) // 65535).astype(np.uint8)  # round(x / 257)
    return pixels


def _drop_alpha(pixels: np.ndarray) -> np.ndarray:
    return pixels[:, :, 0] if pixels.shape[2] == 2 else pixels[:, :, :3]


def _png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)


def _png_with_metadata(png: bytes, icc: bytes | None, exif: bytes | None) -> bytes:
    """Insert iCCP/eXIf chunks right after IHDR (signature 8 bytes + IHDR chunk 25 bytes)."""
    extra = b""
    if icc:
        extra += _png_chunk(b"iCCP", b"ICC Profile\0\0" + zlib.compress(icc))
    if exif:
        extra += _png_chunk(b"eXIf", exif[6:] if exif.startswith(b"Exif\0\0") else exif)
    return png[:33] + extra + png[33:]


def _encode(pixels: np.ndarray, fmt: str, icc: bytes | None, exif: bytes | None, quality: int, name, out) -> None:
    """Encode pixels into the binary file object `out`; warns (warnings.warn) about anything the format cannot hold.

    8-bit images are encoded by Pillow straight into `out`, so a large output is never held twice as bytes.
    """
    if pixels.dtype not in (np.uint8, np.uint16):
        raise TypeError(f"write_image wants uint8 or uint16 pixels, got {pixels.dtype}")
    has_alpha = pixels.ndim == 3 and pixels.shape[2] in (2, 4)
    if fmt in ("JPEG", "BMP") and has_alpha:
        warnings.warn(f"{name}: {fmt} has no alpha channel; transparency dropped", stacklevel=3)
        pixels, has_alpha = _drop_alpha(pixels), False
    if pixels.dtype == np.uint16 and fmt not in ("PNG", "TIFF"):
        warnings.warn(f"{name}: {fmt} stores 8 bits per channel; 16-bit output reduced to 8 bits", stacklevel=3)
        pixels = to_8bit(pixels)
    if pixels.dtype == np.uint16 and pixels.ndim == 3:  # 16-bit colour: beyond Pillow
        if pixels.shape[2] == 2:  # 16-bit grey+alpha: tifffile wants 1, 3 or 4 channels
            grey, alpha = pixels[:, :, :1], pixels[:, :, 1:]
            pixels = np.concatenate([grey, grey, grey, alpha], axis=2)
        if fmt == "PNG":
            import png

            height, width, planes = pixels.shape
            buf = io.BytesIO()
            png.Writer(width, height, greyscale=False, alpha=planes == 4, bitdepth=16).write_array(
                buf, np.ascontiguousarray(pixels).reshape(-1))
            out.write(_png_with_metadata(buf.getvalue(), icc, exif))
            return
        import tifffile

        if exif:
            warnings.warn(f"{name}: EXIF is not written to 16-bit colour TIFF (ICC profile kept)", stacklevel=3)
        extratags = [(34675, 7, len(icc), icc, True)] if icc else []  # InterColorProfile, UNDEFINED bytes
        tifffile.imwrite(out, pixels, photometric="rgb", compression="zlib", extratags=extratags)
        return
    if fmt == "WEBP" and pixels.ndim == 3 and pixels.shape[2] == 2:
        grey, alpha = pixels[:, :, :1], pixels[:, :, 1:]
        pixels = np.concatenate([grey, grey, grey, alpha], axis=2)
    mode = {2: "LA", 3: "RGB", 4: "RGBA"}[pixels.shape[2]] if pixels.ndim == 3 else None
    img = Image.fromarray(np.ascontiguousarray(pixels), mode) if mode else Image.fromarray(np.ascontiguousarray(pixels))
    options = {}
    if fmt != "BMP" and icc:
        options["icc_profile"] = icc
    if fmt in ("PNG", "JPEG", "WEBP", "TIFF") and exif:
        options["exif"] = exif
    if fmt in ("JPEG", "WEBP"):
        options["quality"] = quality
    if fmt == "TIFF":
        options["compression"] = "tiff_deflate"
    img.save(out, format=fmt, **options)


@contextlib.contextmanager
def atomic_output(path):
    """Yield a hidden, unique temp path beside `path`; on success it replaces `path`, on any error it is removed.

    The writer creates the temp file itself, so it gets the umask's mode (mkstemp would make it 0600).
    """
    path = Path(path)
    tmp = path.parent / f".{path.name}.{secrets.token_hex(6)}.tmp"
    try:
        yield tmp
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def write_atomic(path, fill) -> None:
    """Call fill(f) on a new binary file beside `path`, fsync it and rename it over `path`: all or nothing."""
    try:
        with atomic_output(path) as tmp, open(tmp, "xb") as f:
            fill(f)
            f.flush()
            os.fsync(f.fileno())
    except OSError as err:
        raise UserError(f"{path}: cannot write ({err.strerror or err})") from None


def write_bytes_atomic(path, data: bytes) -> None:
    """Write bytes to `path` via a temp file in the same folder and os.replace: all or nothing."""
    write_atomic(path, lambda f: f.write(data))


def write_image(path, pixels: np.ndarray, icc_profile: bytes | None = None, exif: bytes | None = None,
                quality: int = 95) -> None:
    """Write uint8/uint16 pixels (progsr layouts) atomically; the format follows the suffix.

    16-bit stays 16-bit in PNG/TIFF; JPEG/BMP drop alpha and JPEG/WebP/BMP reduce 16-bit to 8-bit,
    each with a warnings.warn. The ICC profile is written where the format allows, EXIF to PNG/JPEG/WebP.
    """
    fmt = format_for(path)
    write_atomic(path, lambda f: _encode(np.asarray(pixels), fmt, icc_profile, exif, quality, path, f))


def encode_image(name, pixels: np.ndarray, icc_profile: bytes | None = None, exif: bytes | None = None,
                 quality: int = 95) -> bytes:
    """The bytes write_image(name, ...) would write (same format rules and warnings), for writers elsewhere."""
    out = io.BytesIO()
    _encode(np.asarray(pixels), format_for(name), icc_profile, exif, quality, name, out)
    return out.getvalue()


def to_pil(data: ImageData) -> Image.Image:
    """ImageData as a Pillow image (16-bit colour becomes 8-bit: Pillow has no 16-bit RGB mode)."""
    pixels = data.pixels
    if pixels.dtype == np.uint16 and pixels.ndim == 3:
        pixels = to_8bit(pixels)
    if pixels.ndim == 2:
        img = Image.fromarray(np.ascontiguousarray(pixels))  # uint8 -> L, uint16 -> I;16
    else:
        img = Image.fromarray(np.ascontiguousarray(pixels), {2: "LA", 3: "RGB", 4: "RGBA"}[pixels.shape[2]])
    if data.icc_profile:
        img.info["icc_profile"] = data.icc_profile  # Pillow's PNG/JPEG/WebP savers pick it up from info
    if data.exif:
        img.info["exif"] = data.exif
    return img
