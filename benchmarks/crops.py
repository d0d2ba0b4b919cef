"""Side-by-side crops for the model card: bicubic | each model | HR, under the benchmark's LR protocol.

    python benchmarks/crops.py --models weights/progsr_x8_psnr.safetensors \
        --images ../shared/data/test/Set14/baboon.png:200,100 ../shared/data/test/Set5/butterfly.png \
        --scale 4 --size 96 --out weights/crops.png

Each --images entry is PATH or PATH:X,Y (top-left corner of the HR crop; default the centre).
`--realism 0 0.5 1` adds a column per value, the shipped psnr/gan blend as the app's slider makes it.

With --photos the images are real low-resolution photos, upscaled as they are (no HR, no downscale):
X,Y is then the corner in the photo, and `--clean auto` adds the clean-up control's column, which reads
the file's JPEG table and pixels as `progsr upscale` does and says what it chose.

    python benchmarks/crops.py --photos --models weights/progsr_x8_psnr.safetensors --clean auto \
        --images photo.jpg:120,80 --scale 4 --size 128 --out weights/real_photos_x4.png
"""

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # run from a checkout without installing

import numpy as np  # noqa: E402
from PIL import Image, ImageDraw  # noqa: E402

from progsr.cli import run  # noqa: E402
from progsr.errors import UserError  # noqa: E402
from progsr.evaluation import BicubicMethod, GeneratorMethod  # noqa: E402
from progsr.imageio import write_image  # noqa: E402
from progsr.protocol import read_hr  # noqa: E402
from progsr.resize import imresize, modcrop  # noqa: E402

LABEL_HEIGHT = 14


def _parse_image(spec: str) -> tuple[Path, tuple[int, int] | None]:
    path, _, corner = spec.partition(":")
    if not corner:
        return Path(path), None
    try:
        x, y = (int(v) for v in corner.split(","))
    except ValueError:
        raise UserError(f"{spec}: expected PATH or PATH:X,Y") from None
    return Path(path), (x, y)


def _labelled(tile: np.ndarray, label: str) -> np.ndarray:
    canvas = Image.new("RGB", (tile.shape[1], tile.shape[0] + LABEL_HEIGHT), "white")
    canvas.paste(Image.fromarray(tile), (0, LABEL_HEIGHT))
    ImageDraw.Draw(canvas).text((2, 1), label, fill="black")
    return np.asarray(canvas)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--models", nargs="*", default=[], help="generator .safetensors files, one column each")
    p.add_argument("--realism", type=float, nargs="*", default=[],
                   help="realism values, one column each: the shipped psnr (0) / gan (1) blend")
    p.add_argument("--images", nargs="+", required=True, help="HR images, PATH or PATH:X,Y")
    p.add_argument("--scale", type=int, default=4)
    p.add_argument("--size", type=int, default=96, help="HR crop size in pixels")
    p.add_argument("--out", default="crops.png")
    p.add_argument("--photos", action="store_true", help="the images are real LR photos: no HR, no downscale")
    p.add_argument("--clean", nargs="*", default=[], help="with --photos: clean-up values (auto or 0..1), one column each")
    args = p.parse_args(argv)
    if args.photos:
        return photo_sheet(args)

    s, size = args.scale, args.size
    methods = [("bicubic", BicubicMethod("symmetric"))]
    methods += [(Path(m).stem.replace("progsr_x8_", ""), GeneratorMethod(Path(m), "cpu")) for m in args.models]
    for _, method in methods:
        method.check_scale(s)
    if args.realism:
        from progsr.inference import Upscaler

        blend = Upscaler(device="cpu", precision="fp32", realism=args.realism[0], max_pixels=None)
        methods += [(f"r={r:g}", lambda lr, s, r=r: blend.upscale_pixels(lr, scale=s, realism=r)) for r in args.realism]
    if len(methods) == 1:
        raise UserError("nothing to compare: give --models and/or --realism")

    rows = []
    for spec in args.images:
        path, corner = _parse_image(spec)
        hr = read_hr(path)
        if hr.ndim == 2:
            hr = np.repeat(hr[..., None], 3, axis=2)
        hr = modcrop(hr, s)
        h, w = hr.shape[:2]
        if size > min(h, w):
            raise UserError(f"{path}: {w}x{h} is smaller than the {size}px crop")
        x, y = corner if corner else ((w - size) // 2, (h - size) // 2)
        x, y = min(max(0, x), w - size) // s * s, min(max(0, y), h - size) // s * s
        lr = imresize(hr, scale=1 / s)
        tiles = [_labelled(method(lr, s)[y : y + size, x : x + size], f"{name} x{s}") for name, method in methods]
        tiles.append(_labelled(hr[y : y + size, x : x + size], "HR"))
        rows.append(np.concatenate(tiles, axis=1))
    grid = np.concatenate(rows, axis=0)
    write_image(args.out, grid)
    print(f"wrote {args.out} ({grid.shape[1]}x{grid.shape[0]})")
    return 0


def photo_sheet(args) -> int:
    """Crops of real photos upscaled as they are: bicubic | each model | each clean-up value, one row per photo."""
    from progsr.imageio import read_image
    from progsr.inference import Upscaler

    s, size, margin = args.scale, args.size, 32  # margin: LR context around the crop, beyond the receptive field
    models = [(Path(m).stem.replace("progsr_x8_", ""), Upscaler(m, device="cpu", precision="fp32", max_pixels=None))
              for m in args.models]
    shipped = Upscaler("psnr", device="cpu", precision="fp32", max_pixels=None) if args.clean else None
    rows = []
    for spec in args.images:
        path, corner = _parse_image(spec)
        data = read_image(path)
        photo = data.pixels[..., :3] if data.pixels.ndim == 3 else np.repeat(data.pixels[..., None], 3, axis=2)
        c = size // s
        h, w = photo.shape[:2]
        if c > min(h, w):
            raise UserError(f"{path}: {w}x{h} is smaller than the {c}px LR crop")
        x, y = corner if corner else ((w - c) // 2, (h - c) // 2)
        x, y = min(max(0, x), w - c), min(max(0, y), h - c)
        top, left = max(0, y - margin), max(0, x - margin)
        window = np.ascontiguousarray(photo[top : y + c + margin, left : x + c + margin])
        cut = lambda out: out[(y - top) * s : (y - top + c) * s, (x - left) * s : (x - left + c) * s]  # noqa: E731
        tiles = [_labelled(cut(imresize(window, scale=s)), f"bicubic x{s}")]
        tiles += [_labelled(cut(up.upscale_pixels(window, scale=s)), name) for name, up in models]
        for value in args.clean:
            if value == "auto":
                strength, found = shipped.resolve_clean(photo, data.quantization)
                label = f"auto c={strength:g}" + (f" q{found.quality}" if found and found.quality else "")
            else:
                strength, label = float(value), f"clean {value}"
            tiles.append(_labelled(cut(shipped.upscale_pixels(window, scale=s, clean=strength)), label))
        rows.append(np.concatenate(tiles, axis=1))
    grid = np.concatenate(rows, axis=0)
    write_image(args.out, grid)
    print(f"wrote {args.out} ({grid.shape[1]}x{grid.shape[0]})")
    return 0


if __name__ == "__main__":
    sys.exit(run(main, sys.argv[1:], "crops.py"))
