"""Curation: language and quality filters, exact and near duplicates, then PII replaced by placeholders.

``Curator.run`` streams conversations through the stages in that order and counts every decision;
:func:`curate_file` runs it from one JSONL file to another, writing the rejected ids with their reasons
(ids and reasons only, so no personal data leaks into that file).
"""

from __future__ import annotations

import contextlib
import json
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from groupqwen.finetune.dedupe import Deduplicator
from groupqwen.finetune.pii import Detector, PatternDetector, PresidioDetector, Scrubber
from groupqwen.finetune.quality import Quality, QualityConfig
from groupqwen.finetune.records import Conversation, Identity, Meta, dumps, read_jsonl


@dataclass(frozen=True)
class CurateConfig:
    quality: QualityConfig = field(default_factory=QualityConfig)
    dedupe: bool = True  # exact duplicates
    near_dedupe: bool = True  # MinHash near-duplicates
    near_threshold: float = 0.85  # estimated Jaccard similarity of 5-word shingles
    pii: bool = True
    ner: bool = False  # Presidio names and places; an error when it is not installed with a model


@dataclass(frozen=True)
class CurateReport:
    read: int
    kept: int
    rejected: tuple[tuple[str, int], ...]  # conversations dropped, by reason
    cut: tuple[tuple[str, int], ...]  # conversations shortened at a bad exchange, by reason
    pii: tuple[tuple[str, int], ...]  # replacements, by type


class Curator:
    def __init__(self, config: CurateConfig, identity: Identity | None = None) -> None:
        self.config = config
        self._quality = Quality(config.quality)
        self._dedupe = Deduplicator(config.near_dedupe, config.near_threshold) if config.dedupe else None
        detectors: list[Detector] = [PatternDetector(identity)]
        if config.ner:
            detectors.append(PresidioDetector())
        self._scrubber = Scrubber(detectors) if config.pii else None
        self._read = 0
        self._kept = 0
        self._rejected: Counter[str] = Counter()
        self._cut: Counter[str] = Counter()

    def run(
        self,
        conversations: Iterable[Conversation],
        on_reject: Callable[[Conversation, str], None] | None = None,
    ) -> Iterator[Conversation]:
        for conv in conversations:
            self._read += 1
            kept, reason = self._judge(conv)
            if kept is None:
                self._rejected[reason] += 1
                if on_reject is not None:
                    on_reject(conv, reason)
                continue
            self._kept += 1
            yield kept

    def _judge(self, conv: Conversation) -> tuple[Conversation | None, str]:
        problem = self._quality.conversation_problem(conv)
        if problem is not None:
            return None, problem
        cut, why = self._quality.cut(conv)
        if not cut.turns:
            return None, why or "no complete exchange"
        if why is not None:
            self._cut[why] += 1
        if self._dedupe is not None:
            duplicate = self._dedupe.check(cut)
            if duplicate is not None:
                return None, f"{duplicate.kind} duplicate"
        return (self._scrubber.scrub(cut) if self._scrubber else cut), ""

    def report(self) -> CurateReport:
        return CurateReport(
            read=self._read,
            kept=self._kept,
            rejected=tuple(self._rejected.most_common()),
            cut=tuple(self._cut.most_common()),
            pii=tuple(self._scrubber.counts.most_common()) if self._scrubber else (),
        )


def curate_file(
    source: Path,
    out: Path,
    config: CurateConfig,
    identity: Identity | None = None,
    rejected: Path | None = None,
    progress: Callable[[int], None] | None = None,
) -> CurateReport:
    """Curate ``source`` into ``out``; the identity defaults to the one the import found (its meta file)."""
    identity = Meta.read(source).identity.merge(identity or Identity())
    curator = Curator(config, identity)
    tmp = out.with_name(out.name + ".partial")
    with tmp.open("w", encoding="utf-8") as f, _rejects(rejected) as on_reject:
        for count, conv in enumerate(curator.run(read_jsonl(source), on_reject), 1):
            f.write(dumps(conv) + "\n")
            if progress is not None:
                progress(count)
    tmp.replace(out)
    Meta(identity=identity).write(out)
    return curator.report()


@contextlib.contextmanager
def _rejects(path: Path | None) -> Iterator[Callable[[Conversation, str], None] | None]:
    """Writes ``{"id", "branch", "reason"}`` lines, or nothing when no path is given."""
    if path is None:
        yield None
        return
    with path.open("w", encoding="utf-8") as file:

        def write(conv: Conversation, reason: str) -> None:
            file.write(json.dumps({"id": conv.id, "branch": conv.branch, "reason": reason}) + "\n")

        yield write
