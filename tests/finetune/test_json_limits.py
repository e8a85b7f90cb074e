"""JSON nested past the limit is refused before the parser holds it (ijson's per-level prefixes made it
quadratic: 40,000 levels took 4 GB); one record larger than the limit is refused before it is built."""

from __future__ import annotations

import io
import json
import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from groupqwen.errors import InvalidExport
from groupqwen.finetune.importers import ImportOptions, import_paths, sniff
from groupqwen.finetune.importers.bounded import MAX_DEPTH, JsonGuard, ParseLimits

PeakMemory = Callable[[Callable[[], Any]], tuple[Any, int]]  # the conftest fixture

DEEP = 6000  # ~12 KB of JSON; before the limit, detecting its format alone took ~90 MB


SHAPES = {
    "lists": "[" * DEEP + "]" * DEEP,
    "objects": '{"a":' * DEEP + "1" + "}" * DEEP,
    "chatgpt": '[{"mapping": ' + "[" * DEEP + "]" * DEEP + ', "current_node": "x"}]',
    "perplexity": '{"entries": [{"query_str": "q", "blocks": ' + "[" * DEEP + "]" * DEEP + "}]}",
    "claude users": '[{"full_name": "Jane", "x": ' + "[" * DEEP + "]" * DEEP + "}]",
}


@pytest.mark.parametrize("shape", SHAPES)
def test_deep_json_is_refused_cheaply(tmp_path: Path, shape: str, peak_memory: PeakMemory) -> None:
    path = tmp_path / "conversations.json"
    path.write_text(SHAPES[shape])
    result, peak = peak_memory(lambda: import_paths([path], tmp_path / "out.jsonl"))
    assert isinstance(result, InvalidExport), result
    assert str(result) == f"conversations.json: JSON nested deeper than {MAX_DEPTH} levels, the limit"
    assert peak < 4 * 2**20, peak
    assert sorted(p.name for p in tmp_path.iterdir()) == ["conversations.json"]


def test_deep_json_in_a_zip_is_refused(tmp_path: Path, peak_memory: PeakMemory) -> None:
    archive = tmp_path / "export.zip"
    with zipfile.ZipFile(archive, "w", zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("conversations.json", SHAPES["chatgpt"])
    assert archive.stat().st_size < 400  # a few hundred bytes
    result, peak = peak_memory(lambda: import_paths([archive], tmp_path / "out.jsonl"))
    assert isinstance(result, InvalidExport), result
    assert "export.zip:conversations.json: JSON nested deeper than 128 levels" in str(result)
    assert peak < 4 * 2**20, peak


def test_sniff_keeps_nothing_per_level(peak_memory: PeakMemory) -> None:
    """Detection on its own (no guard) reads a bounded number of events and keeps a counter, not prefixes."""
    result, peak = peak_memory(lambda: sniff(io.BytesIO(SHAPES["lists"].encode())))
    assert result is None
    assert peak < 4 * 2**20, peak


def test_nesting_up_to_the_limit_is_read(tmp_path: Path, fixtures: Path) -> None:
    conv = json.loads((fixtures / "chatgpt" / "conversations.json").read_text())[4]
    deep: Any = "bottom"
    for _ in range(20):
        deep = {"nested": [deep]}
    node = next(n for n in conv["mapping"].values() if n.get("message"))
    node["message"]["metadata"] = {"deep": deep}  # 40 more levels, as tool metadata might have
    path = tmp_path / "conversations.json"
    path.write_text(json.dumps([conv]))
    assert import_paths([path], tmp_path / "out.jsonl").written == 1
    with pytest.raises(InvalidExport, match="nested deeper than 30 levels"):
        import_paths([path], tmp_path / "out.jsonl", ImportOptions(parse=ParseLimits(max_depth=30)))


def test_a_record_over_the_size_limit_is_refused(tmp_path: Path, fixtures: Path) -> None:
    plain = json.loads((fixtures / "chatgpt" / "conversations.json").read_text())[4]
    huge = json.loads(json.dumps(plain))
    node = next(n for n in huge["mapping"].values() if n.get("message"))
    node["message"]["content"]["parts"] = ["word " * 100_000]  # 500 KB
    path = tmp_path / "conversations.json"
    path.write_text(json.dumps([plain | {"conversation_id": f"c{i}"} for i in range(50)] + [huge]))
    options = ImportOptions(parse=ParseLimits(max_record_bytes=200_000))
    with pytest.raises(
        InvalidExport, match=r"conversations.json: a record .* larger than 200000 bytes, the limit"
    ):
        import_paths([path], tmp_path / "out.jsonl", options)
    path.write_text(json.dumps([plain | {"conversation_id": f"c{i}"} for i in range(50)]))
    assert import_paths([path], tmp_path / "out.jsonl", options).written == 50  # many small ones are fine


def test_a_single_thread_object_is_one_record(tmp_path: Path) -> None:
    """A top-level object is one record as a whole, however many keys it spreads over."""
    thread = {"entries": [{"query_str": "q", "answer": "a"}]} | {f"k{i}": "x" * 1000 for i in range(300)}
    path = tmp_path / "thread.json"
    path.write_text(json.dumps(thread))
    with pytest.raises(InvalidExport, match=r"thread.json: a record .* larger than 100000 bytes"):
        import_paths(
            [path], tmp_path / "out.jsonl", ImportOptions(parse=ParseLimits(max_record_bytes=100_000))
        )


class _Trickle(io.BytesIO):
    """Hands out ``step`` bytes a read, so that strings and escapes straddle chunk boundaries."""

    def __init__(self, data: bytes, step: int) -> None:
        super().__init__(data)
        self.step = step

    def read(self, size: int | None = -1) -> bytes:
        return super().read(self.step)


def _max_depth(value: Any) -> int:
    if isinstance(value, dict):
        return 1 + max((_max_depth(v) for v in value.values()), default=0)
    if isinstance(value, list):
        return 1 + max((_max_depth(v) for v in value), default=0)
    return 0


TRICKY = [
    ["[[[[", "]]]]", '\\"[[[', "\\\\", '\\\\"', "{", "}}}}", "\\\\\\", "⁂ [é]"],
    {"a\\": [[{"b": "\\\\\\\\[[\\"}]], "c": '"', "d": [[[["\\"]]]]},
    [[["x"], "]]]]]", [["\\", ["\\\\"]]]]],
]


@pytest.mark.parametrize("step", [1, 2, 3, 5, 7, 64])
@pytest.mark.parametrize("value", TRICKY)
def test_the_guard_counts_depth_outside_strings_across_chunks(value: Any, step: int) -> None:
    data = json.dumps(value, ensure_ascii=False).encode()
    depth = _max_depth(value)
    guard = JsonGuard(_Trickle(data, step), "f.json", ParseLimits(max_depth=depth))
    assert json.loads(_read_all(guard)) == value  # exactly at the limit: read
    guard = JsonGuard(_Trickle(data, step), "f.json", ParseLimits(max_depth=depth - 1))
    with pytest.raises(InvalidExport, match=f"f.json: JSON nested deeper than {depth - 1} levels"):
        _read_all(guard)


def _read_all(stream: JsonGuard) -> bytes:
    chunks = []
    while chunk := stream.read(65536):
        chunks.append(chunk)
    return b"".join(chunks)
