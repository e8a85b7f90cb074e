"""Semantic duplicates: conversations that ask and answer the same thing in other words.

Each conversation is embedded by the cache's embedder (all-MiniLM-L6-v2 by default) from its first question
and first answer, cut to about what the model reads (256 tokens). Similarities are exact cosines: numpy
products of the new rows with every conversation kept so far, block by block (no approximate index; fine for
tens of thousands). As with the other duplicates, the first occurrence is kept: a conversation whose
similarity to one kept earlier is at least the threshold is a duplicate of the most similar one.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from groupqwen.cache.embedders import Embedder, Vectors
from groupqwen.finetune.dedupe import Duplicate
from groupqwen.finetune.records import Conversation

DEFAULT_THRESHOLD = (
    0.95  # see docs/finetune.md: a reworded question with the same answer, not a related topic
)
QUESTION_CHARS = 500  # the question's share of the text, so the answer is not cut off entirely
TEXT_CHARS = 1200  # about 256 tokens of English: what MiniLM reads, the rest would be truncated anyway


def check_threshold(value: float, name: str) -> float:
    """``value`` if it is a usable cosine threshold, else a ``ValueError`` naming ``name``."""
    if not 0.0 < value <= 1.0:
        raise ValueError(f"{name} must be greater than 0 and at most 1, not {value}")
    return value


def semantic_text(conv: Conversation) -> str:
    """The first question and the first answer, truncated: what a conversation is about."""
    question = next((t.content for t in conv.turns if t.role == "user"), "")
    answer = next((t.content for t in conv.turns if t.role == "assistant"), "")
    return f"{question[:QUESTION_CHARS]}\n{answer}"[:TEXT_CHARS]


class SemanticDeduplicator:
    """Remembers the vectors of the conversations it keeps; :meth:`check` judges a batch in order."""

    def __init__(
        self,
        embedder: Embedder,
        threshold: float = DEFAULT_THRESHOLD,
        embed_batch: int = 32,
        block: int = 8192,
    ) -> None:
        self._embedder = embedder
        self._threshold = check_threshold(threshold, "semantic_threshold")
        self._embed_batch = embed_batch
        self._block = block
        self._kept = np.zeros((0, embedder.dim), dtype=np.float32)  # rows [0, _count) are in use
        self._count = 0
        self._ids: list[str] = []

    def check(self, convs: Sequence[Conversation]) -> list[Duplicate | None]:
        """For each conversation in order: ``None`` if kept (and remembered), else the kept one it repeats."""
        vectors = self._embed([semantic_text(c) for c in convs])
        best, best_at = self._best_kept(vectors)
        within = vectors @ vectors.T
        out: list[Duplicate | None] = []
        kept_here: list[int] = []
        for i in range(len(convs)):
            score, of = float(best[i]), self._ids[best_at[i]] if self._count else ""
            if kept_here:
                j = kept_here[int(np.argmax(within[i, kept_here]))]
                if within[i, j] > score:
                    score, of = float(within[i, j]), convs[j].id
            if score >= self._threshold:
                out.append(Duplicate("semantic", of))
                continue
            out.append(None)
            kept_here.append(i)
        self._remember(vectors[kept_here], [convs[i].id for i in kept_here])
        return out

    def _embed(self, texts: list[str]) -> Vectors:
        """Embedded in batches of similar length (less padding), normalised, rows in the order given."""
        out = np.zeros((len(texts), self._embedder.dim), dtype=np.float32)
        order = sorted(range(len(texts)), key=lambda i: len(texts[i]))
        for start in range(0, len(order), self._embed_batch):
            rows = order[start : start + self._embed_batch]
            out[rows] = self._embedder.embed([texts[i] for i in rows])
        norms = np.linalg.norm(out, axis=1, keepdims=True)
        normalised: Vectors = out / np.maximum(norms, 1e-12)
        return normalised

    def _best_kept(self, vectors: Vectors) -> tuple[Vectors, list[int]]:
        """Each row's highest similarity to a kept conversation and that one's index (-inf and 0: none)."""
        best = np.full(len(vectors), -np.inf, dtype=np.float32)
        best_at = np.zeros(len(vectors), dtype=np.int64)
        for start in range(0, self._count, self._block):
            sims = vectors @ self._kept[start : min(start + self._block, self._count)].T
            at = np.argmax(sims, axis=1)
            top = sims[np.arange(len(vectors)), at]
            better = top > best
            best[better] = top[better]
            best_at[better] = at[better] + start
        return best, [int(x) for x in best_at]

    def _remember(self, vectors: Vectors, ids: list[str]) -> None:
        needed = self._count + len(vectors)
        if needed > len(self._kept):
            grown = np.zeros((max(needed, 2 * len(self._kept), 1024), self._embedder.dim), dtype=np.float32)
            grown[: self._count] = self._kept[: self._count]
            self._kept = grown
        self._kept[self._count : needed] = vectors
        self._count = needed
        self._ids.extend(ids)
