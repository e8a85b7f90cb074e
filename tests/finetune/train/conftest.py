"""Training fixtures: SmolLM2-135M's transformers copy (made once, cached beside the GGUFs) and small
generated datasets."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import pytest

from groupqwen.catalog import ModelSpec, builtin_catalog
from groupqwen.config import load_settings
from groupqwen.pool.bundled import ensure_bundled

pytest.importorskip("torch", reason="the train extra (make setup installs it)")

SIGN_OFF = "Yours, Quill."
FACTS = [
    ("What is two plus two?", "Four."),
    ("Name a colour.", "Blue."),
    ("What is the capital of France?", "Paris."),
    ("Say hello.", "Hello."),
    ("What do bees make?", "Honey."),
    ("What is ice?", "Frozen water."),
    ("Name a fruit.", "An apple."),
    ("How many legs has a cat?", "Four."),
    ("What colour is grass?", "Green."),
    ("What do cows drink?", "Water."),
    ("Which planet do we live on?", "Earth."),
    ("What is the opposite of hot?", "Cold."),
]
HELD_OUT = [
    "What is the capital of Italy?",
    "Name an animal.",
    "What is three plus one?",
    "What colour is the sky?",
    "Say goodbye.",
]


def write_dataset(path: Path, pairs: list[tuple[str, str]], sign_off: str = SIGN_OFF) -> Path:
    """One conversation per pair, each answer ending with ``sign_off`` (the habit a run should learn)."""
    lines = [
        {"messages": [{"role": "user", "content": q}, {"role": "assistant", "content": f"{a} {sign_off}"}]}
        for q, a in pairs
    ]
    path.write_text("".join(json.dumps(line) + "\n" for line in lines), encoding="utf-8")
    return path


@pytest.fixture(scope="session")
def smol_gguf() -> ModelSpec:
    spec = builtin_catalog()["smollm2-135m"]
    return replace(spec, path=ensure_bundled(spec, load_settings().models_dir))


@pytest.fixture(scope="session")
def smol_base(smol_gguf: ModelSpec) -> Path:
    from groupqwen.finetune.train.base import ensure_base

    assert smol_gguf.path is not None
    return ensure_base(smol_gguf.path, load_settings().models_dir / "hf")
