"""What every importer shares: options, the per-file tally and report, and malformed-record handling."""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from groupqwen.finetune.archive import ZipLimits
from groupqwen.finetune.importers.bounded import ParseLimits


@dataclass(frozen=True)
class ImportOptions:
    all_branches: bool = False  # also export the branches the user did not keep (regenerations, edits)
    limits: ZipLimits = field(default_factory=ZipLimits)
    parse: ParseLimits = field(default_factory=ParseLimits)  # JSON depth, size of one record


class Malformed(ValueError):
    """One record (conversation, message, entry) cannot be read; it is reported and skipped."""


@dataclass(frozen=True)
class Rejection:
    record: str
    reason: str


@dataclass(frozen=True)
class FileReport:
    name: str
    format: str
    conversations: int  # records read as conversations
    written: int  # conversations written (more than read with --all-branches)
    turns_kept: int
    turns_dropped: tuple[tuple[str, int], ...]  # (reason, count), most frequent first
    rejected: tuple[Rejection, ...]
    error: str | None = None  # the file stopped early (truncated JSON, CRC error); what was read is kept

    @property
    def dropped_total(self) -> int:
        return sum(n for _, n in self.turns_dropped)


class Tally:
    """Counts while one file streams; :meth:`report` freezes the counts."""

    def __init__(self) -> None:
        self.conversations = 0
        self.written = 0
        self.turns_kept = 0
        self.dropped: Counter[str] = Counter()
        self.rejected: list[Rejection] = []

    def drop(self, reason: str, count: int = 1) -> None:
        self.dropped[reason] += count

    def reject(self, record: str, reason: str) -> None:
        self.rejected.append(Rejection(record, reason))

    def report(self, name: str, fmt: str, error: str | None = None) -> FileReport:
        return FileReport(
            name=name,
            format=fmt,
            conversations=self.conversations,
            written=self.written,
            turns_kept=self.turns_kept,
            turns_dropped=tuple(self.dropped.most_common()),
            rejected=tuple(self.rejected),
            error=error,
        )


def timestamp(value: Any) -> float | None:
    """Unix seconds from a number or an ISO-8601 string; ``None`` when absent or unreadable."""
    if isinstance(value, bool) or value is None:
        return None
    if isinstance(value, int | float):
        return float(value)
    if isinstance(value, str) and value:
        try:
            return datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()
        except ValueError:
            return None
    return None


def as_dict(value: Any, what: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise Malformed(f"{what} is not an object")
    return value


def as_list(value: Any, what: str) -> list[Any]:
    if not isinstance(value, list):
        raise Malformed(f"{what} is not a list")
    return value


_BLANKS = re.compile(r"\n{3,}")


def tidy(text: str) -> str:
    """Trim and collapse runs of blank lines left by removed markup."""
    return _BLANKS.sub("\n\n", text).strip()


def join(a: str, b: str) -> str:
    return f"{a}\n\n{b}" if a and b else a or b


def merge_consecutive(turns: list[Any]) -> list[Any]:
    """Merge runs of turns with the same role (an answer split around a tool call is one answer)."""
    from dataclasses import replace

    out: list[Any] = []
    for turn in turns:
        if out and out[-1].role == turn.role:
            prev = out[-1]
            out[-1] = replace(
                prev,
                content=join(prev.content, turn.content),
                reasoning=join(prev.reasoning, turn.reasoning),
                attachments=prev.attachments + turn.attachments,
                flags=tuple(dict.fromkeys(prev.flags + turn.flags)),
                model=prev.model or turn.model,
            )
        else:
            out.append(turn)
    return out


def emit(tally: Tally, record: str, conversations: list[Any]) -> Iterator[Any]:
    """Count one converted record and yield its conversations; one without any text turn is rejected."""
    if not conversations or not conversations[0].turns:
        tally.reject(record, "no user or assistant text")
        return
    tally.conversations += 1
    for conv in conversations:
        if conv.turns:
            tally.written += 1
            tally.turns_kept += len(conv.turns)
            yield conv
