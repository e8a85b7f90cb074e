"""Review decisions: accept, reject or edit conversations, one JSONL line per decision, so review resumes.

This is the API both the terminal review (``groupqwen data review``) and, later, the web UI use: read the
pending conversations, record a decision, apply the decisions to a file. The last decision about a
conversation wins; an edit stores the edited conversation. Applying keeps what was not rejected: accepted,
edited and not yet reviewed conversations (review is optional).
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from groupqwen.errors import InvalidRecords
from groupqwen.finetune.records import Conversation, from_dict, to_dict

Verdict = Literal["accept", "reject", "edit"]
VERDICTS: tuple[Verdict, ...] = ("accept", "reject", "edit")


@dataclass(frozen=True)
class Decision:
    key: str  # "<id>#<branch>"
    verdict: Verdict
    edited: Conversation | None = None


def key_of(conv: Conversation) -> str:
    return f"{conv.id}#{conv.branch}"


class ReviewStore:
    """The decisions file: read once, appended to (and flushed) with each decision."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._decisions: dict[str, Decision] = {}
        if path.exists():
            # split on "\n" only: an edit may hold U+2028 and such, which splitlines() would cut at
            for number, line in enumerate(path.read_text(encoding="utf-8").split("\n"), 1):
                if line.strip():
                    decision = _parse(line, f"{path}:{number}")
                    self._decisions[decision.key] = decision

    def get(self, conv: Conversation) -> Decision | None:
        return self._decisions.get(key_of(conv))

    def __len__(self) -> int:
        return len(self._decisions)

    def pending(self, conversations: Iterable[Conversation]) -> Iterator[Conversation]:
        return (c for c in conversations if key_of(c) not in self._decisions)

    def decide(self, conv: Conversation, verdict: Verdict, edited: Conversation | None = None) -> Decision:
        if (verdict == "edit") != (edited is not None):
            raise ValueError("an edited conversation goes with the verdict 'edit', and only with it")
        decision = Decision(key_of(conv), verdict, edited)
        line: dict[str, object] = {"key": decision.key, "verdict": verdict}
        if edited is not None:
            line["conversation"] = to_dict(edited)
        _append(self.path, (json.dumps(line, ensure_ascii=False) + "\n").encode("utf-8"))
        self._decisions[decision.key] = decision
        return decision

    def apply(
        self, conversations: Iterable[Conversation], keep_pending: bool = True
    ) -> Iterator[Conversation]:
        """Every conversation the review did not reject: accepted ones, edited ones as edited, and the ones
        not reviewed yet (review is optional: skipping it must not empty the dataset); ``keep_pending=False``
        keeps only what was accepted or edited."""
        for conv in conversations:
            decision = self._decisions.get(key_of(conv))
            if decision is None:
                if keep_pending:
                    yield conv
            elif decision.verdict == "accept":
                yield conv
            elif decision.verdict == "edit" and decision.edited is not None:
                yield decision.edited


def _parse(line: str, where: str) -> Decision:
    try:
        data = json.loads(line)
        if not isinstance(data, dict) or not isinstance(data.get("key"), str):
            raise ValueError("a decision needs a string 'key'")
        verdict = data.get("verdict")
        if verdict not in VERDICTS:
            raise ValueError(f"'verdict' must be one of {', '.join(VERDICTS)}, not {verdict!r}")
        edited = from_dict(data["conversation"]) if verdict == "edit" else None
        return Decision(data["key"], verdict, edited)
    except (ValueError, KeyError) as exc:
        raise InvalidRecords(f"{where}: {exc}") from None


def _append(path: Path, data: bytes) -> None:
    """Append ``data`` whole or not at all: a write cut short (a full disk) is cut back off, so the file
    never ends in half a line."""
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        start = os.lseek(fd, 0, os.SEEK_END)
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view) :]
        except OSError:
            os.ftruncate(fd, start)
            raise
    finally:
        os.close(fd)
