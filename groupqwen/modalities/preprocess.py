"""Image bytes → pixels a Qwen-VL model takes, with Pillow (docs/vision.md).

``decode`` identifies the image by its content (never by a header or a data URL's media type), refuses
formats other than JPEG, PNG, GIF, WebP and BMP, refuses a declared size above ``images.max_image_pixels``
*before* decoding a pixel (the decompression-bomb guard), takes the first frame of an animation, applies
the EXIF orientation and converts to RGB (transparency composited on white); a JPEG much larger than the
model's budget is decoded at a reduced scale (libjpeg's DCT scaling, ``Image.draft``), never below the
target size. ``fit`` is Qwen-VL's
``smart_resize``: both sides multiples of the model's factor (28: 14-pixel patches merged 2 × 2; 32 for
Qwen3-VL), the area within ``min_pixels``..``max_pixels``, the aspect kept. ``prepare`` gives the raw RGB
pixels for a model run in-process (no metadata survives); ``reencode`` re-encodes an image for a remote
model only when it is over the model's budget.
"""

from __future__ import annotations

import io
import math
from dataclasses import dataclass

from PIL import Image, ImageOps, UnidentifiedImageError

from groupqwen.errors import ImageRefused
from groupqwen.messages import PreparedImage

FORMATS = ("JPEG", "PNG", "GIF", "WEBP", "BMP")
MAX_ASPECT = 200  # Qwen-VL's processors refuse images more elongated than this


@dataclass(frozen=True)
class PixelBudget:
    """How a model wants its images: sides multiples of ``factor``, area within ``min_pixels`` and
    ``max_pixels``; ``max_image_pixels`` guards the decoder."""

    factor: int
    min_pixels: int
    max_pixels: int
    max_image_pixels: int


def fit(width: int, height: int, budget: PixelBudget) -> tuple[int, int]:
    """Qwen-VL's ``smart_resize``: the size closest to ``width`` × ``height`` with both sides multiples of
    ``budget.factor`` and the area within the budget."""
    f = budget.factor
    w = max(f, round(width / f) * f)
    h = max(f, round(height / f) * f)
    if w * h > budget.max_pixels:
        beta = math.sqrt(width * height / budget.max_pixels)
        w = max(f, math.floor(width / beta / f) * f)
        h = max(f, math.floor(height / beta / f) * f)
    elif w * h < budget.min_pixels:
        beta = math.sqrt(budget.min_pixels / (width * height))
        w = math.ceil(width * beta / f) * f
        h = math.ceil(height * beta / f) * f
    return w, h


def decode(data: bytes, where: str, budget: PixelBudget) -> Image.Image:
    """``data`` as an upright RGB image (first frame), or ``ImageRefused`` saying why not."""
    image = _open(data, where)
    width, height = image.size
    if width < 1 or height < 1:
        raise ImageRefused(f"{where} has no pixels ({width} × {height})", param=where)
    if width * height > budget.max_image_pixels:
        raise ImageRefused(
            f"{where} declares {width} × {height} pixels, more than images.max_image_pixels "
            f"({budget.max_image_pixels}): refused before decoding",
            param=where,
        )
    if max(width, height) / min(width, height) > MAX_ASPECT:
        raise ImageRefused(
            f"{where} is {width} × {height}: more than {MAX_ASPECT} times as long as it is wide", param=where
        )
    if image.format == "JPEG":  # decode at 1/2, 1/4 or 1/8 scale when the target is that much smaller
        image.draft("RGB", fit(width, height, budget))
    try:
        image.seek(0)  # the first frame of an animation
        image.load()
        upright = ImageOps.exif_transpose(image) or image
        return _rgb(upright)
    except (Image.DecompressionBombError, OSError, ValueError, SyntaxError) as exc:
        raise ImageRefused(f"{where} is a damaged {image.format} image: {exc}", param=where) from None


def _rgb(image: Image.Image) -> Image.Image:
    if image.mode == "RGB":
        return image
    if image.mode in ("RGBA", "LA", "PA") or (image.mode == "P" and "transparency" in image.info):
        rgba = image.convert("RGBA")
        white = Image.new("RGB", rgba.size, (255, 255, 255))
        white.paste(rgba, mask=rgba.getchannel("A"))
        return white
    return image.convert("RGB")


def prepare(data: bytes, where: str, budget: PixelBudget) -> PreparedImage:
    """``data`` decoded and resized to the model's budget: raw RGB pixels, with both sizes."""
    image = decode(data, where, budget)
    width, height = fit(image.width, image.height, budget)
    resized = image
    if (width, height) != image.size:
        resized = image.resize((width, height), Image.Resampling.BICUBIC)
    return PreparedImage(resized.tobytes(), width, height, image.width, image.height)


def measure(data: bytes, where: str) -> tuple[int, int]:
    """The upright size of ``data`` (EXIF orientation applied) without decoding its pixels."""
    image = _open(data, where)
    width, height = image.size
    try:
        orientation = image.getexif().get(0x0112, 1)
    except (OSError, ValueError, SyntaxError):
        orientation = 1
    return (height, width) if orientation in (5, 6, 7, 8) else (width, height)


def reencode(data: bytes, where: str, budget: PixelBudget, max_bytes: int) -> bytes | None:
    """New image bytes for a remote model when ``data`` is over its budget (more pixels than
    ``max_pixels``, or more bytes than ``max_bytes``), else ``None``: sent untouched."""
    width, height = measure(data, where)
    if width * height <= budget.max_pixels and len(data) <= max_bytes:
        return None
    image = decode(data, where, budget)
    size = fit(image.width, image.height, budget)
    if size != image.size:
        image = image.resize(size, Image.Resampling.BICUBIC)
    out = io.BytesIO()
    image.save(out, format="JPEG", quality=90)  # no EXIF, no ICC profile, no comments: nothing carried over
    return out.getvalue()


def _open(data: bytes, where: str) -> Image.Image:
    try:
        return Image.open(io.BytesIO(data), formats=FORMATS)
    except UnidentifiedImageError:
        raise ImageRefused(
            f"{where} is not an image this gateway reads (by its content; accepted: {', '.join(FORMATS)})",
            param=where,
        ) from None
    except Image.DecompressionBombError:
        raise ImageRefused(
            f"{where} declares more pixels than images.max_image_pixels: refused before decoding", param=where
        ) from None
    except (OSError, ValueError) as exc:
        raise ImageRefused(f"{where} could not be read as an image: {exc}", param=where) from None
