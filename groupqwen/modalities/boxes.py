"""Grounding in a Qwen-VL answer → boxes in pixels of the image the client sent (docs/vision.md).

Each generation writes boxes its own way:

- **Qwen2-VL**: ``<|object_ref_start|>the cat<|object_ref_end|><|box_start|>(x1,y1),(x2,y2)<|box_end|>``,
  coordinates on a 0–1000 grid over the image (the markers are special tokens, which servers usually drop
  from the text: ``the cat(x1,y1),(x2,y2)`` is read too);
- **Qwen2.5-VL**: JSON, ``[{"bbox_2d": [x1, y1, x2, y2], "label": "the cat"}]`` (often in a ```json
  fence), in absolute pixels of the image *as the model saw it* (after resizing);
- **Qwen3-VL**: the same JSON, coordinates relative on a 0–1000 grid.

``parse`` reads them for a model's ``GROUNDING`` format and maps them back to the original image: a grid
coordinate ``x`` is ``x / 1000 × width``, a Qwen2.5-VL pixel ``x × original width / resized width``; boxes
are clamped to the image and their corners ordered.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from typing import Any, Literal

from groupqwen.messages import Box, PreparedImage

Grounding = Literal["qwen2-vl", "qwen2.5-vl", "qwen3-vl"]
GROUNDINGS: tuple[Grounding, ...] = ("qwen2-vl", "qwen2.5-vl", "qwen3-vl")
GRID = 1000
_SCAN_LIMIT = 200_000  # characters of an answer searched for boxes

_NUMBER = r"\s*(-?\d+(?:\.\d+)?)\s*"
_QWEN2 = re.compile(
    r"(?:<\|object_ref_start\|>(?P<label>.*?)<\|object_ref_end\|>)?\s*(?:<\|box_start\|>)?"
    rf"\({_NUMBER},{_NUMBER}\)\s*,\s*\({_NUMBER},{_NUMBER}\)(?:<\|box_end\|>)?",
    re.DOTALL,
)
_LABEL_BEFORE = re.compile(r"([^\n.,;:()<>|]{1,80})$")


def grounding_of(family: str) -> Grounding | None:
    """The box format a model family writes (``ModelSpec.family``), or ``None``: none known."""
    name = family.lower().removesuffix(" (fine-tuned)")
    for known in sorted(GROUNDINGS, key=len, reverse=True):
        if name.startswith(known) or name.startswith(known.replace("-", "")):
            return known
    return None


def parse(text: str, grounding: Grounding, image: PreparedImage) -> tuple[Box, ...]:
    """The boxes in ``text``, written in ``grounding``'s format, in pixels of ``image`` as sent."""
    return tuple(_mapped(label, coords, grounding, image) for label, coords in _raw(text, grounding))


def found(text: str, grounding: Grounding) -> bool:
    """Whether ``text`` holds a box in ``grounding``'s format."""
    return next(_raw(text, grounding), None) is not None


def _raw(text: str, grounding: Grounding) -> Iterator[tuple[str, tuple[float, ...]]]:
    text = text[:_SCAN_LIMIT]
    return _qwen2(text) if grounding == "qwen2-vl" else _json_boxes(text)


def _qwen2(text: str) -> Iterator[tuple[str, tuple[float, ...]]]:
    label = ""
    for match in _QWEN2.finditer(text):
        if match["label"] is not None:
            label = match["label"].strip()
        elif "<|box_start|>" not in match[0]:  # bare coordinates: the words before them name the object
            before = _LABEL_BEFORE.search(text[: match.start()].rstrip())
            label = before[1].strip() if before else label
        yield label, tuple(float(match[i]) for i in range(2, 6))


def _json_boxes(text: str) -> Iterator[tuple[str, tuple[float, ...]]]:
    decoder = json.JSONDecoder()
    index = 0
    while (start := _next_json(text, index)) >= 0:
        try:
            value, end = decoder.raw_decode(text, start)
        except ValueError:
            index = start + 1
            continue
        yield from _walk(value)
        index = end


def _next_json(text: str, index: int) -> int:
    found = [i for i in (text.find("[", index), text.find("{", index)) if i >= 0]
    return min(found) if found else -1


def _walk(value: Any) -> Iterator[tuple[str, tuple[float, ...]]]:
    if isinstance(value, list):
        for item in value:
            yield from _walk(item)
    elif isinstance(value, dict):
        box = value.get("bbox_2d")
        if isinstance(box, list) and len(box) == 4 and all(_number(v) for v in box):
            label = value.get("label")
            yield (str(label) if label is not None else ""), tuple(float(v) for v in box)


def _number(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _mapped(label: str, coords: tuple[float, ...], grounding: Grounding, image: PreparedImage) -> Box:
    x1, y1, x2, y2 = coords
    if grounding == "qwen2.5-vl":
        sx, sy = image.original_width / image.width, image.original_height / image.height
    else:
        sx, sy = image.original_width / GRID, image.original_height / GRID
    xs = sorted(_clamp(v * sx, image.original_width) for v in (x1, x2))
    ys = sorted(_clamp(v * sy, image.original_height) for v in (y1, y2))
    return Box(label, xs[0], ys[0], xs[1], ys[1])


def _clamp(value: float, limit: int) -> float:
    return round(min(max(value, 0.0), float(limit)), 1)
