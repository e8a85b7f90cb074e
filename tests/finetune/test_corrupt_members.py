"""A ZIP member whose bytes cannot be read back (corrupt deflate stream, cut short, bad CRC) is a clear error,
never a traceback, and a failed import leaves no output behind, whatever the failure."""

from __future__ import annotations

import json
import struct
import zipfile
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from groupqwen.cli.data import data_app
from groupqwen.errors import InvalidExport
from groupqwen.finetune.importers import import_paths
from groupqwen.finetune.importers.chatgpt import read_chatgpt

# (struct format, offset in the local header, offset in the central directory entry)
_FIELDS = {
    "method": ("<H", 8, 10),
    "crc": ("<I", 14, 16),
    "compressed": ("<I", 18, 20),
    "size": ("<I", 22, 24),
}


def _member(path: Path, name: str, stored: bytes, **fields: int) -> Path:
    """A ZIP with one member holding ``stored`` as is, its header fields then overwritten by ``fields``."""
    with zipfile.ZipFile(path, "w", zipfile.ZIP_STORED) as zf:
        zf.writestr(name, stored)
    raw = bytearray(path.read_bytes())
    central = raw.index(b"PK\x01\x02")
    for field, value in fields.items():
        fmt, local_at, central_at = _FIELDS[field]
        struct.pack_into(fmt, raw, local_at, value)
        struct.pack_into(fmt, raw, central + central_at, value)
    path.write_bytes(bytes(raw))
    return path


def _deflate(data: bytes) -> bytes:
    compressor = zlib.compressobj(9, zlib.DEFLATED, -15)  # raw deflate, as in a ZIP
    return compressor.compress(data) + compressor.flush()


def _export(fixtures: Path) -> bytes:
    return (fixtures / "chatgpt" / "conversations.json").read_bytes()


def _garbage_stream(path: Path, export: bytes) -> tuple[Path, type[Exception]]:
    """A deflated member whose stream is not deflate at all (0xff: a block of the reserved type)."""
    return _member(
        path, "conversations.json", b"\xff" * 4000, method=8, crc=zlib.crc32(export), size=len(export)
    ), zlib.error


def _flipped_stream(path: Path, export: bytes) -> tuple[Path, type[Exception]]:
    """A real deflate stream with bytes of its first block's code tables inverted."""
    stream = bytearray(_deflate(export))
    stream[4:20] = bytes(b ^ 0xFF for b in stream[4:20])
    return _member(
        path, "conversations.json", bytes(stream), method=8, crc=zlib.crc32(export), size=len(export)
    ), zlib.error


def _cut_short(path: Path, export: bytes) -> tuple[Path, type[Exception]]:
    """A member that says it is longer than the archive: reading runs into the end of the file."""
    n = len(export) * 2
    return _member(path, "conversations.json", export, compressed=n, size=n), EOFError


@pytest.mark.parametrize("damage", [_garbage_stream, _flipped_stream, _cut_short])
def test_an_unreadable_member_is_a_clear_error_and_leaves_nothing(
    fixtures: Path, tmp_path: Path, damage: Any
) -> None:
    archive, raw_error = damage(tmp_path / "export.zip", _export(fixtures))
    with pytest.raises(raw_error):  # what zipfile itself raises: the damage is the one meant
        zipfile.ZipFile(archive).read("conversations.json")
    out = tmp_path / "out.jsonl"
    with pytest.raises(InvalidExport, match=r"export.zip:conversations.json: corrupt archive member"):
        import_paths([archive], out)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["export.zip"]  # no output, no .partial


def test_the_command_prints_one_error_line(fixtures: Path, tmp_path: Path) -> None:
    archive, _ = _garbage_stream(tmp_path / "export.zip", _export(fixtures))
    result = CliRunner().invoke(data_app, ["import", str(archive), "-o", str(tmp_path / "out.jsonl")])
    assert result.exit_code == 1
    (line,) = result.output.strip().splitlines()
    assert line.startswith("error: no chat export found") and line.endswith("invalid block type)")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["export.zip"]


def test_a_member_corrupt_after_conversations_keeps_them(fixtures: Path, tmp_path: Path) -> None:
    plain = json.loads(_export(fixtures))[4]
    export = json.dumps([plain | {"conversation_id": f"c{i}", "title": f"t{i * 7919}"} for i in range(400)])
    stream = bytearray(_deflate(export.encode()))
    stream[-200:-180] = b"\xff" * 20  # near the end
    archive = _member(
        tmp_path / "export.zip",
        "conversations.json",
        bytes(stream),
        method=8,
        crc=zlib.crc32(export.encode()),
        size=len(export),
    )
    report = import_paths([archive], tmp_path / "out.jsonl")
    (file,) = report.files
    assert file.error is not None and file.error.startswith("corrupt archive member after")
    assert file.written == file.conversations > 100


def test_a_corrupt_users_file_is_skipped_and_said(fixtures: Path, tmp_path: Path) -> None:
    """users.json is read twice (to detect it, then for the owner): corruption past the first read."""
    users = json.dumps(
        [{"full_name": f"User {i}", "email_address": f"u{i}@example.com"} for i in range(3000)]
    )
    stream = bytearray(_deflate(users.encode()))
    stream[-100:-80] = b"\xff" * 20
    archive = tmp_path / "claude.zip"
    _member(archive, "users.json", bytes(stream), method=8, crc=zlib.crc32(users.encode()), size=len(users))
    with zipfile.ZipFile(archive, "a") as zf:
        zf.writestr("conversations.json", (fixtures / "claude" / "conversations.json").read_bytes())
    report = import_paths([archive], tmp_path / "out.jsonl")
    ((name, why),) = report.skipped
    assert name == "claude.zip:users.json" and why.startswith("corrupt archive member: ")
    assert report.written == 4 and report.identity.names == ()


def test_any_failure_removes_the_partial_output(
    fixtures: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def failing(*args: Any) -> Iterator[Any]:
        yield next(read_chatgpt(*args))
        raise RuntimeError("disk on fire")

    monkeypatch.setattr("groupqwen.finetune.importers.run.read_chatgpt", failing)
    out = tmp_path / "out.jsonl"
    with pytest.raises(RuntimeError, match="disk on fire"):
        import_paths([fixtures / "chatgpt" / "conversations.json"], out)
    assert not out.exists() and not (tmp_path / "out.jsonl.partial").exists()


@pytest.mark.parametrize("cut", [0, 100, -30])
def test_a_zip_cut_short_is_said_to_be_one(fixtures: Path, tmp_path: Path, cut: int) -> None:
    """A download cut short has no central directory left: it said "not a chat export file"."""
    whole = tmp_path / "whole.zip"
    with zipfile.ZipFile(whole, "w", zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("conversations.json", _export(fixtures))
    cut_short = tmp_path / "export.zip"
    cut_short.write_bytes(whole.read_bytes()[:cut])
    out = tmp_path / "out.jsonl"
    with pytest.raises(InvalidExport, match=r"export.zip: not a readable ZIP archive \(cut short or damaged"):
        import_paths([cut_short], out)
    assert not out.exists()
