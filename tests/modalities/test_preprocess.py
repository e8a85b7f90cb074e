"""Image bytes → pixels for a Qwen-VL model: content sniffing, the bomb guard, EXIF orientation, RGB, the
first frame, Qwen-VL's smart resize, and re-encoding for remote models only when over budget."""

from __future__ import annotations

import io
import struct
import zlib

import pytest
from PIL import Image

from groupqwen.errors import ImageRefused
from groupqwen.modalities.preprocess import PixelBudget, decode, fit, measure, prepare, reencode

BUDGET = PixelBudget(factor=28, min_pixels=4 * 28 * 28, max_pixels=100 * 28 * 28, max_image_pixels=10_000_000)
WHERE = "messages[0].content[1]"


def encoded(image: Image.Image, fmt: str = "PNG", **params: object) -> bytes:
    out = io.BytesIO()
    image.save(out, format=fmt, **params)
    return out.getvalue()


def png_header(width: int, height: int) -> bytes:
    """A PNG whose header declares ``width`` × ``height`` (its pixel data is one empty row): what a
    decompression bomb looks like before it is decoded."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", ihdr)
        + chunk(b"IDAT", zlib.compress(b"\0"))
        + chunk(b"IEND", b"")
    )


@pytest.mark.parametrize(
    ("size", "expected"),
    [
        ((280, 280), (280, 280)),  # already multiples of 28, within budget
        ((300, 200), (308, 196)),  # rounded to the nearest multiples
        ((2000, 1000), (392, 196)),  # over max_pixels: scaled down, aspect kept
        ((20, 20), (56, 56)),  # under min_pixels: scaled up
        ((1, 150), (28, 140)),  # a side below the factor still gets one patch row
    ],
)
def test_fit_is_qwen_smart_resize(size: tuple[int, int], expected: tuple[int, int]) -> None:
    width, height = fit(*size, BUDGET)
    assert (width, height) == expected
    assert width % 28 == 0 and height % 28 == 0
    assert width * height <= BUDGET.max_pixels


def test_qwen3_factor_is_32() -> None:
    budget = PixelBudget(32, 4 * 32 * 32, 64 * 32 * 32, 10_000_000)
    assert all(side % 32 == 0 for side in fit(500, 300, budget))


def test_exif_orientation_is_applied_and_pixels_come_upright() -> None:
    image = Image.new("RGB", (60, 30), (255, 0, 0))
    image.paste((0, 0, 255), (0, 0, 30, 30))  # left half blue
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90° clockwise to display
    data = encoded(image, "JPEG", exif=exif.tobytes(), quality=95)
    assert measure(data, WHERE) == (30, 60)
    upright = decode(data, WHERE, BUDGET)
    assert upright.size == (30, 60)
    top = upright.getpixel((15, 5))
    assert isinstance(top, tuple) and top[2] > 200 and top[0] < 60  # the blue half is now on top


def test_transparency_becomes_white_and_mode_rgb() -> None:
    image = Image.new("RGBA", (56, 56), (0, 0, 0, 0))
    prepared = prepare(encoded(image), WHERE, BUDGET)
    assert (prepared.width, prepared.height) == (56, 56)
    assert prepared.rgb[:3] == b"\xff\xff\xff"
    assert len(prepared.rgb) == 56 * 56 * 3


def test_an_animation_gives_its_first_frame() -> None:
    frames = [Image.new("RGB", (56, 56), color) for color in ((255, 0, 0), (0, 255, 0))]
    out = io.BytesIO()
    frames[0].save(out, format="GIF", save_all=True, append_images=frames[1:], duration=100, loop=0)
    prepared = prepare(out.getvalue(), WHERE, BUDGET)
    red, green, _ = prepared.rgb[:3]
    assert red > 200 and green < 50


def test_prepare_keeps_both_sizes() -> None:
    prepared = prepare(encoded(Image.new("RGB", (2000, 1000))), WHERE, BUDGET)
    assert (prepared.original_width, prepared.original_height) == (2000, 1000)
    assert (prepared.width, prepared.height) == (392, 196)


def test_content_is_sniffed_not_trusted() -> None:
    with pytest.raises(ImageRefused, match=r"messages\[0\]\.content\[1\] is not an image .*by its content"):
        decode(b"<html>not a picture</html>", WHERE, BUDGET)
    # a format Pillow reads but the gateway does not accept (TIFF) is refused the same way
    with pytest.raises(ImageRefused, match="accepted: JPEG, PNG, GIF, WEBP, BMP"):
        decode(encoded(Image.new("RGB", (8, 8)), "TIFF"), WHERE, BUDGET)


@pytest.mark.parametrize(
    ("side", "said"), [(9_000, "declares 9000 × 9000 pixels"), (60_000, "declares more")]
)
def test_a_decompression_bomb_is_refused_before_decoding(side: int, said: str) -> None:
    with pytest.raises(ImageRefused, match=rf"{said}.*refused before decoding"):
        decode(png_header(side, side), WHERE, BUDGET)


def test_a_truncated_image_is_refused() -> None:
    data = encoded(Image.new("RGB", (64, 64), (10, 20, 30)), "JPEG")
    with pytest.raises(ImageRefused, match=r"could not be read as an image|damaged JPEG image"):
        decode(data[: len(data) // 2], WHERE, BUDGET)


def test_too_elongated_is_refused() -> None:
    with pytest.raises(ImageRefused, match="more than 200 times"):
        decode(encoded(Image.new("RGB", (4020, 20))), WHERE, BUDGET)


def test_remote_images_are_reencoded_only_over_budget() -> None:
    small = encoded(Image.new("RGB", (100, 100), (1, 2, 3)))
    assert reencode(small, WHERE, BUDGET, max_bytes=1_000_000) is None  # untouched

    exif = Image.Exif()
    exif[0x010F] = "SecretCam"  # camera maker: metadata the client may not mean to pass on
    big = encoded(Image.new("RGB", (3000, 2000), (200, 100, 50)), "JPEG", exif=exif.tobytes())
    smaller = reencode(big, WHERE, BUDGET, max_bytes=10_000_000)
    assert smaller is not None
    again = Image.open(io.BytesIO(smaller))
    assert again.size == (336, 224) and again.size[0] * again.size[1] <= BUDGET.max_pixels
    assert not again.getexif() and b"SecretCam" not in smaller

    # within the pixels but over the bytes: re-encoded too
    assert reencode(small, WHERE, BUDGET, max_bytes=100) is not None
