"""Claude's export: ``conversations.json`` (a list of conversations with ``chat_messages``), ``users.json``.

Old exports have only a ``text`` per message; new ones have ``content`` blocks (``text``, ``thinking``,
``tool_use``, ``tool_result``) and a ``text`` that mixes thinking and answer, so turns are built from the
blocks when there are any. Messages may branch through ``parent_message_uuid``: the kept branch ends at
``current_leaf_message_uuid`` when the export has it, else at the newest leaf. Attachments'
``extracted_content`` is kept as context on its turn (flagged ``attachment``); files without text become a
placeholder.
"""

from __future__ import annotations

from collections.abc import Iterator
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
    join,
    merge_consecutive,
    tidy,
    timestamp,
)
from groupqwen.finetune.records import Attachment, Conversation, Identity, Role, Turn

ROOT = "00000000-0000-4000-8000-000000000000"
_IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".gif", ".webp", ".heic")


def read_claude(stream: Readable, tally: Tally, options: ImportOptions) -> Iterator[Conversation]:
    for index, raw in enumerate(ijson.items(stream, "item", use_float=True)):
        record = f"#{index}"
        try:
            data = as_dict(raw, "the conversation")
            record = str(data.get("uuid") or record)
            conversations = convert(data, record, tally, options)
        except Malformed as exc:
            tally.reject(record, str(exc))
            continue
        yield from emit(tally, record, conversations)


def read_users(stream: Readable) -> Identity:
    """``users.json``: a list of accounts with ``full_name``, ``email_address``, ``verified_phone_number``."""
    identity = Identity()
    for user in ijson.items(stream, "item"):
        if isinstance(user, dict):
            identity = identity.merge(
                Identity(
                    names=_strings(user.get("full_name")),
                    emails=_strings(user.get("email_address")),
                    phones=_strings(user.get("verified_phone_number")),
                )
            )
    return identity


def _strings(value: Any) -> tuple[str, ...]:
    return (value.strip(),) if isinstance(value, str) and value.strip() else ()


def convert(data: dict[str, Any], conv_id: str, tally: Tally, options: ImportOptions) -> list[Conversation]:
    messages = [as_dict(m, "a chat message") for m in as_list(data.get("chat_messages"), "'chat_messages'")]
    branches = _branches(messages, data.get("current_leaf_message_uuid"), options.all_branches, tally)
    out: list[Conversation] = []
    seen: set[tuple[Turn, ...]] = set()
    for number, branch in enumerate(branches):
        drops = tally if number == 0 else Tally()
        turns: list[Turn] = []
        for message in branch:
            turn = message_to_turn(message)
            if isinstance(turn, str):
                drops.drop(turn)
            else:
                turns.append(turn)
        merged = tuple(merge_consecutive(turns))
        if number and merged in seen:
            continue
        seen.add(merged)
        out.append(
            Conversation(
                id=f"claude:{conv_id}",
                source="claude",
                turns=merged,
                title=str(data.get("name") or ""),
                created_at=timestamp(data.get("created_at")),
                updated_at=timestamp(data.get("updated_at")),
                branch=len(out),
                model=data.get("model") if isinstance(data.get("model"), str) else None,
            )
        )
    return out


def _branches(
    messages: list[dict[str, Any]], current_leaf: Any, all_branches: bool, tally: Tally
) -> list[list[dict[str, Any]]]:
    """The kept branch first (then the others with ``all_branches``), each from the root down."""
    if not any("parent_message_uuid" in m for m in messages):
        return [messages]  # the old, linear format
    by_id = {str(m.get("uuid")): m for m in messages}
    parents = {str(m.get("uuid")): str(m.get("parent_message_uuid") or ROOT) for m in messages}
    has_child = set(parents.values())
    leaves = [m for m in messages if str(m.get("uuid")) not in has_child]
    if isinstance(current_leaf, str) and current_leaf in by_id:
        kept_leaf = by_id[current_leaf]
    else:
        kept_leaf = max(leaves, key=lambda m: (timestamp(m.get("created_at")) or 0.0, messages.index(m)))

    def path(leaf: dict[str, Any]) -> list[dict[str, Any]]:
        chain: list[dict[str, Any]] = []
        node: str = str(leaf.get("uuid"))
        while node in by_id:
            if len(chain) > len(messages):
                raise Malformed(f"'parent_message_uuid' links form a cycle through {node!r}")
            chain.append(by_id[node])
            node = parents[node]
        if node != ROOT:
            raise Malformed(
                f"message {chain[-1].get('uuid')!r} has a parent {node!r} not in the conversation"
            )
        return chain[::-1]

    kept = path(kept_leaf)
    if not all_branches:
        others = len(messages) - len(kept)
        if others:
            tally.drop("other branch", others)
        return [kept]
    return [kept] + [path(leaf) for leaf in leaves if leaf is not kept_leaf]


def message_to_turn(message: dict[str, Any]) -> Turn | str:
    sender = message.get("sender")
    if sender not in ("human", "assistant"):
        return f"unknown sender {sender!r}"
    role: Role = "user" if sender == "human" else "assistant"
    blocks = message.get("content")
    reasoning = ""
    if isinstance(blocks, list) and blocks:
        texts: list[str] = []
        for block in blocks:
            if not isinstance(block, dict):
                continue
            kind = block.get("type")
            if kind == "text":
                texts.append(str(block.get("text") or ""))
            elif kind == "thinking":
                reasoning = join(reasoning, str(block.get("thinking") or "").strip())
            # tool_use / tool_result / anything else: tool plumbing, not part of the answer
        text = "\n\n".join(t.strip() for t in texts if t.strip())
    else:
        raw_text = message.get("text")
        text = raw_text if isinstance(raw_text, str) else ""
    flags: list[str] = []
    attachments: list[Attachment] = []
    for item in message.get("attachments") or []:
        if isinstance(item, dict) and isinstance(item.get("extracted_content"), str):
            attachments.append(Attachment(str(item.get("file_name") or ""), item["extracted_content"]))
            flags.append("attachment")
    placeholders: list[str] = []
    for item in message.get("files") or []:
        name = str(item.get("file_name") or "") if isinstance(item, dict) else ""
        if name.lower().endswith(_IMAGE_SUFFIXES):
            placeholders.append("[image]")
            flags.append("image")
        elif not any(a.name == name for a in attachments):
            placeholders.append(f"[file: {name}]" if name else "[file]")
            flags.append("file")
    text = tidy("\n".join([*placeholders, text]) if placeholders else text)
    if not text and not attachments:
        return "empty" if not reasoning else "thinking without an answer"
    return Turn(
        role=role,
        content=text,
        reasoning=reasoning,
        created_at=timestamp(message.get("created_at")),
        attachments=tuple(attachments),
        flags=tuple(dict.fromkeys(flags)),
    )
