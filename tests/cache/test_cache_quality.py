"""The pure parts of ``bench/cache_quality.py``: the threshold rule and the Wilson interval."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[2]
sys.path[:0] = [str(ROOT / "bench")]

import cache_quality  # noqa: E402


def arrays(
    pairs: list[tuple[float, bool, bool]],
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    similarity, labels, accept = zip(*pairs, strict=True)
    return np.array(similarity), np.array(labels), np.array(accept)


def test_the_rule_takes_the_most_recall_within_the_bounds() -> None:
    # 10 positives at 0.95 .. 0.77 (step 0.02); 40 negatives: one at 0.90 the guard lets through, one at 0.80
    pairs = [(0.95 - 0.02 * i, True, True) for i in range(10)]
    pairs += [(0.90, False, True), (0.80, False, True)] + [(0.99, False, False)] * 38
    similarity, labels, accept = arrays(pairs)
    grid = [0.76, 0.78, 0.80, 0.82, 0.84, 0.86, 0.88, 0.90, 0.92]
    # one false hit (2.5 %) is allowed, two are not: with no precision floor, 0.82 keeps the most recall (7)
    assert cache_quality.pick_threshold(similarity, labels, accept, grid, min_precision=0) == 0.82
    assert cache_quality.pick_threshold(similarity, labels, accept, grid, min_precision=0.85) == 0.82  # 7/8
    # the default floor (0.95) holds only once the false hit at 0.90 is below the threshold
    assert cache_quality.pick_threshold(similarity, labels, accept, grid) == 0.92
    # nothing meets an impossible bound
    assert cache_quality.pick_threshold(similarity, labels, accept, grid, max_false_hits=-1) is None


def test_ties_go_to_the_higher_threshold() -> None:
    similarity, labels, accept = arrays([(0.95, True, True), (0.5, False, True)])
    assert cache_quality.pick_threshold(similarity, labels, accept, [0.80, 0.85, 0.90]) == 0.90


def test_rates_with_and_without_the_guard() -> None:
    similarity, labels, accept = arrays([(0.9, True, True), (0.9, False, False), (0.9, False, True)])
    guarded = cache_quality.rates(similarity, labels, accept, 0.85)
    assert (guarded.tp, guarded.fp, guarded.precision, guarded.false_hits) == (1, 1, 0.5, 0.5)
    bare = cache_quality.rates(similarity, labels, np.ones_like(accept), 0.85)
    assert (bare.tp, bare.fp, bare.recall, bare.false_hits) == (1, 2, 1.0, 1.0)


@pytest.mark.parametrize(
    ("successes", "trials", "low", "high"),
    # reference values: scipy.stats.binomtest(k, n).proportion_ci(method="wilson")
    [(88, 97, 0.8330, 0.9504), (9, 205, 0.0233, 0.0813), (0, 10, 0.0, 0.2775), (10, 10, 0.7225, 1.0)],
)
def test_wilson_interval(successes: int, trials: int, low: float, high: float) -> None:
    assert cache_quality.wilson(successes, trials) == pytest.approx((low, high), abs=1e-4)
    assert cache_quality.wilson(0, 0) == (0.0, 1.0)
