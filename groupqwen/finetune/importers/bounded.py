"""Bounds on what the parsers may hold in memory: how deep JSON may nest, and how big one record may be.

A JSON parser that is fed ``[[[[…`` keeps state for every open level: ijson's prefixes (``item.item.…``)
make that quadratic in the depth (40,000 levels of an 80 KB file took 4 GB), and the objects it builds are
as deep as the input. A record (one conversation, one thread) is built whole before it is converted, so a
single huge one takes as much memory as it is big. :class:`JsonGuard` sits between the byte stream and the
parser and refuses both *before* the parser sees the bytes: it tracks the nesting depth outside strings
(across chunk boundaries) and estimates the size of the record being read.

A record is an element of the top-level list (a conversation of ``conversations.json``, a thread of a list
of Perplexity threads), or the whole document when it is an object (one Perplexity thread, ``user.json``).
Its size is counted as its JSON text plus :data:`VALUE_OVERHEAD` bytes per value, an estimate of what the
parsed record takes in memory (a value is a Python object of 50 bytes or more however short its text).
"""

from __future__ import annotations

from dataclasses import dataclass
from itertools import accumulate

from groupqwen.errors import InvalidExport
from groupqwen.finetune.archive import Readable

MAX_DEPTH = 128  # the exports in tests/finetune/fixtures nest 8 levels deep
MAX_RECORD_BYTES = 64 * 2**20  # one conversation or thread, estimated as parsed (see the module docstring)
VALUE_OVERHEAD = 64  # bytes counted per JSON value on top of its text

_NOT_MARK = bytes(b for b in range(256) if b not in b'"[]{},')  # deleted: all but quotes and structure
_STEP = {ord("["): 1, ord("{"): 1, ord("]"): -1, ord("}"): -1, ord(","): 0}
_SPACE = b" \t\r\n\xef\xbb\xbf"  # JSON whitespace, and a UTF-8 byte order mark
_BOM = b"\xef\xbb\xbf"


@dataclass(frozen=True)
class ParseLimits:
    max_depth: int = MAX_DEPTH  # nesting levels of JSON
    max_record_bytes: int = MAX_RECORD_BYTES  # one record (conversation, thread, Markdown file)


class JsonGuard:
    """A byte stream that raises :class:`InvalidExport` as soon as the JSON read through it nests deeper than
    ``max_depth`` or a record grows past ``max_record_bytes``. Cheap (a few byte replacements and counts per
    chunk, no Python work per byte or per value: a fraction of the parser's time). Invalid JSON is left for
    the parser to report."""

    def __init__(self, raw: Readable, name: str, limits: ParseLimits) -> None:
        self._raw = raw
        self._name = name
        self._limits = limits
        self.depth = 0
        self._record_depth: int | None = None  # 1 when the document is a list, 0 when it is an object
        self._in_string = False
        self._escaped = False  # in a string, the last chunk ended with a backslash escaping the next byte
        self._record = 0  # estimated size of the record being read

    def read(self, size: int = -1, /) -> bytes:
        data = self._raw.read(size)
        if self._record_depth is None and data.startswith(_BOM):
            data = data[len(_BOM) :]  # an editor that marks UTF-8 saved it: the parser refuses the mark
        if data:
            self._scan(data)
        return data

    def close(self) -> None:
        close = getattr(self._raw, "close", None)
        if close is not None:
            close()

    def _scan(self, data: bytes) -> None:
        size = len(data)
        if self._record_depth is None:
            first = data.lstrip(_SPACE)[:1]
            if first:
                self._record_depth = 1 if first == b"[" else 0
        if self._escaped:  # the first byte is escaped by the backslash that ended the last chunk
            data = data[1:]
            self._escaped = False
        if (
            len(data) - len(data.rstrip(b"\\"))
        ) % 2:  # an odd run of backslashes escapes the next chunk's byte
            data = data[:-1]
            self._escaped = True
        # Without escaped backslashes and quotes, quotes alternate (open, close); keep them and the structure.
        marks = data.replace(b"\\\\", b"").replace(b'\\"', b"").translate(None, _NOT_MARK)
        pieces = marks.split(b'"')
        structure = b"".join(pieces[1::2] if self._in_string else pieces[0::2])
        if len(pieces) % 2 == 0:  # an odd number of quotes: a string opens or closes for good
            self._in_string = not self._in_string
        opens = structure.count(b"[") + structure.count(b"{")
        closes = structure.count(b"]") + structure.count(b"}")
        before = self.depth
        self.depth += opens - closes
        if before + opens > self._limits.max_depth:  # the cheap bound fails: find the deepest point
            deepest = max(accumulate(map(_STEP.__getitem__, structure), initial=before))
            if deepest > self._limits.max_depth:
                raise InvalidExport(
                    f"{self._name}: JSON nested deeper than {self._limits.max_depth} levels, the limit"
                )
        record_depth = self._record_depth or 0
        touched = before - closes <= record_depth and (
            min(accumulate(map(_STEP.__getitem__, structure), initial=before)) <= record_depth
        )
        values = opens + structure.count(b",")
        self._grow(size + VALUE_OVERHEAD * values, touched_record_level=touched)

    def _grow(self, size: int, *, touched_record_level: bool) -> None:
        # When the chunk went back to the level between records, the record being read started in it: count
        # the whole chunk (an overestimate by at most one chunk) instead of adding to the previous record.
        self._record = size if touched_record_level else self._record + size
        if self._record > self._limits.max_record_bytes:
            raise InvalidExport(
                f"{self._name}: a record (conversation or thread) larger than "
                f"{self._limits.max_record_bytes} bytes, the limit"
            )
