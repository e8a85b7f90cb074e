"""The verifier: a second stage, run only on candidate hits, that says how likely a cached question's
answer answers the new one.

A candidate is a neighbour at or above the verifier's ``floor`` (a cosine similarity). The verifier reads
cheap measures of the pair (``features``: the cosine; the lexical guard's findings; word overlap, plain and
weighted by how rare each word is; numbers, negations, question words and rare words that only one side
has; word order; lengths; each also times the cosine) into a logistic model whose weights
``scripts/train_cache_verifier.py`` fits on a part of Quora Question Pairs and ships as
``data/cache_verifier.json``. The model's probability must reach the bar that the accepted false-hit rate
maps to (``bar_for``: the calibration table in the same file, fitted on another part of the data than the
weights). It costs no embedding: a miss without candidates never runs it.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from groupqwen.cache.guard import LexicalGuard, parse, tokens
from groupqwen.errors import ConfigError

Floats = npt.NDArray[np.float64]
DATA_FILE = Path(__file__).parent / "data" / "cache_verifier.json"
VOCAB_FILE = Path(__file__).parent / "data" / "minilm-l6-v2-tokenizer.json"

_QUESTION_WORDS = ("what", "how", "why", "when", "where", "who", "which", "whom", "whose")
_YES_NO = frozenset(
    [
        "is",
        "are",
        "was",
        "were",
        "do",
        "does",
        "did",
        "can",
        "could",
        "should",
        "would",
        "will",
        "shall",
        "may",
        "might",
        "has",
        "have",
    ]
)
_HOW_WHAT = frozenset(
    ["many", "much", "long", "often", "old", "far", "big", "to", "does", "do", "is", "are", "can"]
)
GUARD_REASONS = ("negation", "numbers", "order", "substitution")
LEXICAL = (
    "cosine",
    *(f"guard_{r}" for r in GUARD_REASONS),
    "jaccard_content",
    "jaccard_tokens",
    "only_one_side_min",
    "only_one_side_max",
    "rare_only_one_side",
    "numbers_differ",
    "numbers_both",
    "negation_differs",
    "question_word_differs",
    "question_pair_differs",
    "length_ratio",
    "order_agreement",
    "shared_prefix",
    "idf_only_one_side",
    "idf_max_only_one_side",
    "idf_only_one_side_min",
    "idf_only_one_side_max",
    "idf_shared_share",
)
# every measure but the cosine also enters multiplied by it: a difference matters more between near twins
INPUTS = (*LEXICAL, *(f"cosine*{name}" for name in LEXICAL[1:]))


def _vocabulary() -> frozenset[str]:
    """The embedder's whole-word pieces: a word outside them is rare (a name, a term) and matters more."""
    data = json.loads(VOCAB_FILE.read_text(encoding="utf-8"))
    vocab: dict[str, int] = data["model"]["vocab"]
    return frozenset(w for w in vocab if w.isalpha() and not w.startswith("##"))


_VOCAB: frozenset[str] | None = None


def _common() -> frozenset[str]:
    global _VOCAB
    if _VOCAB is None:
        _VOCAB = _vocabulary()
    return _VOCAB


def _question(words: Sequence[str]) -> tuple[str, str]:
    """The question word (``what`` … or ``yes/no``) and, for ``how``/``what``, the word after it."""
    for i, word in enumerate(words):
        if word in _QUESTION_WORDS:
            after = words[i + 1] if i + 1 < len(words) and words[i + 1] in _HOW_WHAT else ""
            return word, after
    if words and words[0] in _YES_NO:
        return "yes/no", ""
    return "", ""


def _order_agreement(a: Sequence[str], b: Sequence[str]) -> float:
    """The share of pairs of shared words that keep their order (1.0 with fewer than two shared)."""
    first_b = {w: i for i, w in reversed(list(enumerate(b)))}
    seq = [first_b[w] for w in dict.fromkeys(a) if w in first_b]
    pairs = len(seq) * (len(seq) - 1) // 2
    if pairs == 0:
        return 1.0
    kept = sum(1 for i in range(len(seq)) for j in range(i + 1, len(seq)) if seq[i] < seq[j])
    return kept / pairs


_WORD = re.compile(r"[a-z]+")


def lexical(
    query: str, cached: str, similarity: float, guard: LexicalGuard, idf: Callable[[str], float]
) -> list[float]:
    """The ``LEXICAL`` measures of a pair of normalised texts (``idf``: a word's inverse document
    frequency in the training questions)."""
    q, c = parse(query), parse(cached)
    reason = guard.check(query, cached).reason
    qc, cc = set(q.content), set(c.content)
    qt, ct = set(tokens(query)), set(tokens(cached))
    only_q, only_c = qc - cc, cc - qc
    common = _common()
    rare = sum(1 for w in only_q | only_c if _WORD.fullmatch(w) and w not in common)
    qw, cw = _question(q.words), _question(c.words)
    lengths = (len(q.words) or 1, len(c.words) or 1)
    idf_q, idf_c = [idf(w) for w in only_q], [idf(w) for w in only_c]
    shared = 2 * sum(idf(w) for w in qc & cc)
    whole = sum(idf_q) + sum(idf_c) + shared
    prefix = 0
    for x, y in zip(q.words, c.words, strict=False):
        if x != y:
            break
        prefix += 1
    return [
        similarity,
        *(float(reason == r) for r in GUARD_REASONS),
        len(qc & cc) / len(qc | cc) if qc | cc else 1.0,
        len(qt & ct) / len(qt | ct) if qt | ct else 1.0,
        float(min(len(only_q), len(only_c))),
        float(max(len(only_q), len(only_c))),
        float(rare),
        float(q.numbers != c.numbers),
        float(bool(q.numbers) and bool(c.numbers)),
        float((q.negations > 0) != (c.negations > 0)),
        float(qw[0] != cw[0]),
        float(qw != cw),
        min(lengths) / max(lengths),
        _order_agreement(q.words, c.words),
        prefix / min(lengths),
        sum(idf_q) + sum(idf_c),
        max([*idf_q, *idf_c, 0.0]),
        min(sum(idf_q), sum(idf_c)),
        max(sum(idf_q), sum(idf_c)),
        shared / whole if whole else 1.0,
    ]


def features(
    query: str, cached: str, similarity: float, guard: LexicalGuard, idf: Callable[[str], float]
) -> Floats:
    """Every input of the model (``INPUTS``): ``LEXICAL``, then the others times the cosine."""
    measures = np.asarray(lexical(query, cached, similarity, guard, idf), dtype=np.float64)
    return np.concatenate([measures, similarity * measures[1:]])


class Idf:
    """A word's inverse document frequency among ``documents`` training questions: ``log((n + 1) /
    (df + 1))``; a word in fewer than two of them (not listed) counts as seen once."""

    def __init__(self, documents: int, frequencies: dict[str, int]) -> None:
        self.documents = documents
        self.frequencies = frequencies
        self._unseen = math.log((documents + 1) / 2)

    def __call__(self, word: str) -> float:
        df = self.frequencies.get(word)
        return self._unseen if df is None else math.log((self.documents + 1) / (df + 1))


@dataclass(frozen=True)
class Verifier:
    """The shipped model: ``p = sigmoid(bias + weights · (x - mean) / scale)`` over ``features``; a
    candidate under ``floor`` is never asked; ``calibration`` maps accepted false-hit rates to bars."""

    weights: Floats
    bias: float
    mean: Floats
    scale: Floats
    floor: float
    calibration: tuple[tuple[float, float], ...]  # (false-hit rate, bar), rates ascending
    embedder: str  # the embedder whose cosines it was fitted on: another one's mean something else
    idf: Idf
    guard: LexicalGuard

    def probability(self, query: str, cached: str, similarity: float) -> float:
        x = features(query, cached, similarity, self.guard, self.idf)
        z = self.bias + float(((x - self.mean) / self.scale) @ self.weights)
        return 1.0 / (1.0 + math.exp(-max(-50.0, min(50.0, z))))

    def bar_for(self, max_false_hit_rate: float) -> float:
        """The bar of the largest calibrated rate within ``max_false_hit_rate`` (the strictest bar when
        none is: a rate below every calibrated one serves almost nothing)."""
        bar = self.calibration[0][1]
        for rate, candidate in self.calibration:
            if rate <= max_false_hit_rate + 1e-12:
                bar = candidate
        return bar

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Verifier:
        weights = np.asarray(data["weights"], dtype=np.float64)
        mean = np.asarray(data["mean"], dtype=np.float64)
        scale = np.asarray(data["scale"], dtype=np.float64)
        calibration = tuple((float(r), float(b)) for r, b in data["calibration"])
        if not (weights.shape == mean.shape == scale.shape) or (scale <= 0).any() or not calibration:
            raise ValueError("weights, mean and scale need one positive-scaled entry each, and a calibration")
        return cls(
            weights,
            float(data["bias"]),
            mean,
            scale,
            float(data["floor"]),
            tuple(sorted(calibration)),
            str(data["embedder"]),
            Idf(int(data["idf"]["documents"]), {str(w): int(n) for w, n in data["idf"]["df"].items()}),
            LexicalGuard(),
        )


def load(path: Path = DATA_FILE) -> Verifier:
    """The shipped (or a configured) verifier; a missing or broken file is a ``ConfigError``."""
    try:
        return Verifier.from_json(json.loads(path.read_text(encoding="utf-8")))
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise ConfigError([("cache.verifier", f"cannot read {path}: {exc}")]) from exc
