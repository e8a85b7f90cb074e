"""Curation: language and quality filters, exact, near and (opt-in) semantic duplicates, PII placeholders.

``Curator.run`` streams conversations through the stages in that order and counts every decision (the
semantic pass embeds survivors in batches of ``SEMANTIC_BATCH``, so its decisions come a batch late);
:func:`curate_file` runs it from one JSONL file to another, writing the rejected ids with their reasons
and, for a duplicate, the id it repeats (ids and reasons only, so no personal data leaks into that file).
"""

from __future__ import annotations

import contextlib
import json
import os
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from groupqwen.cache.embedders import Embedder, MiniLMEmbedder
from groupqwen.finetune.dedupe import Deduplicator
from groupqwen.finetune.pii import Detector, PatternDetector, PresidioDetector, Scrubber
from groupqwen.finetune.quality import Quality, QualityConfig
from groupqwen.finetune.records import Conversation, Identity, Meta, dumps, read_jsonl
from groupqwen.finetune.semantic import SemanticDeduplicator, check_threshold

SEMANTIC_BATCH = 256  # conversations embedded and judged together
OnReject = Callable[[Conversation, str, str | None], None]  # conversation, reason, id it duplicates


@dataclass(frozen=True)
class CurateConfig:
    quality: QualityConfig = field(default_factory=QualityConfig)
    dedupe: bool = True  # exact duplicates
    near_dedupe: bool = True  # MinHash near-duplicates
    near_threshold: float = 0.85  # estimated Jaccard similarity of 5-word shingles
    semantic_threshold: float | None = None  # cosine of embeddings (0.95 is sensible); None: no semantic pass
    pii: bool = True
    ner: bool = False  # Presidio names and places; an error when it is not installed with a model

    def __post_init__(self) -> None:
        if self.semantic_threshold is not None:
            check_threshold(self.semantic_threshold, "semantic_threshold")


@dataclass(frozen=True)
class Rejection:
    reason: str
    of: str | None = None  # for a duplicate: the id of the conversation kept


@dataclass(frozen=True)
class CurateReport:
    read: int
    kept: int
    rejected: tuple[tuple[str, int], ...]  # conversations dropped, by reason
    cut: tuple[tuple[str, int], ...]  # conversations shortened at a bad exchange, by reason
    pii: tuple[tuple[str, int], ...]  # replacements, by type


class Curator:
    """``embedder`` serves the semantic pass (default: the cache's MiniLM); unused when it is off."""

    def __init__(
        self, config: CurateConfig, identity: Identity | None = None, embedder: Embedder | None = None
    ) -> None:
        self.config = config
        self._quality = Quality(config.quality)
        self._dedupe = Deduplicator(config.near_dedupe, config.near_threshold) if config.dedupe else None
        self._semantic: SemanticDeduplicator | None = None
        if config.semantic_threshold is not None:
            embedder = embedder or MiniLMEmbedder(threads=min(4, os.cpu_count() or 1))
            self._semantic = SemanticDeduplicator(embedder, config.semantic_threshold)
        detectors: list[Detector] = [PatternDetector(identity)]
        if config.ner:
            detectors.append(PresidioDetector())
        self._scrubber = Scrubber(detectors) if config.pii else None
        self._read = 0
        self._kept = 0
        self._rejected: Counter[str] = Counter()
        self._cut: Counter[str] = Counter()

    def run(
        self, conversations: Iterable[Conversation], on_reject: OnReject | None = None
    ) -> Iterator[Conversation]:
        semantic = self._semantic
        pending: list[Conversation] = []
        for conv in conversations:
            self._read += 1
            judged = self._judge(conv)
            if isinstance(judged, Rejection):
                self._reject(conv, judged, on_reject)
            elif semantic is None:
                yield self._keep(judged)
            else:
                pending.append(judged)
                if len(pending) == SEMANTIC_BATCH:
                    yield from self._semantic_pass(semantic, pending, on_reject)
                    pending = []
        if semantic is not None and pending:
            yield from self._semantic_pass(semantic, pending, on_reject)

    def _judge(self, conv: Conversation) -> Conversation | Rejection:
        problem = self._quality.conversation_problem(conv)
        if problem is not None:
            return Rejection(problem)
        cut, why = self._quality.cut(conv)
        if not cut.turns:
            return Rejection(why or "no complete exchange")
        if why is not None:
            self._cut[why] += 1
        if self._dedupe is not None:
            duplicate = self._dedupe.check(cut)
            if duplicate is not None:
                return Rejection(f"{duplicate.kind} duplicate", duplicate.of)
        return cut

    def _semantic_pass(
        self, semantic: SemanticDeduplicator, convs: list[Conversation], on_reject: OnReject | None
    ) -> Iterator[Conversation]:
        for conv, duplicate in zip(convs, semantic.check(convs), strict=True):
            if duplicate is None:
                yield self._keep(conv)
            else:
                self._reject(conv, Rejection("semantic duplicate", duplicate.of), on_reject)

    def _keep(self, conv: Conversation) -> Conversation:
        self._kept += 1
        return self._scrubber.scrub(conv) if self._scrubber else conv

    def _reject(self, conv: Conversation, rejection: Rejection, on_reject: OnReject | None) -> None:
        self._rejected[rejection.reason] += 1
        if on_reject is not None:
            on_reject(conv, rejection.reason, rejection.of)

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
    embedder: Embedder | None = None,
) -> CurateReport:
    """Curate ``source`` into ``out``; the identity defaults to the one the import found (its meta file)."""
    identity = Meta.read(source).identity.merge(identity or Identity())
    curator = Curator(config, identity, embedder)
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
def _rejects(path: Path | None) -> Iterator[OnReject | None]:
    """Writes ``{"id", "branch", "reason"}`` lines (``"of"`` too for a duplicate); nothing without a path."""
    if path is None:
        yield None
        return
    with path.open("w", encoding="utf-8") as file:

        def write(conv: Conversation, reason: str, of: str | None) -> None:
            line = {"id": conv.id, "branch": conv.branch, "reason": reason} | ({"of": of} if of else {})
            file.write(json.dumps(line) + "\n")

        yield write
