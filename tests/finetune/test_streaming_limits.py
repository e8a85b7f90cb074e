"""Perplexity's Markdown and thread JSON are streamed, not read whole, and what one file or member may expand
to is bounded: a member compressing ~113:1 passes the 200:1 bomb rule, and took 3.23 GB read whole."""

from __future__ import annotations

import json
import random
import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from groupqwen.errors import InvalidExport, UnsafeArchive
from groupqwen.finetune.archive import ZipLimits
from groupqwen.finetune.importers import ImportOptions, import_paths
from groupqwen.finetune.importers.bounded import ParseLimits
from groupqwen.finetune.records import read_jsonl

PeakMemory = Callable[[Callable[[], Any]], tuple[Any, int]]  # the conftest fixture


def _compressible(size: int, seed: int = 0) -> str:
    """Text of ``size`` characters that deflates about 100:1 (under the 200:1 bomb rule)."""
    rng = random.Random(seed)
    line = "".join(rng.choice("abcdefghij ") for _ in range(2000)) + "\n"
    pieces: list[str] = []
    length = 0
    while length < size:
        pieces.append(line if rng.random() < 0.995 else f"{rng.random()}\n")
        length += len(pieces[-1])
    return "".join(pieces)[:size]


def test_a_markdown_member_compressing_100_to_1_stops_at_the_limit(
    tmp_path: Path, peak_memory: PeakMemory
) -> None:
    text = "# A question\n\n" + _compressible(3 * 2**20)
    archive = tmp_path / "perplexity.zip"
    with zipfile.ZipFile(archive, "w", zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("thread.md", text)
    (info,) = zipfile.ZipFile(archive).infolist()
    assert info.file_size > 2**20 and 50 < info.file_size / info.compress_size < 200  # passes the ratio rule
    options = ImportOptions(parse=ParseLimits(max_record_bytes=256 * 1024))
    result, peak = peak_memory(lambda: import_paths([archive], tmp_path / "out.jsonl", options))
    assert isinstance(result, InvalidExport), result
    assert str(result) == "perplexity.zip:thread.md: a Markdown thread larger than 262144 bytes, the limit"
    assert peak < 2 * 2**20, peak  # read in chunks and stopped at the limit, never 3 MB at once


def test_markdown_is_read_line_by_line(tmp_path: Path, peak_memory: PeakMemory) -> None:
    """Memory follows what is kept (one exchange), not the file: 3 MB of dropped exchanges cost nothing."""
    path = tmp_path / "thread.md"
    dropped = "".join(f"---\nstray text {i} without a heading\n" for i in range(80_000))
    path.write_text("# What causes tides?\n\nThe Moon.\n\n" + dropped + "---\n# And waves?\n\nWind.\n")
    assert path.stat().st_size > 3_000_000
    report, peak = peak_memory(lambda: import_paths([path], tmp_path / "out.jsonl"))
    assert not isinstance(report, BaseException), report
    assert report.files[0].turns_dropped == (("exchange without a query heading", 80_000),)
    (conv,) = read_jsonl(tmp_path / "out.jsonl")
    assert [t.content for t in conv.turns] == ["What causes tides?", "The Moon.", "And waves?", "Wind."]
    assert peak < 2 * 2**20, peak


def test_markdown_lines_across_chunks_and_crlf(tmp_path: Path) -> None:
    long_answer = "word " * 40_000  # 200 KB on one line: several chunks
    path = tmp_path / "thread.md"
    path.write_bytes(f"# Q1\r\n\r\n{long_answer}\r\n\r\n---\r\n\r\n# Q2 é\r\n\r\nA2 ⁂ é\r\n".encode())
    import_paths([path], tmp_path / "out.jsonl")
    (conv,) = read_jsonl(tmp_path / "out.jsonl")
    assert [t.content for t in conv.turns] == ["Q1", long_answer.strip(), "Q2 é", "A2 ⁂ é"]


def test_a_list_of_perplexity_threads_is_read_one_at_a_time(tmp_path: Path, peak_memory: PeakMemory) -> None:
    threads = [
        {"thread_url_slug": f"t{i}", "entries": [{"query_str": f"question {i}?", "answer": "x" * 2000}]}
        for i in range(1500)
    ]
    path = tmp_path / "threads.json"
    path.write_text(json.dumps(threads))
    assert path.stat().st_size > 3_000_000
    report, peak = peak_memory(lambda: import_paths([path], tmp_path / "out.jsonl"))
    assert not isinstance(report, BaseException), report
    assert report.written == 1500
    assert peak < 2 * 2**20, peak  # the whole list built at once took several times the file


def test_a_json_string_nested_too_deep_for_json_loads(tmp_path: Path) -> None:
    """Old Perplexity entries carry their steps as JSON in a string: one too deep to decode is the answer."""
    thread = {"entries": [{"query_str": "q", "text": "[" * 100_000}]}
    path = tmp_path / "thread.json"
    path.write_text(json.dumps(thread))
    report = import_paths([path], tmp_path / "out.jsonl")
    assert report.written == 1


def test_a_member_over_the_member_limit_is_refused(tmp_path: Path) -> None:
    archive = tmp_path / "export.zip"
    with zipfile.ZipFile(archive, "w", zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("a.md", "# q\n\nshort\n")
        zf.writestr("b.md", "# q\n\n" + "long " * 1000)
    options = ImportOptions(limits=ZipLimits(max_member_bytes=2000))
    with pytest.raises(UnsafeArchive, match=r"member 'b.md' expands to 5005 bytes, more than the limit 2000"):
        import_paths([archive], tmp_path / "out.jsonl", options)
    assert ZipLimits().max_member_bytes == 4 * 2**30
