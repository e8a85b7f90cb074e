"""Perplexity threads: the per-thread Markdown export, and the thread JSON that export tools save.

Markdown: each exchange starts with the query as a heading (``# …``) followed by the answer; exchanges are
separated by ``---`` (or the ``⁂`` divider of newer exports). Numbered citations (``[1]``, ``[^1_2]``) are
removed from the answer and the sources list after it is dropped; the turn is flagged ``citations``.

JSON: ``{"entries": [{"query_str": …, "blocks": [{"markdown_block": {"answer": …}}], …}]}`` (or a list of
such threads); older entries carry the answer in ``text`` as a JSON list of steps whose ``FINAL`` step has it.
"""

from __future__ import annotations

import codecs
import itertools
import json
import re
from collections.abc import Iterator
from typing import Any

import ijson  # type: ignore[import-untyped]

from groupqwen.errors import InvalidExport
from groupqwen.finetune.archive import Readable
from groupqwen.finetune.importers.base import Malformed, Tally, as_dict, as_list, emit, tidy, timestamp
from groupqwen.finetune.records import Conversation, Turn

_SEPARATOR_LINE = re.compile(r"\s*(?:-{3,}|\*{3,}|<div align=\"center\">\s*⁂\s*</div>)\s*$")
_HEADING = re.compile(r"^#{1,6}\s+(.+?)\s*#*\s*$")
_LOGO_LINE = re.compile(r"\s*<img [^>]*perplexity[^>]*>\s*$", re.IGNORECASE)
_CHUNK = 64 * 1024
_MARKERS = re.compile(r"\[\^?\d+(?:_\d+)?\]")
_SOURCES_HEADER = re.compile(
    r"^\s*(?:#{1,6}\s+)?(?:\*\*)?(?:citations|sources)(?:\*\*)?:?\s*$", re.IGNORECASE
)  # "Citations:", "**Sources**", "## Sources"
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


def read_markdown(stream: Readable, name: str, tally: Tally, max_bytes: int) -> Iterator[Conversation]:
    """One thread per file, read line by line: one exchange is held at a time. An exchange without a query
    heading is dropped and counted. A file over ``max_bytes`` is refused (:class:`InvalidExport`)."""
    turns: list[Turn] = []
    section: list[str] = []
    for line in _lines(stream, name, max_bytes):
        if _SEPARATOR_LINE.match(line):
            turns += _exchange(section, tally)
            section = []
        elif not _LOGO_LINE.match(line):
            section.append(line)
    turns += _exchange(section, tally)
    title = turns[0].content if turns else ""
    stem = name.rsplit("/", 1)[-1].removesuffix(".md")
    yield from emit(tally, stem, [Conversation(f"perplexity:{stem}", "perplexity", tuple(turns), title)])


def _lines(stream: Readable, name: str, max_bytes: int) -> Iterator[str]:
    """The lines of a UTF-8 stream, without their ends, reading ``_CHUNK`` bytes at a time."""
    decoder = codecs.getincrementaldecoder("utf-8-sig")()  # a leading byte order mark dropped
    pending: list[str] = []  # the start of a line that goes on in the next chunk
    read = 0
    while True:
        data = stream.read(_CHUNK)
        read += len(data)
        if read > max_bytes:
            raise InvalidExport(f"{name}: a Markdown thread larger than {max_bytes} bytes, the limit")
        text = decoder.decode(data, final=not data)
        *complete, last = text.split("\n")
        for line in complete:
            pending.append(line)
            yield "".join(pending).removesuffix("\r")
            pending = []
        if last:
            pending.append(last)
        if not data:
            break
    if pending:
        yield "".join(pending).removesuffix("\r")


def _exchange(lines: list[str], tally: Tally) -> list[Turn]:
    """A query heading and its answer, from one section between separators; ``[]`` if it has none."""
    lines = "\n".join(lines).strip().splitlines()
    if not lines:
        return []
    heading = _HEADING.match(lines[0])
    if heading is None:
        tally.drop("exchange without a query heading")
        return []
    query = heading.group(1).strip()
    answer, cited = strip_citations("\n".join(lines[1:]))
    if not answer:
        tally.drop("query without an answer")
        return []
    return [Turn("user", query), Turn("assistant", answer, flags=("citations",) if cited else ())]


def read_thread_json(stream: Readable, name: str, tally: Tally) -> Iterator[Conversation]:
    """A thread object, or a list of them read one at a time."""
    events = ijson.parse(stream)
    first = next(events, None)
    if first is None:
        return
    prefix = "item" if first[1] == "start_array" else ""
    threads = ijson.items(itertools.chain([first], events), prefix)
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
        except (ValueError, RecursionError):  # not JSON (or JSON too deep to be steps): the answer itself
            return text
        for step in steps if isinstance(steps, list) else []:
            if isinstance(step, dict) and step.get("step_type") == "FINAL":
                answer = (step.get("content") or {}).get("answer", "")
                try:
                    inner = json.loads(answer)
                    return str(inner.get("answer", "")) if isinstance(inner, dict) else str(answer)
                except (ValueError, TypeError, RecursionError):
                    return str(answer)
    return ""
