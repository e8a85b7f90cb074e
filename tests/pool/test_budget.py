"""GGUF header reading and the pure memory accounting of the pool (a vision model's projector included)."""

from __future__ import annotations

import struct
from dataclasses import replace
from pathlib import Path

import pytest

from groupqwen.config import load_settings
from groupqwen.errors import ModelLoadError
from groupqwen.pool.budget import MiB, Resident, estimate, projector_estimate, to_evict
from groupqwen.pool.factory import memory_need
from groupqwen.pool.gguf import ArrayInfo, read_metadata


def _string(text: str) -> bytes:
    data = text.encode()
    return struct.pack("<Q", len(data)) + data


def _gguf(path: Path, values: list[tuple[str, int, bytes]]) -> Path:
    """A GGUF v3 header with the given (key, type, encoded value) entries and no tensors."""
    body = b"GGUF" + struct.pack("<IQQ", 3, 0, len(values))
    for key, kind, value in values:
        body += _string(key) + struct.pack("<I", kind) + value
    path.write_bytes(body)
    return path


def _tokens(n: int) -> bytes:
    return struct.pack("<IQ", 8, n) + b"".join(_string(f"t{i}") for i in range(n))


def _llama_header(tmp_path: Path) -> Path:
    return _gguf(
        tmp_path / "m.gguf",
        [
            ("general.architecture", 8, _string("llama")),
            ("llama.block_count", 4, struct.pack("<I", 30)),
            ("llama.embedding_length", 4, struct.pack("<I", 576)),
            ("llama.attention.head_count", 4, struct.pack("<I", 9)),
            ("llama.attention.head_count_kv", 4, struct.pack("<I", 3)),
            ("llama.rope.freq_base", 6, struct.pack("<f", 10000.0)),
            ("tokenizer.ggml.tokens", 9, _tokens(1000)),
            ("tokenizer.ggml.scores", 9, struct.pack("<IQ", 6, 1000) + b"\0" * 4000),
            ("general.tags", 9, struct.pack("<IQ", 8, 2) + _string("a") + _string("b")),
        ],
    )


def test_reads_scalars_strings_and_skips_large_arrays(tmp_path: Path) -> None:
    meta = read_metadata(_llama_header(tmp_path))
    assert meta.version == 3
    assert meta.architecture == "llama"
    assert meta.arch_value("block_count") == 30
    assert meta.arch_value("rope.freq_base") == pytest.approx(10000.0)
    assert meta.vocab_size == 1000
    assert meta.values["tokenizer.ggml.scores"] == ArrayInfo(6, 1000)
    assert meta.values["general.tags"] == ["a", "b"]


@pytest.mark.parametrize(
    "content",
    [
        b"",
        b"NOPE" + b"\0" * 40,
        b"GGUF" + struct.pack("<IQQ", 9, 0, 0),
        b"GGUF" + struct.pack("<IQQ", 3, 0, 5),
    ],
    ids=["empty", "bad-magic", "bad-version", "truncated"],
)
def test_a_bad_file_is_a_model_load_error_naming_it(tmp_path: Path, content: bytes) -> None:
    path = tmp_path / "bad.gguf"
    path.write_bytes(content)
    with pytest.raises(ModelLoadError, match=r"bad\.gguf"):
        read_metadata(path)


def test_a_truncated_real_header_is_rejected(tmp_path: Path) -> None:
    whole = _llama_header(tmp_path).read_bytes()
    cut = tmp_path / "cut.gguf"
    cut.write_bytes(whole[: len(whole) - 100])
    with pytest.raises(ModelLoadError, match=r"cut\.gguf"):
        read_metadata(cut)


def test_estimate_counts_kv_cache_from_the_header(tmp_path: Path) -> None:
    meta = read_metadata(_llama_header(tmp_path))
    small = estimate(meta, file_size=100 * MiB, n_ctx=1024)
    large = estimate(meta, file_size=100 * MiB, n_ctx=4096)
    # 30 layers × 3 KV heads × (64 + 64) dims × 2 bytes per token of context
    assert small.kv_cache == 30 * 1024 * 3 * 128 * 2
    assert large.kv_cache == 4 * small.kv_cache
    assert estimate(meta, 100 * MiB, 1024, n_parallel=2).kv_cache == 2 * small.kv_cache
    assert small.weights == 100 * MiB
    assert small.total == small.weights + small.kv_cache + small.compute + small.runtime


def test_eviction_takes_least_recently_used_idle_unpinned_models() -> None:
    resident = [
        Resident("old-pinned", 400, last_used=1, pinned=True, busy=False),
        Resident("old-busy", 400, last_used=2, pinned=False, busy=True),
        Resident("older", 300, last_used=3, pinned=False, busy=False),
        Resident("newer", 300, last_used=4, pinned=False, busy=False),
    ]
    assert to_evict(need=100, free=200, resident=resident) == []
    assert to_evict(need=400, free=200, resident=resident) == ["older"]
    assert to_evict(need=700, free=200, resident=resident) == ["older", "newer"]
    assert to_evict(need=900, free=200, resident=resident) is None


def test_a_vision_models_need_counts_its_projector(tiny_vlm_files: tuple[Path, Path], tmp_path: Path) -> None:
    model, mmproj = tiny_vlm_files
    entry = {"path": model, "family": "qwen2-vl", "n_ctx": 1024}
    settings = load_settings(
        models={"vl": {**entry, "mmproj": mmproj}, "text": entry}, default_model="vl", models_dir=tmp_path
    )
    catalog = settings.catalog()
    assert catalog["vl"].vision and not catalog["text"].vision  # a projector makes the model take images
    projector = memory_need(catalog["vl"], settings) - memory_need(catalog["text"], settings)
    meta = read_metadata(mmproj)
    assert projector == projector_estimate(meta, mmproj.stat().st_size, settings.images.max_pixels)
    # the projector file, and the encoder's attention over the largest image's patches (14 × 14 pixels
    # each, 2 heads, f32 scores) on top
    patches = settings.images.max_pixels // (14 * 14)
    assert projector >= mmproj.stat().st_size + patches * patches * 2 * 4
    # a model given larger images needs more
    bigger = memory_need(replace(catalog["vl"], max_pixels=4 * settings.images.max_pixels), settings)
    assert bigger > memory_need(catalog["vl"], settings)
