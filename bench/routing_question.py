"""Does the question help the cascade's confidence? Answer-only calibration against answer + question.

    .venv/bin/python bench/routing_question.py           # CV on the tune rows, then held out once

The shipped calibration (``confidence.measures`` of the 0.5B's answer prefixes → a logistic) knows
nothing of the question. Here the same fit (``scripts/train_router.py``'s rows: each tune answer at
``routing_long.fit_prefixes``, weighing one per answer; L2 by out-of-fold log-loss; folds over items, so
every prefix of a question stays in its fold) is given the question's features beside the answer's:
``features.vector``'s dense measures (without the ones constant in this data: the bias, the system
prompt, turns, ``max_tokens``, JSON), with or without the arithmetic ones, with the hashed words, or
with products of a few answer measures and a few question measures (so that the slope, not only the
level, can differ by kind of question); and, as a separate idea, each part weighing the same in the fit
(the mix weighs its parts equally, the shipped fit its answers).

For each variant, on the tune rows by cross-validation: log-loss, AUC and ECE per part of the
out-of-fold score at the decision length; the tables ``train_router.py`` would ship (bars, auto with the
shipped complexity head's out-of-fold scores, early bars), all from out-of-fold scores. Then held out
(``routing_mix.items("heldout")``), once: AUC and ECE per part; the default configuration's replay
(target 2 %: the ``auto`` pair and early bars; ``auto:cascade`` at the ``bars`` table's bar); the least
share to the large model at 95 % of its mix accuracy with one bar for every part chosen on the held-out
rows (``one_bar``); the ceiling of per-part bars on the score (``routing_mix.ceiling``). The last two
are tuned on what they report: upper bounds.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "bench"), str(ROOT / "scripts")]

import routing_long  # noqa: E402
import routing_mix  # noqa: E402
import train_router as tr  # noqa: E402
from routing import ece  # noqa: E402

from groupqwen.config import load_settings  # noqa: E402
from groupqwen.messages import ChatRequest, TokenLogprob  # noqa: E402
from groupqwen.orchestrator import features, weights  # noqa: E402
from groupqwen.orchestrator.classifier import (  # noqa: E402
    Array,
    Logistic,
    auc,
    cross_validated,
)
from groupqwen.orchestrator.confidence import MEASURES, measures  # noqa: E402
from groupqwen.orchestrator.weights import routing_from_settings  # noqa: E402

SMALL, LARGE = tr.SMALL, tr.LARGE
Bools = tr.Bools
CONSTANT = ("bias_one", "has_system", "turns", "log_max_tokens", "json_output")
ARITHMETIC = tr.ARITHMETIC
PLAIN = tuple(n for n in features.DENSE if n not in CONSTANT and n not in ARITHMETIC)
WITH_ARITHMETIC = tuple(n for n in features.DENSE if n not in CONSTANT)
CROSS_ANSWER = ("mean_logprob", "min_logprob", "first_tokens_logprob")
CROSS_QUESTION = ("log_user_chars", "code_markers", "math_markers", "numbers")


@dataclass(frozen=True)
class Variant:
    name: str
    dense: tuple[str, ...] = ()
    hashed: bool = False
    cross: bool = False
    balanced: bool = False  # each part weighs the same in the fit (as in the mix), not each answer

    def question(self, request: ChatRequest) -> Array:
        """The question's inputs: the chosen dense measures, then (``hashed``) the hashed words."""
        v = features.vector(features.extract(request))
        parts = [v[[features.DENSE.index(n) for n in self.dense]]]
        if self.hashed:
            parts.append(v[len(features.DENSE) :])
        return np.concatenate(parts)

    def inputs(self, answer: Array, question: Array) -> Array:
        """The calibration's inputs: the answer's measures, the question's, and (``cross``) the products of
        ``CROSS_ANSWER`` with ``CROSS_QUESTION`` (which must be among ``dense``)."""
        if not self.cross:
            return np.concatenate([answer, question])
        a = answer[[MEASURES.index(n) for n in CROSS_ANSWER]]
        q = question[[self.dense.index(n) for n in CROSS_QUESTION]]
        return np.concatenate([answer, question, np.outer(a, q).ravel()])


VARIANTS = (
    Variant("answer only (shipped)"),
    Variant("+ question, dense", PLAIN),
    Variant("+ question, dense + arithmetic", WITH_ARITHMETIC),
    Variant("+ question, dense × 3 answer measures", PLAIN, cross=True),
    Variant("+ question, dense + hashed words", PLAIN, hashed=True),
    Variant("answer only, parts weighed equally", balanced=True),
    Variant("+ question, dense, parts weighed equally", PLAIN, balanced=True),
)


@dataclass
class Fitted:
    variant: Variant
    l2: float
    model: Logistic
    cv_log_loss: float
    cv_auc: float
    oof_running: Array  # per tune item: lowest out-of-fold score over the checked prefixes
    oof_decision: Array  # per tune item: out-of-fold score at the decision length
    oof_early: Array  # per tune item, lengths 1..EARLY (NaN past the end)


def calibrate(variant: Variant, items: list[dict[str, Any]], fold: npt.NDArray[np.int64]) -> Fitted:
    """``train_router.calibrate`` for the small model, with ``variant``'s question inputs and weights."""
    qs = [variant.question(it["request"]) for it in items]
    parts = [it["part"] for it in items]
    share = {p: (len(items) / parts.count(p) / len(set(parts)) if variant.balanced else 1.0) for p in parts}
    model, scores, running, early, decision = tr.calibrate(
        SMALL,
        items,
        fold,
        inputs=lambda i, answer: variant.inputs(answer, qs[i]),
        weights=[share[p] for p in parts],
    )
    return Fitted(
        variant, scores["l2"], model, scores["cv_log_loss"], scores["cv_auc"], running, decision, early
    )


def complexity_oof(
    items: list[dict[str, Any]], fold: npt.NDArray[np.int64], small_ok: Bools, large_ok: Bools
) -> tuple[Logistic, Array]:
    """The shipped complexity head's settings (inputs, synthetic rows, L2 from ``router.json``), refit and
    scored out of fold as ``train_router.py`` does (``small_ok`` / ``large_ok``: each tune item's grades)."""
    spec = json.loads(weights.SHIPPED.read_text(encoding="utf-8"))["trained_on"]["complexity"]
    x, y_win, w, extras = tr.complexity_rows(items, tr.corpus(), small_ok, large_ok)
    use = tr.feature_sets()[spec["inputs"]]
    gain = cross_validated(
        x, y_win, fold, l2=spec["l2"], weight=w, use=use, extra=extras[spec["synthetic_prompts"]]
    )
    return weights.load().heads.complexity, gain


def per_part(score: Array, ok: Array, parts: list[str]) -> str:
    cells = []
    for part in ("short", *routing_long.PARTS, "all"):
        m = np.asarray([p == part or part == "all" for p in parts])
        area = auc(score[m], ok[m]) if 0 < ok[m].sum() < m.sum() else float("nan")
        cells.append(f"{part} {area:.2f} / {ece(score[m], ok[m]):.3f}")
    return ", ".join(cells)


def one_bar(items: list[routing_mix.Item], score: Array, of_large: float = 0.95) -> tuple[float, float]:
    """The least share to the 1.5B at ``of_large`` of its mix accuracy with *one* bar on ``score`` for every
    part (the items below it escalated), chosen on ``items`` themselves: (share, bar)."""
    parts = sorted({i.part for i in items})
    small = np.asarray([i.small.ok for i in items], float)
    large = np.asarray([i.large.ok for i in items], float)
    masks = [np.asarray([i.part == p for i in items]) for p in parts]
    goal = of_large * np.mean([large[m].mean() for m in masks])
    best = (1.0, 1.0)
    for bar in sorted({*score.tolist(), 1.0 + 1e-9}):
        up = score < bar
        accuracy = np.mean([np.where(up, large, small)[m].mean() for m in masks])
        share = float(np.mean([up[m].mean() for m in masks]))
        if accuracy >= goal - 1e-12 and share < best[0]:
            best = (share, bar)
    return best


def replay(
    items: list[routing_mix.Item],
    score: Callable[[routing_mix.Item, list[TokenLogprob]], float],
    complexity: Logistic,
    pair: tuple[float, float],
    cascade_bar: float,
    early: tuple[tuple[float, tuple[float, ...]], ...],
) -> dict[str, dict[str, dict[str, float]]]:
    """``routing_mix.table``'s ``auto`` and ``auto:cascade`` rows with this score and these tables: the
    router sends an item straight to the 1.5B above ``max_complexity``; else the cascade leaves the
    0.5B's answer at the first prefix below its early bar (lengths before ``min_tokens``) or the bar."""
    routing = routing_from_settings(load_settings())
    edge, bar = pair

    def early_bar(b: float, k: int) -> float | None:
        row = next((r for r in reversed(early) if r[0] <= b + 1e-12), None)
        return None if row is None or not 1 <= k <= len(row[1]) else min(row[1][k - 1], b)

    def left(item: routing_mix.Item, b: float) -> int | None:
        a = item.small
        if b <= 0:
            return None
        for k in range(1, min(a.n, routing.min_tokens - 1, routing.buffer_tokens - 1) + 1):
            e = early_bar(b, k)
            if e is not None and score(item, a.tokens[:k]) < e:
                return k
        for k in routing_long.decision_prefixes(a.n, routing.min_tokens, routing.buffer_tokens):
            if score(item, a.tokens[:k]) < b:
                return k
        return None

    out: dict[str, dict[str, dict[str, float]]] = {}
    for part, mine in routing_mix.by_part(items).items():
        out[part] = {}
        for policy in ("small", "large", "auto", "auto:cascade"):
            got = []
            for item in mine:
                if policy in ("small", "large"):
                    up = policy == "large"
                else:
                    direct = (
                        policy == "auto"
                        and complexity.probability(features.vector(features.extract(item.request))) > edge
                    )
                    up = direct or left(item, bar if policy == "auto" else cascade_bar) is not None
                got.append((item.large.ok if up else item.small.ok, up))
            arr = np.asarray(got, float)
            out[part][policy] = {"accuracy": float(arr[:, 0].mean()), "to_large": float(arr[:, 1].mean())}
    out["mix"] = {
        p: {k: float(np.mean([out[part][p][k] for part in out])) for k in ("accuracy", "to_large")}
        for p in out["short"]
    }
    return out


def main() -> None:
    calibration, answers = tr.load_bench("calibration")
    items = tr.items_of(calibration, answers)
    fold = tr.folds(len(items), tr.K)
    parts = [it["part"] for it in items]
    small_ok = np.asarray([it["answers"][SMALL]["ok"] for it in items])
    large_ok = np.asarray([it["answers"][LARGE]["ok"] for it in items])
    complexity, gain_oof = complexity_oof(items, fold, small_ok, large_ok)
    held = routing_mix.items("heldout")
    held_parts = [i.part for i in held]
    held_ok = np.asarray([i.small.ok for i in held], float)
    routing = routing_from_settings(load_settings())
    target = load_settings().router.tiers[0].target
    counts = {p: parts.count(p) for p in sorted(set(parts))}
    held_counts = {p: held_parts.count(p) for p in sorted(set(held_parts))}
    print(f"tune items {counts}; held out {held_counts}; the default target {target:.0%}\n")
    summary = []
    for variant in VARIANTS:
        f = calibrate(variant, items, fold)
        bars = tr.bars_table(f.oof_running, small_ok, large_ok)
        auto = tr.auto_table(gain_oof, f.oof_running, small_ok, large_ok)
        early = tuple(tr.early_table(f.oof_running, f.oof_early))
        bar = float(np.interp(target, [t for t, _ in bars], [b for _, b in bars]))
        row = next((r for r in reversed(auto) if r[0] <= target + 1e-12), auto[0])
        pair = (row[1], row[2])

        def score(item: routing_mix.Item, tokens: list[TokenLogprob], f: Fitted = f) -> float:
            return f.model.probability(f.variant.inputs(measures(tokens), f.variant.question(item.request)))

        decided = np.asarray(
            [score(i, i.small.tokens[: routing_long.decision_prefixes(i.small.n)[-1]]) for i in held]
        )
        head = np.asarray([score(i, i.small.tokens[: routing.buffer_tokens]) for i in held])
        result = replay(held, score, complexity, pair, bar, early)
        one = one_bar(held, head)
        top = routing_mix.ceiling(held, routing, score=score)
        print(f"## {variant.name}: L2 {f.l2:g}, {len(f.model.weights)} inputs")
        print(f"  tune, CV: log-loss {f.cv_log_loss:.3f}, AUC (rows) {f.cv_auc:.3f}")
        print(f"  tune, CV, AUC / ECE: {per_part(f.oof_decision, small_ok.astype(float), parts)}")
        print(f"  held out, AUC / ECE: {per_part(decided, held_ok, held_parts)}")
        print(f"  tables at {target:.0%}: cascade bar {bar:.3f}; auto (max_complexity, bar) {pair}")
        for p in ("auto", "auto:cascade"):
            cells = ", ".join(
                f"{part} {r[p]['accuracy']:.3f}/{r[p]['to_large']:.0%}" for part, r in result.items()
            )
            of = result["mix"][p]["accuracy"] / result["mix"]["large"]["accuracy"]
            print(f"  held out, replay {p}: {cells} ({of:.1%} of the 1.5B's)")
        print(
            f"  held out, one bar for all parts (chosen on these rows): {one[0]:.1%} to the 1.5B "
            f"(bar {one[1]:.3f})"
        )
        escalated = ", ".join(f"{k} {v:.0%}" for k, v in top["escalated"].items())
        print(
            f"  held out, ceiling: {top['share']:.1%} to the 1.5B for {top['accuracy']:.3f} ({escalated})\n"
        )
        summary.append((variant.name, f, decided, result, one, top))
    print("| calibration inputs | L2 | tune CV log-loss | held-out AUC short / GSM8K / code | `auto` at the "
          "default target: % of the 1.5B's / to it | one bar, best | ceiling (per-part bars) |")  # fmt: skip
    print("|---|---|---|---|---|---|---|")
    for name, f, decided, result, one, top in summary:
        areas = []
        for part in ("short", *routing_long.PARTS):
            m = np.asarray([p == part for p in held_parts])
            areas.append(f"{auc(decided[m], held_ok[m]):.2f}")
        mix = result["mix"]
        print(
            f"| {name} | {f.l2:g} | {f.cv_log_loss:.3f} | {' / '.join(areas)} | "
            f"{mix['auto']['accuracy'] / mix['large']['accuracy']:.1%} / {mix['auto']['to_large']:.0%} | "
            f"{one[0]:.1%} | {top['share']:.1%} |"
        )


if __name__ == "__main__":
    main()
