"""The records that flow between the stages, and their JSONL form.

A :class:`Conversation` is one kept branch of one chat: its text turns in order, user and assistant (and a
leading system turn when the export has one the user wrote). Reasoning ("thinking") is kept apart from the
answer, never mixed into ``content``. Every stage reads and writes these as one JSON object per line.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Literal

from groupqwen.errors import InvalidRecords

Role = Literal["system", "user", "assistant"]
Source = Literal["chatgpt", "claude", "perplexity"]
ROLES: tuple[Role, ...] = ("system", "user", "assistant")
SOURCES: tuple[Source, ...] = ("chatgpt", "claude", "perplexity")


@dataclass(frozen=True)
class Attachment:
    """A file's text that came with a turn (Claude's ``extracted_content``): context, not the user's words."""

    name: str
    content: str


@dataclass(frozen=True)
class Turn:
    role: Role
    content: str
    reasoning: str = ""
    created_at: float | None = None
    model: str | None = None
    attachments: tuple[Attachment, ...] = ()
    flags: tuple[str, ...] = ()  # "image", "attachment", "citations", "thoughts" …


@dataclass(frozen=True)
class Conversation:
    id: str
    source: Source
    turns: tuple[Turn, ...]
    title: str = ""
    created_at: float | None = None
    updated_at: float | None = None
    branch: int = 0  # 0: the branch the user kept; 1, 2 …: other branches (--all-branches)
    model: str | None = None

    def with_turns(self, turns: Iterable[Turn]) -> Conversation:
        return replace(self, turns=tuple(turns))

    def text(self) -> str:
        """All visible text (answers and questions, not reasoning), for duplicate and language checks."""
        return "\n".join(t.content for t in self.turns)


@dataclass(frozen=True)
class Identity:
    """Who the export belongs to: replaced by placeholders during curation."""

    names: tuple[str, ...] = ()
    emails: tuple[str, ...] = ()
    phones: tuple[str, ...] = ()

    def merge(self, other: Identity) -> Identity:
        def union(a: tuple[str, ...], b: tuple[str, ...]) -> tuple[str, ...]:
            return tuple(dict.fromkeys(x for x in (*a, *b) if x))

        return Identity(
            union(self.names, other.names), union(self.emails, other.emails), union(self.phones, other.phones)
        )

    def to_dict(self) -> dict[str, list[str]]:
        return {"names": list(self.names), "emails": list(self.emails), "phones": list(self.phones)}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Identity:
        return cls(*(tuple(str(v) for v in data.get(k) or ()) for k in ("names", "emails", "phones")))


# ---------------------------------------------------------------------------------------------------------
# JSON form


def turn_to_dict(turn: Turn) -> dict[str, Any]:
    out: dict[str, Any] = {"role": turn.role, "content": turn.content}
    if turn.reasoning:
        out["reasoning"] = turn.reasoning
    if turn.created_at is not None:
        out["created_at"] = turn.created_at
    if turn.model:
        out["model"] = turn.model
    if turn.attachments:
        out["attachments"] = [{"name": a.name, "content": a.content} for a in turn.attachments]
    if turn.flags:
        out["flags"] = list(turn.flags)
    return out


def to_dict(conv: Conversation) -> dict[str, Any]:
    return {
        "id": conv.id,
        "source": conv.source,
        "title": conv.title,
        "created_at": conv.created_at,
        "updated_at": conv.updated_at,
        "branch": conv.branch,
        "model": conv.model,
        "turns": [turn_to_dict(t) for t in conv.turns],
    }


def _str(data: Mapping[str, Any], key: str, default: str | None = None) -> str:
    value = data.get(key, default)
    if not isinstance(value, str):
        raise ValueError(f"{key!r} must be a string")
    return value


def _opt_float(data: Mapping[str, Any], key: str) -> float | None:
    value = data.get(key)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ValueError(f"{key!r} must be a number or null")
    return float(value)


def _opt_str(data: Mapping[str, Any], key: str) -> str | None:
    value = data.get(key)
    if value is not None and not isinstance(value, str):
        raise ValueError(f"{key!r} must be a string or null")
    return value


def turn_from_dict(data: Any) -> Turn:
    if not isinstance(data, dict):
        raise ValueError("a turn must be an object")
    role = _str(data, "role")
    if role not in ROLES:
        raise ValueError(f"'role' must be one of {', '.join(ROLES)}, not {role!r}")
    attachments = data.get("attachments") or []
    if not isinstance(attachments, list) or not all(isinstance(a, dict) for a in attachments):
        raise ValueError("'attachments' must be a list of objects")
    flags = data.get("flags") or []
    if not isinstance(flags, list) or not all(isinstance(f, str) for f in flags):
        raise ValueError("'flags' must be a list of strings")
    return Turn(
        role=role,
        content=_str(data, "content"),
        reasoning=_str(data, "reasoning", ""),
        created_at=_opt_float(data, "created_at"),
        model=_opt_str(data, "model"),
        attachments=tuple(Attachment(_str(a, "name", ""), _str(a, "content")) for a in attachments),
        flags=tuple(flags),
    )


def from_dict(data: Any) -> Conversation:
    """Parse one conversation; raises ``ValueError`` naming the bad field."""
    if not isinstance(data, dict):
        raise ValueError("a conversation must be a JSON object")
    source = _str(data, "source")
    if source not in SOURCES:
        raise ValueError(f"'source' must be one of {', '.join(SOURCES)}, not {source!r}")
    turns = data.get("turns")
    if not isinstance(turns, list):
        raise ValueError("'turns' must be a list")
    parsed: list[Turn] = []
    for i, raw in enumerate(turns):
        try:
            parsed.append(turn_from_dict(raw))
        except ValueError as exc:
            raise ValueError(f"turns[{i}]: {exc}") from None
    branch = data.get("branch", 0)
    if not isinstance(branch, int) or isinstance(branch, bool):
        raise ValueError("'branch' must be an integer")
    return Conversation(
        id=_str(data, "id"),
        source=source,
        turns=tuple(parsed),
        title=_str(data, "title", ""),
        created_at=_opt_float(data, "created_at"),
        updated_at=_opt_float(data, "updated_at"),
        branch=branch,
        model=_opt_str(data, "model"),
    )


def read_jsonl(path: Path) -> Iterator[Conversation]:
    """Stream conversations from a JSONL file; a bad line raises :class:`InvalidRecords` with its number."""
    with path.open("rb") as f:
        for number, raw in enumerate(f, 1):
            try:
                line = raw.decode("utf-8")
            except UnicodeDecodeError as exc:
                raise InvalidRecords(f"{path}:{number}: not UTF-8 text ({exc.reason})") from None
            if not line.strip():
                continue
            try:
                yield from_dict(json.loads(line))
            except (ValueError, TypeError) as exc:  # json.JSONDecodeError is a ValueError
                raise InvalidRecords(f"{path}:{number}: {exc}") from None


def dumps(conv: Conversation) -> str:
    return json.dumps(to_dict(conv), ensure_ascii=False, separators=(",", ":"))


def write_jsonl(path: Path, conversations: Iterable[Conversation]) -> int:
    """Write conversations one per line; returns how many."""
    count = 0
    with path.open("w", encoding="utf-8") as f:
        for conv in conversations:
            f.write(dumps(conv) + "\n")
            count += 1
    return count


@dataclass(frozen=True)
class Meta:
    """What a stage learnt about the export beyond conversations, kept in ``<file>.meta.json`` beside it."""

    identity: Identity = field(default_factory=Identity)

    @staticmethod
    def path_for(jsonl: Path) -> Path:
        return jsonl.with_name(jsonl.name + ".meta.json")

    def write(self, jsonl: Path) -> None:
        Meta.path_for(jsonl).write_text(json.dumps({"identity": self.identity.to_dict()}, indent=2) + "\n")

    @classmethod
    def read(cls, jsonl: Path) -> Meta:
        path = cls.path_for(jsonl)
        if not path.exists():
            return cls()
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
            return cls(identity=Identity.from_dict(data.get("identity") or {}))
        except (ValueError, AttributeError) as exc:
            raise InvalidRecords(f"{path}: {exc}") from None
