"""``HashingEmbedder``: the shipped fake embedder."""

from __future__ import annotations

import hashlib
import itertools
import re
from collections.abc import Sequence

import numpy as np

from groupqwen.cache.embedders.base import Vectors, normalise_rows

_WORD = re.compile(r"\w+")


class HashingEmbedder:
    """A bag of hashed words and word pairs. Deterministic, instant, no model.

    Texts with the same words get similarity 1.0, texts sharing most words get a high similarity; it
    knows no synonyms. For tests of the cache's plumbing, never for quality.
    """

    name = "hashing"

    def __init__(self, dim: int = 384) -> None:
        self.dim = dim
        self.calls = 0

    def embed(self, texts: Sequence[str]) -> Vectors:
        self.calls += 1
        out = np.zeros((len(texts), self.dim), dtype=np.float32)
        for row, text in enumerate(texts):
            words = _WORD.findall(text.lower())
            features = words + [f"{a} {b}" for a, b in itertools.pairwise(words)]
            for feature in features:
                digest = hashlib.blake2b(feature.encode(), digest_size=8).digest()
                slot = int.from_bytes(digest[:4], "little") % self.dim
                out[row, slot] += 1.0 if digest[4] & 1 else -1.0
        return normalise_rows(out)

    def count_tokens(self, texts: Sequence[str]) -> None:
        return None  # it has no tokenizer

    def close(self) -> None:
        pass
