"""Image file suffixes and formats, as plain constants: what the CLI's --help needs without numpy or Pillow."""

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".webp", ".bmp", ".tif", ".tiff", ".gif"}
# Output format name (Pillow's) for each writable suffix.
FORMATS = {".png": "PNG", ".jpg": "JPEG", ".jpeg": "JPEG", ".webp": "WEBP", ".bmp": "BMP", ".tif": "TIFF", ".tiff": "TIFF"}
# --format NAME -> the suffix it writes.
FORMAT_SUFFIXES = {"png": ".png", "jpg": ".jpg", "jpeg": ".jpg", "webp": ".webp", "tiff": ".tiff", "tif": ".tiff",
                   "bmp": ".bmp"}
