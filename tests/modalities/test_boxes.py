"""Grounding in each Qwen-VL generation's documented format → boxes in the original image's pixels."""

from __future__ import annotations

import pytest

from groupqwen.messages import Box, PreparedImage
from groupqwen.modalities.boxes import grounding_of, parse

# the client sent 1000 × 500; the model saw it resized to 700 × 350 (multiples of 28)
IMAGE = PreparedImage(b"", 700, 350, 1000, 500)


def test_qwen2_vl_grid_with_markers() -> None:
    # Qwen2-VL's README: <|object_ref_start|>…<|object_ref_end|><|box_start|>(x1,y1),(x2,y2)<|box_end|>
    # on a 0–1000 grid
    text = (
        "<|object_ref_start|>the dog<|object_ref_end|><|box_start|>(100,200),(500,800)<|box_end|> and "
        "<|object_ref_start|>the ball<|object_ref_end|><|box_start|>(600,600),(700,900)<|box_end|>"
    )
    assert parse(text, "qwen2-vl", IMAGE) == (
        Box("the dog", 100.0, 100.0, 500.0, 400.0),
        Box("the ball", 600.0, 300.0, 700.0, 450.0),
    )


def test_qwen2_vl_without_the_special_tokens() -> None:
    # servers drop special tokens from the text by default: what is left is still read
    boxes = parse("The dog(100,200),(500,800) sits.", "qwen2-vl", IMAGE)
    assert boxes == (Box("The dog", 100.0, 100.0, 500.0, 400.0),)


def test_qwen2_vl_several_boxes_for_one_object() -> None:
    text = (
        "<|object_ref_start|>cars<|object_ref_end|><|box_start|>(0,0),(100,100)<|box_end|>"
        "<|box_start|>(900,900),(1000,1000)<|box_end|>"
    )
    assert [b.label for b in parse(text, "qwen2-vl", IMAGE)] == ["cars", "cars"]


def test_qwen25_vl_json_in_absolute_pixels_of_the_resized_image() -> None:
    # Qwen2.5-VL's cookbook: ```json [{"bbox_2d": [x1, y1, x2, y2], "label": "…"}] ```, resized pixels
    text = (
        '```json\n[\n  {"bbox_2d": [70, 35, 350, 175], "label": "cat"},\n'
        '  {"bbox_2d": [0, 0, 700, 350], "label": "sofa"}\n]\n```'
    )
    assert parse(text, "qwen2.5-vl", IMAGE) == (
        Box("cat", 100.0, 50.0, 500.0, 250.0),
        Box("sofa", 0.0, 0.0, 1000.0, 500.0),
    )


def test_qwen3_vl_json_on_the_relative_grid() -> None:
    text = 'Found: [{"bbox_2d": [250, 100, 750, 900], "label": "person"}]'
    assert parse(text, "qwen3-vl", IMAGE) == (Box("person", 250.0, 50.0, 750.0, 450.0),)


def test_boxes_are_clamped_and_ordered() -> None:
    text = '[{"bbox_2d": [1200, 900, -50, 100], "label": "x"}]'
    assert parse(text, "qwen3-vl", IMAGE) == (Box("x", 0.0, 50.0, 1000.0, 450.0),)


@pytest.mark.parametrize(
    "text",
    [
        "No boxes here.",
        '[{"bbox_2d": [1, 2, 3]}]',  # three numbers
        '[{"bbox_2d": ["a", 2, 3, 4]}]',
        '{"bbox_2d": [1, 2, 3, 4',  # cut off
        "[1, 2, 3, 4]",  # a list, but no bbox_2d
    ],
)
def test_no_box_where_none_is_written(text: str) -> None:
    assert parse(text, "qwen3-vl", IMAGE) == ()


def test_a_box_without_label() -> None:
    assert parse('{"bbox_2d": [0, 0, 1000, 1000]}', "qwen3-vl", IMAGE) == (Box("", 0.0, 0.0, 1000.0, 500.0),)


@pytest.mark.parametrize(
    ("family", "grounding"),
    [
        ("qwen2-vl", "qwen2-vl"),
        ("qwen2.5-vl", "qwen2.5-vl"),
        ("qwen3-vl", "qwen3-vl"),
        ("qwen3-vl (fine-tuned)", "qwen3-vl"),
        ("qwen2.5", None),
        ("custom", None),
    ],
)
def test_grounding_of_family(family: str, grounding: str | None) -> None:
    assert grounding_of(family) == grounding
