"""Duplicate conversations: exact (same normalised text) and near (MinHash LSH over word shingles).

Streaming: the first conversation seen is kept, a later one that matches it is a duplicate of it. Shingles
are hashed with CRC-32, so the decisions are the same on every run.
"""

from __future__ import annotations

import hashlib
import re
import zlib
from dataclasses import dataclass

from datasketch import MinHash, MinHashLSH  # type: ignore[import-untyped]

from groupqwen.finetune.records import Conversation

_WORD = re.compile(r"\w+")


@dataclass(frozen=True)
class Duplicate:
    kind: str  # "exact", "near" or "semantic"
    of: str  # the id of the conversation kept


def normalise(conv: Conversation) -> str:
    return "\n".join(f"{t.role}:{' '.join(_WORD.findall(t.content.lower()))}" for t in conv.turns)


def shingles(text: str, size: int) -> set[bytes]:
    words = _WORD.findall(text.lower())
    if len(words) <= size:
        return {" ".join(words).encode()}
    return {" ".join(words[i : i + size]).encode() for i in range(len(words) - size + 1)}


class Deduplicator:
    def __init__(
        self, near: bool = True, threshold: float = 0.85, num_perm: int = 64, shingle: int = 5
    ) -> None:
        self._exact: dict[bytes, str] = {}
        self._near = near
        self._num_perm = num_perm
        self._shingle = shingle
        self._permutations = MinHash(num_perm=num_perm, seed=1).permutations
        self._lsh = MinHashLSH(threshold=threshold, num_perm=num_perm)
        self._count = 0

    def check(self, conv: Conversation) -> Duplicate | None:
        """``None`` for a new conversation (remembered from now on), else what it duplicates."""
        key = hashlib.sha256(normalise(conv).encode()).digest()
        if key in self._exact:
            return Duplicate("exact", self._exact[key])
        self._exact[key] = conv.id
        if not self._near:
            return None
        sketch = MinHash(
            num_perm=self._num_perm, hashfunc=zlib.crc32, permutations=self._permutations, scheme="affine32"
        )
        sketch.update_batch(list(shingles(conv.text(), self._shingle)))
        found = self._lsh.query(sketch)
        if found:
            return Duplicate("near", str(min(found)[1]))
        self._count += 1
        self._lsh.insert((self._count, conv.id), sketch, check_duplication=False)
        return None
