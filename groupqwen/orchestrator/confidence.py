"""How sure a model is of its answer: one calibrated number from the answer's token logprobs.

``measures`` reads the tokens (mean and minimum logprob, entropy and top-1/top-2 margin from the top
alternatives, share of unsure tokens, the first tokens' mean, length) — all length-normalised — and the
same for the *answer span* apart: the tokens after the last ``Answer:`` marker, else the last line (a
short answer is its own span), whose mean and minimum logprob say how sure the model is of what it
concludes rather than of its reasoning, with the span's share of the answer. A
per-model logistic calibration (``Calibration``, fitted against correctness labels by
``scripts/train_router.py`` and shipped in ``data/router.json``) turns them into the probability that the
answer is right. A model without a calibration falls back to the geometric mean token probability.

Each calibration carries a ``bars`` table: for a target ``X`` ("at most X of answers may be worse than the
top tier's"), the lowest bar that kept to it on the calibration data. ``bar_for`` reads it. A fast tier's
calibration also carries an ``auto`` table for the same targets: the pair (``max_complexity``, bar) — send
a request straight to the next tier when the classifier scores it above ``max_complexity``, else answer
here and escalate below the bar — that met the target with the fewest requests reaching the next tier.
``auto_for`` reads it.

A fast tier's calibration also carries an ``early`` table: before the cascade's running check starts
(``router.min_tokens``), its first tokens are checked against *early bars*, one per prefix length
(1, 2, … tokens). For each bar on a grid, the early bar at length ``k`` is the lowest out-of-fold score at
``k`` among the calibration answers that bar kept (so on that data no answer the bar keeps is aborted
early); ``early_bar`` reads the row of the largest grid bar not above the tier's bar and never returns more
than the bar itself. An unsure first token then stops the small model at once, where its whole short answer
used to be generated (and paid for) before it escalated.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from groupqwen.messages import TokenLogprob
from groupqwen.orchestrator.classifier import Array, Logistic

TOP_K = 5  # alternatives the cascade asks for on answers it scores
UNSURE = math.log(0.5)
MEASURES = (
    "mean_logprob",
    "min_logprob",
    "mean_entropy",
    "mean_margin",
    "min_margin",
    "unsure_share",
    "first_tokens_logprob",
    "log_tokens",
    "span_mean_logprob",
    "span_min_logprob",
    "span_share",
)
EarlyRow = tuple[float, tuple[float, ...]]  # a bar and its early bars at 1, 2, … tokens
_MARKER = "answer"  # "Answer:", "The answer is", "**Answer**" …: the span starts after its last one


def _entropy_and_margin(token: TokenLogprob) -> tuple[float, float]:
    """Entropy of the top alternatives plus one bucket for the rest; margin between the two best."""
    if not token.top:
        p = math.exp(token.logprob)
        rest = max(1.0 - p, 1e-12)
        return -(p * token.logprob) - rest * math.log(rest), -token.logprob
    probs = [math.exp(t.logprob) for t in token.top]
    rest = max(1.0 - sum(probs), 1e-12)
    entropy = -sum(p * math.log(max(p, 1e-12)) for p in probs) - rest * math.log(rest)
    second = token.top[1].logprob if len(token.top) > 1 else math.log(rest)
    return entropy, token.top[0].logprob - second


def span_start(tokens: Sequence[TokenLogprob]) -> int:
    """Where the answer span starts: after the last token ending an ``answer`` marker (and its colon or
    "is"), else after the last newline; 0 when neither (a one-line answer is all span), and when the span
    would be empty (the marker is the last thing written, as while an answer streams)."""
    text = "".join(t.token for t in tokens)
    lower = text.lower()
    cut = lower.rfind(_MARKER)
    if cut >= 0:
        cut += len(_MARKER)
        rest = lower[cut:]
        cut += len(rest) - len(rest.lstrip(" *:is\t"))
    else:
        cut = text.rstrip("\n").rfind("\n") + 1
    if cut <= 0:
        return 0
    end = 0
    for index, token in enumerate(tokens):  # the token holding the span's first character
        end += len(token.token)
        if end > cut:
            return index
    return 0


def measures(tokens: Sequence[TokenLogprob]) -> Array:
    """The ``MEASURES`` of an answer (or of its first tokens, while it streams)."""
    if not tokens:
        return np.asarray([-10.0, -10.0, 3.0, 0.0, 0.0, 1.0, -10.0, 0.0, -10.0, -10.0, 1.0])
    logprobs = np.asarray([t.logprob for t in tokens])
    em = np.asarray([_entropy_and_margin(t) for t in tokens])
    span = logprobs[span_start(tokens) :]
    return np.asarray(
        [
            float(logprobs.mean()),
            float(logprobs.min()),
            float(em[:, 0].mean()),
            float(em[:, 1].mean()),
            float(em[:, 1].min()),
            float((logprobs < UNSURE).mean()),
            float(logprobs[:3].mean()),
            math.log1p(len(tokens)),
            float(span.mean()),
            float(span.min()),
            len(span) / len(tokens),
        ]
    )


@dataclass(frozen=True)
class Calibration:
    """One model's calibration: measures → probability the answer is right, and its bars by target."""

    model: Logistic
    bars: tuple[tuple[float, float], ...] = ()  # (target share worse than top tier, bar), target ascending
    auto: tuple[tuple[float, float, float], ...] = ()  # (target, max_complexity, bar), target ascending
    early: tuple[EarlyRow, ...] = ()  # (bar, its early bars at 1, 2, … tokens), bar ascending

    def score(self, tokens: Sequence[TokenLogprob]) -> float:
        return self.model.probability(measures(tokens))

    def bar_for(self, target: float) -> float:
        """The bar meeting ``target`` (linear between the table's rows; the strictest beyond them)."""
        if not self.bars:
            return 1.0 - target
        targets = [t for t, _ in self.bars]
        bars = [b for _, b in self.bars]
        return float(np.interp(target, targets, bars))

    def auto_for(self, target: float) -> tuple[float, float] | None:
        """``(max_complexity, bar)`` of the table's row with the largest target not above ``target`` (the
        strictest row below the table); None without a table. Rows are not interpolated: each pair was
        measured as a pair."""
        if not self.auto:
            return None
        row = next((r for r in reversed(self.auto) if r[0] <= target + 1e-12), self.auto[0])
        return row[1], row[2]

    def early_bar(self, bar: float, tokens: int) -> float | None:
        """The early bar after ``tokens`` tokens for an answer held to ``bar``: the ``early`` row of the
        largest grid bar not above ``bar`` (the one that kept the most), at most ``bar``; None without a
        table, for a length beyond it, or a bar below its first row."""
        row = next((r for r in reversed(self.early) if r[0] <= bar + 1e-12), None)
        if row is None or not 1 <= tokens <= len(row[1]):
            return None
        return min(row[1][tokens - 1], bar)

    def to_json(self) -> dict[str, Any]:
        out = {**self.model.to_json(), "bars": [[round(t, 4), round(b, 6)] for t, b in self.bars]}
        if self.auto:
            out["auto"] = [[round(t, 4), round(e, 6), round(b, 6)] for t, e, b in self.auto]
        if self.early:
            out["early"] = [[round(b, 4), [round(e, 6) for e in bars]] for b, bars in self.early]
        return out

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Calibration:
        bars = tuple((float(t), float(b)) for t, b in data.get("bars", ()))
        auto = tuple((float(t), float(e), float(b)) for t, e, b in data.get("auto", ()))
        early = tuple((float(b), tuple(map(float, bars))) for b, bars in data.get("early", ()))
        model = Logistic.from_json({k: data[k] for k in ("weights", "bias", "mean", "scale")})
        return cls(model, tuple(sorted(bars)), tuple(sorted(auto)), tuple(sorted(early)))


def uncalibrated(tokens: Sequence[TokenLogprob]) -> float:
    """The geometric mean token probability: the fallback when a model has no calibration."""
    if not tokens:
        return 0.0
    return math.exp(sum(t.logprob for t in tokens) / len(tokens))


@dataclass(frozen=True)
class Scorer:
    """The calibrations of every model that has one."""

    calibrations: Mapping[str, Calibration] = field(default_factory=dict)

    def score(self, model: str, tokens: Sequence[TokenLogprob]) -> float:
        calibration = self.calibrations.get(model)
        return calibration.score(tokens) if calibration else uncalibrated(tokens)

    def bar(self, model: str, target: float) -> float:
        calibration = self.calibrations.get(model)
        return calibration.bar_for(target) if calibration else 1.0 - target

    def early_bar(self, model: str, bar: float, tokens: int) -> float | None:
        """``model``'s early bar after ``tokens`` tokens (``Calibration.early_bar``); None when untrained."""
        calibration = self.calibrations.get(model)
        return calibration.early_bar(bar, tokens) if calibration else None

    def auto(self, model: str, target: float) -> tuple[float, float] | None:
        """``(max_complexity, bar)`` for ``model`` as the fast tier at ``target``; None when not trained."""
        calibration = self.calibrations.get(model)
        return calibration.auto_for(target) if calibration else None

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Scorer:
        return cls({model: Calibration.from_json(c) for model, c in data.items()})
