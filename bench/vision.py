"""Image preprocessing speed: the gateway's Pillow path (``modalities/preprocess.prepare``: decode, EXIF
orientation, RGB, Qwen-VL's smart resize to the pixel budget, raw pixels) against pyvips doing the same
(``thumbnail_buffer`` to the same size, which shrinks JPEGs while decoding, then the raw pixels), on the
same images, interleaved.

    .venv/bin/python bench/vision.py [--rounds 15] [--max-pixels 1003520]

The images are made here: photo-like JPEGs (smooth gradients with noise, quality 90) of common sizes, and a
PNG screenshot-like image. Each round times every (image, library) pair in a shuffled order, so a noisy
neighbour slows both sides alike; the median of the paired ratios (pyvips / Pillow) is the number to read.
pyvips is optional (``pip install pyvips pyvips-binary``); without it only Pillow's times print.
Prints Markdown.
"""

from __future__ import annotations

import argparse
import io
import random
import statistics
import time
from collections.abc import Callable

import numpy as np
from PIL import Image

from groupqwen.modalities.preprocess import PixelBudget, fit, prepare


def photo(width: int, height: int, fmt: str) -> bytes:
    rng = np.random.default_rng(width * height)
    y, x = np.mgrid[0:height, 0:width]
    base = np.stack([x * 255 / width, y * 255 / height, (x + y) * 127 / (width + height)], axis=-1)
    pixels = np.clip(base + rng.normal(0, 12, base.shape), 0, 255).astype(np.uint8)
    out = io.BytesIO()
    Image.fromarray(pixels).save(out, format=fmt, **({"quality": 90} if fmt == "JPEG" else {}))
    return out.getvalue()


def vips_prepare(budget: PixelBudget) -> Callable[[bytes], tuple[int, int, int]] | None:
    try:
        import pyvips
    except (ImportError, OSError):
        return None

    def run(data: bytes) -> tuple[int, int, int]:
        head = pyvips.Image.new_from_buffer(data, "", access="sequential")
        width, height = head.width, head.height
        if head.get_typeof("orientation") and head.get("orientation") in (5, 6, 7, 8):
            width, height = height, width
        target = fit(width, height, budget)
        image = pyvips.Image.thumbnail_buffer(data, target[0], height=target[1], size="force")
        if image.hasalpha():
            image = image.flatten(background=[255, 255, 255])
        image = image.colourspace("srgb")[:3]
        raw = image.write_to_memory()
        return image.width, image.height, len(raw)

    return run


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument("--max-pixels", type=int, default=1_003_520)
    args = parser.parse_args()
    budget = PixelBudget(28, 3136, args.max_pixels, 50_000_000)
    images = {
        "JPEG 640×480": photo(640, 480, "JPEG"),
        "JPEG 1920×1080": photo(1920, 1080, "JPEG"),
        "JPEG 4032×3024 (phone)": photo(4032, 3024, "JPEG"),
        "PNG 1920×1080": photo(1920, 1080, "PNG"),
    }

    def pillow(data: bytes) -> tuple[int, int, int]:
        prepared = prepare(data, "bench", budget)
        return prepared.width, prepared.height, len(prepared.rgb)

    sides: dict[str, Callable[[bytes], tuple[int, int, int]]] = {"Pillow": pillow}
    vips = vips_prepare(budget)
    if vips is not None:
        sides["pyvips"] = vips
    for name, data in images.items():  # same output size on both sides, and a warm-up
        sizes = {side: run(data)[:2] for side, run in sides.items()}
        assert len(set(sizes.values())) == 1, (name, sizes)
    times: dict[tuple[str, str], list[float]] = {(i, s): [] for i in images for s in sides}
    pairs = list(times)
    for _ in range(args.rounds):
        random.shuffle(pairs)
        for image, side in pairs:
            start = time.perf_counter()
            sides[side](images[image])
            times[(image, side)].append(time.perf_counter() - start)
    header = "| image | bytes | to (pixels) | Pillow ms |"
    header += " pyvips ms | pyvips / Pillow |" if vips else ""
    print(header)
    print("|---" * (header.count("|") - 1) + "|")
    for image, data in images.items():
        width, height = fit(*Image.open(io.BytesIO(data)).size, budget)
        pil = times[(image, "Pillow")]
        row = f"| {image} | {len(data):,} | {width}×{height} | {statistics.median(pil) * 1000:.1f} |"
        if vips:
            vip = times[(image, "pyvips")]
            ratio = statistics.median(v / p for v, p in zip(vip, pil, strict=True))
            row += f" {statistics.median(vip) * 1000:.1f} | {ratio:.2f} |"
        print(row)


if __name__ == "__main__":
    main()
