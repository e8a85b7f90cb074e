"""Perplexity threads: the per-thread Markdown export, and the thread JSON that export tools save.

Markdown: each exchange starts with the query as a heading (``# …``) followed by the answer; exchanges are
separated by ``---`` (or the ``⁂`` divider of newer exports). Numbered citations (``[1]``, ``[^1_2]``) are
removed from the answer and the sources list after it is dropped; the turn is flagged ``citations``.

JSON: ``{"entries": [{"query_str": …, "blocks": [{"markdown_block": {"answer": …}}], …}]}`` (or a list of
such threads); older entries carry the answer in ``text`` as a JSON list of steps whose ``FINAL`` step has it.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from typing import Any

import ijson  # type: ignore[import-untyped]

from groupqwen.finetune.archive import Readable
from groupqwen.finetune.importers.base import Malformed, Tally, as_dict, as_list, emit, tidy, timestamp
from groupqwen.finetune.records import Conversation, Turn

_SEPARATOR = re.compile(r"^\s*(?:-{3,}|\*{3,}|<div align=\"center\">\s*⁂\s*</div>)\s*$", re.MULTILINE)
_HEADING = re.compile(r"^#{1,6}\s+(.+?)\s*#*\s*$")
_LOGO = re.compile(r"^\s*<img [^>]*perplexity[^>]*>\s*$", re.MULTILINE | re.IGNORECASE)
_MARKERS = re.compile(r"\[\^?\d+(?:_\d+)?\]")
_SOURCES_HEADER = re.compile(r"^\s*(?:\*\*)?(?:citations|sources)(?:\*\*)?:?\s*$", re.IGNORECASE)
_SOURCE_LINE = re.compile(r"^\s*(?:\[\^?\d+(?:_\d+)?\]:?|\d+\.)\s+\S+")


def strip_citations(text: str) -> tuple[str, bool]:
    """Remove citation markers and the sources list; says whether there were any."""
    lines = text.splitlines()
    kept: list[str] = []
    found = False
    in_sources = False
    for line in lines:
        if _SOURCES_HEADER.match(line):
            in_sources = found = True
            continue
        if _SOURCE_LINE.match(line) and (in_sources or line.lstrip().startswith("[")):
            found = True
            continue
        if in_sources and not line.strip():
            continue
        in_sources = False
        kept.append(line)
    joined = "\n".join(kept)
    cleaned = _MARKERS.sub("", joined)
    return tidy(re.sub(r"[ \t]+([.,;:!?])", r"\1", cleaned)), found or cleaned != joined


def read_markdown(text: str, name: str, tally: Tally) -> Iterator[Conversation]:
    """One thread per file; an exchange without a query heading is dropped and counted."""
    body = _LOGO.sub("", text)
    turns: list[Turn] = []
    title = ""
    for section in _SEPARATOR.split(body):
        lines = section.strip().splitlines()
        if not lines:
            continue
        heading = _HEADING.match(lines[0])
        if heading is None:
            tally.drop("exchange without a query heading")
            continue
        query = heading.group(1).strip()
        answer, cited = strip_citations("\n".join(lines[1:]))
        if not answer:
            tally.drop("query without an answer")
            continue
        title = title or query
        turns.append(Turn("user", query))
        turns.append(Turn("assistant", answer, flags=("citations",) if cited else ()))
    stem = name.rsplit("/", 1)[-1].removesuffix(".md")
    yield from emit(tally, stem, [Conversation(f"perplexity:{stem}", "perplexity", tuple(turns), title)])


def read_thread_json(stream: Readable, name: str, tally: Tally) -> Iterator[Conversation]:
    """A thread object, or a list of them."""
    data = next(ijson.items(stream, ""))
    threads = data if isinstance(data, list) else [data]
    for index, raw in enumerate(threads):
        record = f"{name}#{index}"
        try:
            thread = as_dict(raw, "the thread")
            conv = _thread(thread, record, tally)
        except Malformed as exc:
            tally.reject(record, str(exc))
            continue
        yield from emit(tally, record, [conv])


def _thread(thread: dict[str, Any], record: str, tally: Tally) -> Conversation:
    entries = as_list(thread.get("entries"), "'entries'")
    turns: list[Turn] = []
    first: dict[str, Any] = {}
    for raw in entries:
        if not isinstance(raw, dict) or not isinstance(raw.get("query_str"), str):
            tally.drop("entry without 'query_str'")
            continue
        entry: dict[str, Any] = raw
        first = first or entry
        answer, cited = strip_citations(_answer(entry))
        if not answer:
            tally.drop("query without an answer")
            continue
        model = entry.get("display_model")
        when = timestamp(entry.get("updated_datetime") or entry.get("created_datetime"))
        turns.append(Turn("user", entry["query_str"].strip(), created_at=when))
        turns.append(
            Turn(
                "assistant",
                answer,
                created_at=when,
                model=model if isinstance(model, str) else None,
                flags=("citations",) if cited or entry.get("web_results") else (),
            )
        )
    slug = thread.get("thread_url_slug") or first.get("thread_url_slug") or thread.get("uuid") or record
    models = [t.model for t in turns if t.model]
    return Conversation(
        id=f"perplexity:{slug}",
        source="perplexity",
        turns=tuple(turns),
        title=str(thread.get("title") or first.get("thread_title") or first.get("query_str") or ""),
        created_at=timestamp(first.get("created_datetime")),
        updated_at=turns[-1].created_at if turns else None,
        model=models[-1] if models else None,
    )


def _answer(entry: dict[str, Any]) -> str:
    for block in entry.get("blocks") or []:
        if isinstance(block, dict) and isinstance(block.get("markdown_block"), dict):
            md = block["markdown_block"]
            if isinstance(md.get("answer"), str) and md["answer"].strip():
                return str(md["answer"])
            chunks = md.get("chunks")
            if isinstance(chunks, list):
                return "".join(c for c in chunks if isinstance(c, str))
    if isinstance(entry.get("answer"), str):
        return str(entry["answer"])
    text = entry.get("text")
    if isinstance(text, str):
        try:
            steps = json.loads(text)
        except ValueError:
            return text
        for step in steps if isinstance(steps, list) else []:
            if isinstance(step, dict) and step.get("step_type") == "FINAL":
                answer = (step.get("content") or {}).get("answer", "")
                try:
                    inner = json.loads(answer)
                    return str(inner.get("answer", "")) if isinstance(inner, dict) else str(answer)
                except (ValueError, TypeError):
                    return str(answer)
    return ""
