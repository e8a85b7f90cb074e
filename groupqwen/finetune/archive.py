"""Reading ZIP exports safely, member by member, without extracting anything.

Members are streamed straight from the archive into the parsers, so nothing is ever written to disk (no
path can escape the work folder). The archive is refused as a whole (:class:`UnsafeArchive`) when a member's
name would escape the folder it would be extracted to (zip-slip), or when it declares more files, more
bytes or a higher compression ratio than the limits allow (zip bombs); reading is also counted, so a member
that inflates past its declared size stops at the limit. Symbolic links and folders are skipped and listed.

Every way a member's bytes can fail to come back (a CRC mismatch when its last byte is read, a corrupt
deflate stream, a member cut short, a bad local header, an encrypted member or an unsupported compression
method) surfaces as one exception, ``zipfile.BadZipFile``, which the importer reports.
"""

from __future__ import annotations

import lzma
import stat
import zipfile
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from types import TracebackType
from typing import IO, Protocol

from groupqwen.errors import InvalidExport, UnsafeArchive


@dataclass(frozen=True)
class ZipLimits:
    max_files: int = 100_000
    max_total_bytes: int = 8 * 2**30  # uncompressed, all members together
    max_member_bytes: int = 4 * 2**30  # uncompressed, one member
    max_ratio: float = 200.0  # uncompressed / compressed, checked for members over 1 MiB


def unsafe_name(name: str) -> bool:
    """Would extracting ``name`` write outside the target folder? (absolute, drive letter, ``..``)"""
    normal = name.replace("\\", "/")
    if normal.startswith("/") or (len(normal) > 1 and normal[1] == ":"):
        return True
    return any(part == ".." for part in PurePosixPath(normal).parts)


def is_symlink(info: zipfile.ZipInfo) -> bool:
    return stat.S_ISLNK(info.external_attr >> 16)


class Readable(Protocol):
    """What the parsers read from: a file, an archive member."""

    def read(self, size: int = -1, /) -> bytes: ...


class CountingReader:
    """A read-only stream that counts bytes, reports progress and stops a member inflating past ``limit``."""

    def __init__(
        self, raw: IO[bytes] | _Member, name: str, limit: int, on_bytes: Callable[[int], None] | None = None
    ) -> None:
        self._raw = raw
        self._name = name
        self._limit = limit
        self._on_bytes = on_bytes
        self.count = 0

    def read(self, size: int = -1) -> bytes:
        data = self._raw.read(size)
        self.count += len(data)
        if self.count > self._limit:
            raise UnsafeArchive(f"{self._name}: inflates past {self._limit} bytes (zip bomb?)")
        if self._on_bytes is not None and data:
            self._on_bytes(len(data))
        return data

    def close(self) -> None:
        self._raw.close()


# What zipfile lets through from a member's compressed bytes: zlib.error (deflate), EOFError (the archive
# ends inside the member), OSError (bzip2, the file itself), LZMAError.
_READ_ERRORS = (zlib.error, EOFError, OSError, lzma.LZMAError)


class _Member:
    """A member's stream whose read failures are all ``zipfile.BadZipFile`` (as a CRC mismatch already is)."""

    def __init__(self, raw: IO[bytes], name: str) -> None:
        self._raw = raw
        self._name = name

    def read(self, size: int = -1, /) -> bytes:
        try:
            return self._raw.read(size)
        except zipfile.BadZipFile:
            raise
        except EOFError as exc:
            raise zipfile.BadZipFile(f"{self._name!r} is cut short: {exc}") from None
        except _READ_ERRORS as exc:
            raise zipfile.BadZipFile(f"corrupt compressed data in {self._name!r}: {exc}") from None

    def close(self) -> None:
        self._raw.close()


class SafeZip:
    """An opened, checked archive: ``members`` are the regular files; ``skipped`` says what was left out."""

    def __init__(self, path: Path, limits: ZipLimits) -> None:
        self.path = path
        self.limits = limits
        try:
            self._zip = zipfile.ZipFile(path)
        except (zipfile.BadZipFile, OSError) as exc:
            raise InvalidExport(f"{path}: not a readable ZIP archive: {exc}") from None
        try:
            self.members, self.skipped = self._check()
        except BaseException:
            self._zip.close()
            raise

    def _check(self) -> tuple[tuple[zipfile.ZipInfo, ...], tuple[tuple[str, str], ...]]:
        infos = self._zip.infolist()
        if len(infos) > self.limits.max_files:
            raise UnsafeArchive(
                f"{self.path}: {len(infos)} members, more than the limit {self.limits.max_files}"
            )
        members: list[zipfile.ZipInfo] = []
        skipped: list[tuple[str, str]] = []
        total = 0
        for info in infos:
            if unsafe_name(info.filename):
                raise UnsafeArchive(
                    f"{self.path}: member {info.filename!r} points outside the work folder (zip-slip)"
                )
            if is_symlink(info):
                skipped.append((info.filename, "symbolic link ignored"))
                continue
            if info.is_dir():
                continue
            total += info.file_size
            if info.file_size > self.limits.max_member_bytes:
                raise UnsafeArchive(
                    f"{self.path}: member {info.filename!r} expands to {info.file_size} bytes, more than the "
                    f"limit {self.limits.max_member_bytes}"
                )
            if info.file_size > 2**20 and info.file_size > self.limits.max_ratio * max(info.compress_size, 1):
                raise UnsafeArchive(
                    f"{self.path}: member {info.filename!r} expands {info.file_size} bytes from "
                    f"{info.compress_size} (ratio over {self.limits.max_ratio:g}: zip bomb?)"
                )
            members.append(info)
        if total > self.limits.max_total_bytes:
            raise UnsafeArchive(
                f"{self.path}: {total} bytes uncompressed, more than the limit {self.limits.max_total_bytes}"
            )
        return tuple(members), tuple(skipped)

    def open(self, info: zipfile.ZipInfo, on_bytes: Callable[[int], None] | None = None) -> CountingReader:
        limit = min(info.file_size, self.limits.max_member_bytes, self.limits.max_total_bytes)
        try:
            raw = self._zip.open(info)
        except zipfile.BadZipFile:
            raise
        except (*_READ_ERRORS, NotImplementedError, RuntimeError) as exc:  # RuntimeError: encrypted
            raise zipfile.BadZipFile(f"cannot read {info.filename!r}: {exc}") from None
        return CountingReader(_Member(raw, info.filename), f"{self.path}:{info.filename}", limit, on_bytes)

    def close(self) -> None:
        self._zip.close()

    def __enter__(self) -> SafeZip:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()
