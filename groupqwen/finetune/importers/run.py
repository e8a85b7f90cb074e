"""Import one or more exports (files, folders or ZIP archives) into one conversations JSONL file.

The format of each file is detected from its content (and ``.md`` for Perplexity's Markdown). Each file
gets a :class:`FileReport`; a malformed record is reported and skipped; a file that stops early keeps what
was read and says why. A file given by name that is not an export at all is an :class:`InvalidExport`, and
so is an import that recognises nothing or writes no conversation (an empty export, every record rejected).
Output is written to a temporary file and renamed when complete.
"""

from __future__ import annotations

import contextlib
import os
import re
import zipfile
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

import ijson  # type: ignore[import-untyped]

from groupqwen.errors import InvalidExport
from groupqwen.finetune.archive import CountingReader, Readable, SafeZip
from groupqwen.finetune.importers.base import FileReport, ImportOptions, Tally
from groupqwen.finetune.importers.bounded import JsonGuard, ParseLimits
from groupqwen.finetune.importers.chatgpt import read_chatgpt
from groupqwen.finetune.importers.claude import read_claude, read_users
from groupqwen.finetune.importers.perplexity import read_markdown, read_thread_json
from groupqwen.finetune.records import Conversation, Identity, Meta, dumps

Progress = Callable[[int, int], None]  # (bytes read so far, bytes to read)
_SNIFF_EVENTS = 5000
_CONVERSATION_FORMATS = ("chatgpt", "claude", "perplexity-json", "perplexity-md")


@dataclass(frozen=True)
class ImportReport:
    files: tuple[FileReport, ...]
    skipped: tuple[tuple[str, str], ...]  # (file, why it was not read)
    identity: Identity = field(default_factory=Identity)

    @property
    def written(self) -> int:
        return sum(f.written for f in self.files)

    @property
    def rejected(self) -> int:
        return sum(len(f.rejected) for f in self.files)

    @property
    def errors(self) -> tuple[str, ...]:
        return tuple(f"{f.name}: {f.error}" for f in self.files if f.error)


@dataclass(frozen=True)
class _Source:
    name: str
    size: int
    opener: Callable[[Callable[[int], None] | None], Readable]
    explicit: bool  # named on the command line, not found inside a folder or an archive


def sniff(stream: Readable | CountingReader) -> str | None:
    """The export format of a JSON stream, from its first keys; ``None`` if JSON but not an export.

    Reads at most a few thousand parser events, and keeps nothing per level but a counter: no prefixes (a
    prefix per open level is quadratic in the depth)."""
    top: str | None = None
    depth = 0
    for count, (event, value) in enumerate(ijson.basic_parse(stream)):
        if count > _SNIFF_EVENTS:
            return None
        if top is None:
            top = event
        if event == "map_key":
            if depth == 2 and top == "start_array":  # a key of the first item of a list
                if value == "mapping":
                    return "chatgpt"
                if value == "chat_messages":
                    return "claude"
                if value == "entries":
                    return "perplexity-json"
                if value in ("email_address", "full_name"):
                    return "claude-users"
            elif depth == 1 and top == "start_map":  # a key of the document's object
                if value == "entries":
                    return "perplexity-json"
                if value == "chatgpt_plus_user":
                    return "chatgpt-user"
        elif event in ("start_map", "start_array"):
            depth += 1
        elif event in ("end_map", "end_array"):
            depth -= 1
            if event == "end_map" and depth == 1 and top == "start_array":
                return None  # the first item ended without a telling key
            if depth == 0 and top == "start_array":
                return "empty"
    return None


def _not_an_export(source: _Source) -> str:
    if source.explicit and source.name.lower().endswith(".zip"):  # not is_zipfile(): cut short, or no ZIP
        return "not a readable ZIP archive (cut short or damaged? download the export again)"
    return "not a chat export file"


def _detect(source: _Source, limits: ParseLimits) -> str | None:
    """The format of a file; ``None`` if it is no export. Bad JSON in a file named on the command line is an
    error; in a folder or an archive it is skipped. JSON past the limits is an error wherever it is."""
    if source.name.lower().endswith((".md", ".markdown")):
        return "perplexity-md"
    if not source.name.lower().endswith(".json"):
        return None
    stream = JsonGuard(source.opener(None), source.name, limits)
    try:
        return sniff(stream)
    except ijson.JSONError as exc:
        if not source.explicit:
            return None
        said = parser_says(exc)
        raise InvalidExport(
            f"{source.name}: {_NOT_UTF8 if _not_utf8(said) else f'not valid JSON: {said}'}"
        ) from None
    except UnicodeDecodeError:
        if not source.explicit:
            return None
        raise InvalidExport(f"{source.name}: not UTF-8 text") from None
    finally:
        _close(stream)


_NOT_UTF8 = "not UTF-8 text (saved in another encoding?)"
_MARK = re.compile(r"[ \t]*\(right here\) -*\^")


def parser_says(exc: ijson.JSONError) -> str:
    """The JSON parser's complaint on one line, as text (yajl's is bytes, the spot marked on three lines)."""
    raw = exc.args[0] if exc.args else ""
    text = raw.decode("utf-8", "replace") if isinstance(raw, bytes) else str(raw)
    lines = [line.strip() for line in _MARK.sub("", text).splitlines() if line.strip()]
    return f"{lines[0]} near {lines[1][-40:]!r}" if len(lines) == 2 else " ".join(lines)


def _not_utf8(said: str) -> bool:
    return "invalid bytes in UTF8" in said or "\ufffd" in said  # bytes that do not decode: UTF-16, Latin-1


def _close(stream: Readable) -> None:
    close = getattr(stream, "close", None)
    if close is not None:
        close()


def _file_source(path: Path, name: str, explicit: bool) -> _Source:
    def opener(on_bytes: Callable[[int], None] | None) -> CountingReader:
        return CountingReader(path.open("rb"), name, 2**62, on_bytes)

    return _Source(name, path.stat().st_size, opener, explicit)


def _zip_source(archive: SafeZip, info: zipfile.ZipInfo) -> _Source:
    return _Source(
        f"{archive.path.name}:{info.filename}",
        info.file_size,
        lambda on_bytes: archive.open(info, on_bytes),
        explicit=False,
    )


def _sources(paths: Sequence[Path], stack: contextlib.ExitStack, options: ImportOptions) -> Iterator[_Source]:
    for path in paths:
        if path.is_dir():
            for file in sorted(p for p in path.rglob("*") if p.is_file() and not p.is_symlink()):
                yield _file_source(file, str(file.relative_to(path.parent)), explicit=False)
        elif zipfile.is_zipfile(path):
            archive = stack.enter_context(SafeZip(path, options.limits))
            for info in archive.members:
                yield _zip_source(archive, info)
            yield from (_Source(f"{path.name}:{n}", 0, _no_open, False) for n, _ in archive.skipped)
        elif path.is_file():
            yield _file_source(path, path.name, explicit=True)
        else:
            raise InvalidExport(f"{path}: no such file or folder")


def _no_open(on_bytes: Callable[[int], None] | None) -> Readable:
    raise AssertionError("skipped members are never opened")


def import_paths(
    paths: Sequence[Path], out: Path, options: ImportOptions | None = None, progress: Progress | None = None
) -> ImportReport:
    """Import every export under ``paths`` into ``out`` (JSONL) and ``out.meta.json`` (the identity).

    ``out`` appears complete or not at all: the conversations go to ``out.partial``, renamed when the import
    succeeds and removed when anything fails."""
    options = options or ImportOptions()
    tmp = out.with_name(out.name + ".partial")
    try:
        with tmp.open("w", encoding="utf-8") as f:
            reports, skipped, identity = _import_all(paths, f, options, progress)
        if not reports or (all(r.error for r in reports) and not sum(r.written for r in reports)):
            why = "; ".join([*(f"{r.name}: {r.error}" for r in reports), *(f"{n}: {w}" for n, w in skipped)])
            raise InvalidExport(
                f"no chat export found in {', '.join(map(str, paths))}" + (f" ({why})" if why else "")
            )
        if not sum(r.written for r in reports):  # exports, but not one conversation: nothing to replace with
            why = "; ".join(map(_nothing, reports))
            raise InvalidExport(f"no conversations found in {', '.join(map(str, paths))} ({why})")
        os.replace(tmp, out)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    Meta(identity=identity).write(out)
    return ImportReport(tuple(reports), tuple(skipped), identity)


def _nothing(report: FileReport) -> str:
    """Why a file gave no conversation."""
    if report.error:
        return f"{report.name}: {report.error}"
    if report.rejected:
        first = report.rejected[0]
        rejected = f"{len(report.rejected)} record(s) rejected"
        return f"{report.name}: {rejected}, the first ({first.record}): {first.reason}"
    return f"{report.name}: an export without conversations"


def _import_all(
    paths: Sequence[Path], out: IO[str], options: ImportOptions, progress: Progress | None
) -> tuple[list[FileReport], list[tuple[str, str]], Identity]:
    reports: list[FileReport] = []
    skipped: list[tuple[str, str]] = []
    identity = Identity()
    with contextlib.ExitStack() as stack:
        sources = list(_sources(paths, stack, options))
        archives_skipped = {s.name for s in sources if s.opener is _no_open}
        total = sum(s.size for s in sources)
        done = 0

        def on_bytes(n: int) -> None:
            nonlocal done
            done += n
            if progress is not None:
                progress(done, total)

        for source in sources:
            if source.name in archives_skipped:
                skipped.append((source.name, "symbolic link ignored"))
                continue
            try:
                fmt = _detect(source, options.parse)
            except zipfile.BadZipFile as exc:
                reports.append(Tally().report(source.name, "unknown", f"corrupt archive member: {exc}"))
                continue
            if fmt is None:
                skipped.append((source.name, _not_an_export(source)))
                on_bytes(source.size)
                continue
            if fmt == "empty" and not source.explicit:  # message_feedback.json, shared_conversations.json …
                skipped.append((source.name, "an empty list"))
                on_bytes(source.size)
                continue
            if fmt in ("claude-users", "chatgpt-user"):
                try:
                    identity = identity.merge(_identity(source, fmt, options.parse))
                except zipfile.BadZipFile as exc:
                    skipped.append((source.name, f"corrupt archive member: {exc}"))
                continue
            reports.append(_import_one(source, fmt, options, out, on_bytes))
    return reports, skipped, identity


def _import_one(
    source: _Source, fmt: str, options: ImportOptions, out: IO[str], on_bytes: Callable[[int], None]
) -> FileReport:
    tally = Tally()
    error: str | None = None
    stream: Readable | None = None
    try:
        stream = source.opener(on_bytes)
        if fmt != "perplexity-md":
            stream = JsonGuard(stream, source.name, options.parse)
        for conv in _read(stream, fmt, source.name, tally, options):
            out.write(dumps(conv) + "\n")
    except ijson.JSONError as exc:
        said, read = parser_says(exc), f"after {tally.conversations} conversation(s)"
        error = f"{_NOT_UTF8} {read}" if _not_utf8(said) else f"invalid JSON {read}: {said}"
    except zipfile.BadZipFile as exc:  # CRC mismatch, corrupt or truncated data: the member's bytes are bad
        error = f"corrupt archive member after {tally.conversations} conversation(s): {exc}"
    except UnicodeDecodeError as exc:
        error = f"not UTF-8 text: {exc}"
    finally:
        if stream is not None:
            _close(stream)
    return tally.report(source.name, fmt, error)


def _read(
    stream: Readable, fmt: str, name: str, tally: Tally, options: ImportOptions
) -> Iterator[Conversation]:
    if fmt == "chatgpt":
        return read_chatgpt(stream, tally, options)
    if fmt == "claude":
        return read_claude(stream, tally, options)
    if fmt == "perplexity-json":
        return read_thread_json(stream, name, tally)
    if fmt == "perplexity-md":
        return read_markdown(stream, name, tally, options.parse.max_record_bytes)
    return iter(())  # "empty": a valid export without conversations


def _identity(source: _Source, fmt: str, limits: ParseLimits) -> Identity:
    stream = JsonGuard(source.opener(None), source.name, limits)
    try:
        if fmt == "claude-users":
            return read_users(stream)
        data = next(ijson.items(stream, ""), None)
        if not isinstance(data, dict):
            return Identity()
        return Identity(
            emails=(data["email"],) if isinstance(data.get("email"), str) else (),
            phones=(data["phone_number"],) if isinstance(data.get("phone_number"), str) else (),
        )
    except (ijson.JSONError, UnicodeDecodeError):
        return Identity()
    finally:
        _close(stream)
