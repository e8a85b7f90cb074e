"""ChatGPT's export: ``conversations.json``, a list of conversations, each a tree of messages in ``mapping``.

Every node has a ``parent`` and ``children``; regenerating an answer or editing a question adds a sibling.
The branch the user kept is the path from ``current_node`` up to the root: only that is exported (with
``all_branches``, every other root-to-leaf path too, numbered from 1). Of its messages only the visible user
and assistant text is kept; tool calls and their output, hidden system and context messages and empty
messages are dropped and counted; ``thoughts`` become the next answer's reasoning; images become a
placeholder. The file is streamed one conversation at a time with ``ijson``.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import ijson  # type: ignore[import-untyped]

from groupqwen.finetune.archive import Readable
from groupqwen.finetune.importers.base import (
    ImportOptions,
    Malformed,
    Tally,
    as_dict,
    as_list,
    emit,
    merge_consecutive,
    tidy,
    timestamp,
)
from groupqwen.finetune.records import Conversation, Turn

IMAGE = "[image]"
# Citation markup the web UI renders: 【8†source】 and the private-use \ue200cite\ue202turn0search1\ue201.
_CITATIONS = re.compile(r"[ \t]*(?:【[^】]{0,80}】|\ue200[^\ue201]{0,200}\ue201)")
_HIDDEN_TYPES = {"user_editable_context", "model_editable_context"}
_TOOL_TYPES = {"code", "execution_output", "system_error", "computer_output"}


@dataclass(frozen=True)
class _Thought:
    text: str


def read_chatgpt(stream: Readable, tally: Tally, options: ImportOptions) -> Iterator[Conversation]:
    for index, raw in enumerate(ijson.items(stream, "item", use_float=True)):
        record = f"#{index}"
        try:
            data = as_dict(raw, "the conversation")
            record = str(data.get("conversation_id") or data.get("id") or record)
            conversations = convert(data, record, tally, options)
        except Malformed as exc:
            tally.reject(record, str(exc))
            continue
        yield from emit(tally, record, conversations)


def convert(data: dict[str, Any], conv_id: str, tally: Tally, options: ImportOptions) -> list[Conversation]:
    mapping = as_dict(data.get("mapping"), "'mapping'")
    current = data.get("current_node")
    if not isinstance(current, str) or current not in mapping:
        raise Malformed(f"'current_node' {current!r} is not a node of 'mapping'")
    kept = path_to_root(mapping, current)
    paths = [kept]
    if options.all_branches:
        paths += [path_to_root(mapping, leaf) for leaf in leaves(mapping) if leaf != current]
    else:
        on_path = set(kept)
        others = sum(
            1 for k, n in mapping.items() if k not in on_path and isinstance(n, dict) and n.get("message")
        )
        if others:
            tally.drop("other branch", others)
    out: list[Conversation] = []
    seen: set[tuple[Turn, ...]] = set()
    for branch, path in enumerate(paths):
        drops = tally if branch == 0 else Tally()  # dropped turns are counted on the kept branch
        turns = tuple(turns_of(mapping, path, drops))
        if branch and turns in seen:
            continue
        seen.add(turns)
        models = [t.model for t in turns if t.model]
        out.append(
            Conversation(
                id=f"chatgpt:{conv_id}",
                source="chatgpt",
                turns=turns,
                title=str(data.get("title") or ""),
                created_at=timestamp(data.get("create_time")),
                updated_at=timestamp(data.get("update_time")),
                branch=len(out),
                model=models[-1] if models else data.get("default_model_slug") or None,
            )
        )
    return out


def path_to_root(mapping: dict[str, Any], node_id: str) -> list[str]:
    """Node ids from the root down to ``node_id``; raises :class:`Malformed` on a cycle or a broken link."""
    path: list[str] = []
    seen: set[str] = set()
    current: Any = node_id
    while current is not None:
        if not isinstance(current, str) or current not in mapping:
            raise Malformed(
                f"node {path[-1] if path else node_id!r} has a parent {current!r} not in 'mapping'"
            )
        if current in seen:
            raise Malformed(f"'mapping' has a cycle through node {current!r}")
        seen.add(current)
        path.append(current)
        current = as_dict(mapping[current], f"node {current!r}").get("parent")
    path.reverse()
    return path


def leaves(mapping: dict[str, Any]) -> list[str]:
    return [k for k, node in mapping.items() if isinstance(node, dict) and not node.get("children")]


def turns_of(mapping: dict[str, Any], path: list[str], tally: Tally) -> list[Turn]:
    items: list[Turn | _Thought] = []
    for node_id in path:
        message = as_dict(mapping[node_id], f"node {node_id!r}").get("message")
        if message is None:
            continue  # the synthetic root
        try:
            item = message_to_turn(as_dict(message, f"node {node_id!r}'s message"))
        except Malformed as exc:
            tally.drop(f"malformed message: {exc}")
            continue
        if isinstance(item, str):
            tally.drop(item)
        else:
            items.append(item)
    turns: list[Turn] = []
    reasoning = ""
    for item in items:
        if isinstance(item, _Thought):
            reasoning = f"{reasoning}\n\n{item.text}".strip()
            continue
        if item.role == "assistant" and reasoning:
            item = Turn(item.role, item.content, reasoning, item.created_at, item.model, (), item.flags)
            reasoning = ""
        turns.append(item)
    if reasoning:
        tally.drop("thoughts without an answer")
    return merge_consecutive(turns)


def message_to_turn(message: dict[str, Any]) -> Turn | _Thought | str:
    """A visible turn, a thought for the next answer, or the reason the message is dropped."""
    author = as_dict(message.get("author"), "'author'")
    role = author.get("role")
    content = as_dict(message.get("content"), "'content'")
    ctype = content.get("content_type")
    raw_metadata = message.get("metadata")
    metadata: dict[str, Any] = raw_metadata if isinstance(raw_metadata, dict) else {}
    if role == "tool":
        return "tool output"
    if ctype in _HIDDEN_TYPES or metadata.get("is_visually_hidden_from_conversation"):
        return "hidden context"
    if role == "system":
        return "system message"
    if role != "user" and role != "assistant":
        return f"unknown role {role!r}"
    if role == "assistant" and message.get("recipient", "all") != "all":
        return "tool call"
    if ctype in _TOOL_TYPES or (isinstance(ctype, str) and ctype.startswith("tether_")):
        return "tool output"
    if ctype == "reasoning_recap":
        return "reasoning recap"
    if ctype == "thoughts":
        thoughts = as_list(content.get("thoughts", []), "'thoughts'")
        text = "\n\n".join(
            str(t.get("content") or t.get("summary") or "") for t in thoughts if isinstance(t, dict)
        ).strip()
        return _Thought(text) if text else "empty"
    flags: tuple[str, ...] = ()
    if ctype == "text":
        text = "\n".join(p for p in as_list(content.get("parts", []), "'parts'") if isinstance(p, str))
    elif ctype == "multimodal_text":
        text, flags = _multimodal(as_list(content.get("parts", []), "'parts'"))
    else:
        return f"unsupported content_type {ctype!r}"
    text = tidy(_CITATIONS.sub("", text))
    if not text:
        return "empty"
    model = metadata.get("model_slug") if role == "assistant" else None
    return Turn(
        role=role,
        content=text,
        created_at=timestamp(message.get("create_time")),
        model=model if isinstance(model, str) else None,
        flags=flags,
    )


def _multimodal(parts: list[Any]) -> tuple[str, tuple[str, ...]]:
    pieces: list[str] = []
    flags: list[str] = []
    for part in parts:
        if isinstance(part, str):
            pieces.append(part)
        elif isinstance(part, dict):
            kind = str(part.get("content_type", ""))
            if kind == "image_asset_pointer":
                pieces.append(IMAGE)
                flags.append("image")
            elif kind == "audio_transcription":
                pieces.append(str(part.get("text", "")))
                flags.append("audio")
            elif "audio" in kind or "video" in kind:
                continue  # the recording itself; its transcription is a separate part
            else:
                pieces.append(f"[{kind or 'attachment'}]")
                flags.append("attachment")
    return "\n".join(p for p in pieces if p), tuple(dict.fromkeys(flags))
