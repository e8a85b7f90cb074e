"""ZIP exports: read in place, zip-slip and zip bombs refused, symlinks ignored, CRC errors reported."""

from __future__ import annotations

import io
import json
import zipfile
from pathlib import Path

import pytest

from groupqwen.errors import InvalidExport, UnsafeArchive
from groupqwen.finetune.archive import CountingReader, ZipLimits, unsafe_name
from groupqwen.finetune.importers import ImportOptions, import_paths


def _zip(path: Path, members: dict[str, bytes], method: int = zipfile.ZIP_DEFLATED) -> Path:
    with zipfile.ZipFile(path, "w", compression=method) as zf:
        for name, data in members.items():
            zf.writestr(name, data)
    return path


def test_chatgpt_zip_is_read_in_place(fixtures: Path, tmp_path: Path) -> None:
    work = tmp_path / "work"
    work.mkdir()
    archive = _zip(
        tmp_path / "export.zip",
        {
            "conversations.json": (fixtures / "chatgpt" / "conversations.json").read_bytes(),
            "user.json": (fixtures / "chatgpt" / "user.json").read_bytes(),
            "file-AbC123.png": b"\x89PNG fake",
            "chat.html": b"<html></html>",
        },
    )
    report = import_paths([archive], work / "out.jsonl")
    assert [f.name for f in report.files] == ["export.zip:conversations.json"]
    assert report.written == 2 and report.identity.emails == ("jane.doe@example.com",)
    assert sorted(p.name for p in work.iterdir()) == ["out.jsonl", "out.jsonl.meta.json"]  # nothing extracted


def test_claude_zip(fixtures: Path, tmp_path: Path) -> None:
    archive = _zip(
        tmp_path / "claude.zip", {f"data/{p.name}": p.read_bytes() for p in (fixtures / "claude").iterdir()}
    )
    report = import_paths([archive], tmp_path / "out.jsonl")
    assert report.files[0].format == "claude" and report.written == 4
    assert report.identity.names == ("Jane Doe",)


@pytest.mark.parametrize(
    "name", ["../evil.json", "a/../../evil.json", "/etc/evil.json", "C:/evil.json", "..\\evil.json"]
)
def test_zip_slip_is_refused(tmp_path: Path, name: str) -> None:
    archive = _zip(tmp_path / "slip.zip", {"conversations.json": b"[]", name: b"[]"})
    with pytest.raises(UnsafeArchive, match=r"points outside the work folder \(zip-slip\)"):
        import_paths([archive], tmp_path / "out.jsonl")
    assert not (tmp_path / "out.jsonl").exists()


def test_unsafe_name() -> None:
    assert not unsafe_name("conversations.json") and not unsafe_name("a/b..c/d.json")


def test_zip_bomb_by_ratio(tmp_path: Path) -> None:
    archive = _zip(tmp_path / "bomb.zip", {"conversations.json": b"[" + b" " * (8 * 2**20) + b"]"})
    with pytest.raises(UnsafeArchive, match=r"ratio over 200: zip bomb"):
        import_paths([archive], tmp_path / "out.jsonl")


def test_zip_bomb_by_total_size(fixtures: Path, tmp_path: Path) -> None:
    data = (fixtures / "chatgpt" / "conversations.json").read_bytes()
    archive = _zip(tmp_path / "big.zip", {"conversations.json": data})
    limits = ZipLimits(max_total_bytes=1000)
    with pytest.raises(UnsafeArchive, match=rf"{len(data)} bytes uncompressed, more than the limit 1000"):
        import_paths([archive], tmp_path / "out.jsonl", ImportOptions(limits=limits))


def test_too_many_files(tmp_path: Path) -> None:
    archive = _zip(tmp_path / "many.zip", {f"{i}.md": b"# q\n\na" for i in range(5)})
    with pytest.raises(UnsafeArchive, match=r"5 members, more than the limit 3"):
        import_paths([archive], tmp_path / "out.jsonl", ImportOptions(limits=ZipLimits(max_files=3)))


def test_reading_stops_past_the_limit() -> None:
    reader = CountingReader(io.BytesIO(b"x" * 100), "m", limit=10)
    with pytest.raises(UnsafeArchive, match="m: inflates past 10 bytes"):
        reader.read()


def test_symlinks_are_ignored(fixtures: Path, tmp_path: Path) -> None:
    archive = tmp_path / "links.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        zf.writestr("conversations.json", (fixtures / "chatgpt" / "conversations.json").read_bytes())
        link = zipfile.ZipInfo("user.json")
        link.external_attr = 0o120777 << 16  # a symbolic link to /etc/passwd
        zf.writestr(link, "/etc/passwd")
    report = import_paths([archive], tmp_path / "out.jsonl")
    assert ("links.zip:user.json", "symbolic link ignored") in report.skipped
    assert report.identity.emails == () and report.written == 2


def test_crc_error_is_reported(fixtures: Path, tmp_path: Path) -> None:
    plain = json.loads((fixtures / "chatgpt" / "conversations.json").read_text())[4]
    convs = [plain | {"conversation_id": f"c{i}"} for i in range(300)]
    convs[-1]["title"] = "The last one"
    archive = _zip(
        tmp_path / "crc.zip", {"conversations.json": json.dumps(convs).encode()}, zipfile.ZIP_STORED
    )
    raw = bytearray(archive.read_bytes())
    at = raw.index(b"The last one")
    raw[at : at + 3] = b"THE"  # same length, still valid JSON, wrong CRC
    archive.write_bytes(bytes(raw))
    report = import_paths([archive], tmp_path / "out.jsonl")
    (file,) = report.files
    assert file.error is not None and "Bad CRC-32 for file 'conversations.json'" in file.error
    assert file.error.startswith("corrupt archive member after")
    assert file.written == file.conversations > 100  # what was read before the end is kept


def test_crc_error_in_a_small_export_is_a_clear_error(fixtures: Path, tmp_path: Path) -> None:
    data = (fixtures / "chatgpt" / "conversations.json").read_bytes()
    archive = _zip(tmp_path / "crc.zip", {"conversations.json": data}, zipfile.ZIP_STORED)
    raw = bytearray(archive.read_bytes())
    at = raw.index(b"Only hidden context")
    raw[at : at + 4] = b"ONLY"
    archive.write_bytes(bytes(raw))
    with pytest.raises(
        InvalidExport, match=r"corrupt archive member: Bad CRC-32 for file 'conversations.json'"
    ):
        import_paths([archive], tmp_path / "out.jsonl")


def test_a_corrupt_zip_is_a_clear_error(tmp_path: Path) -> None:
    bad = tmp_path / "export.zip"
    good = _zip(tmp_path / "good.zip", {"conversations.json": b"[]"}).read_bytes()
    bad.write_bytes(good[:30] + b"\0" * 10 + good[40:-10])  # the central directory is gone
    with pytest.raises(InvalidExport):
        import_paths([bad], tmp_path / "out.jsonl")


def test_a_zip_without_any_export(tmp_path: Path) -> None:
    archive = _zip(tmp_path / "photos.zip", {"a.png": b"png", "conversations.json": b"{not json"})
    with pytest.raises(
        InvalidExport, match=r"no chat export found in .*photos.zip.*conversations.json: not a chat export"
    ):
        import_paths([archive], tmp_path / "out.jsonl")
