"""The pure parts of ``scripts/train_cache_verifier.py`` (the cross-validated choice, the calibration) and of
``bench/second_opinion.py`` (a second cosine as more inputs), on made-up rows."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[2]
sys.path[:0] = [str(ROOT / "scripts"), str(ROOT / "bench")]

import second_opinion  # noqa: E402
import train_cache_verifier as train  # noqa: E402


def rows(n: int = 400, seed: int = 3) -> tuple[np.ndarray, np.ndarray]:
    """Column 0 a cosine in [0.6, 1), column 1 a measure that tells duplicates apart (with noise)."""
    rng = np.random.default_rng(seed)
    labels = rng.random(n) < 0.4
    cosine = 0.6 + 0.4 * rng.random(n)
    measure = labels + rng.normal(scale=0.7, size=n)
    return np.stack([cosine, measure], axis=1), labels


def test_choose_keeps_to_the_floors_given_and_scores_nothing_below_them() -> None:
    x, labels = rows()
    hand_x, hand_labels = x[:10], labels[:10]
    choice = train.choose(x, labels, hand_x, hand_labels, floors=(0.8,), verbose=False)
    assert choice.floor == 0.8 and choice.l2 in train.L2_GRID and choice.hand_weight in train.HAND_WEIGHTS
    scores = train.scored(choice.model, choice.floor, x)
    assert np.isneginf(scores[x[:, 0] < 0.8]).all() and np.isfinite(scores[x[:, 0] >= 0.8]).all()
    assert choice.model.weights[1] > 0  # the telling measure counts for a duplicate
    kept = x[:, 0] >= 0.8
    assert scores[kept & labels].mean() > scores[kept & ~labels].mean()


def test_calibration_takes_the_lowest_bar_within_the_margin_of_each_target() -> None:
    x, labels = rows(2000)
    scores = np.where(x[:, 0] >= 0.7, x[:, 1], -np.inf)
    table = train.calibration(scores, labels, verbose=False)
    assert [target for target, _ in table] == list(train.TARGETS)
    negatives = ~labels
    for target, bar in table:
        rate = ((scores >= bar) & negatives).sum() / negatives.sum()
        assert rate <= train.MARGIN * target + 1e-12
        lower = scores[np.isfinite(scores) & (scores < bar)]
        if len(lower):  # the next bar down serves one more pair and breaks the margin
            below = ((scores >= lower.max()) & negatives).sum() / negatives.sum()
            assert below > train.MARGIN * target
            served = scores[scores >= bar].min()  # the bar sits halfway between the two scores
            assert bar - lower.max() > 1e-7 and served - bar > 1e-7
            assert bar == round(bar, 6) or served - lower.max() < 2e-6
    bars = [bar for _, bar in table]
    assert bars == sorted(bars, reverse=True)  # a larger accepted rate never asks for a higher bar


def test_a_bar_keeps_to_six_decimals_only_where_the_rounding_stays_between_the_two_scores() -> None:
    labels = np.array([True, False, True, False])
    close = train.calibration(np.array([0.9, 0.5000004, 0.5000009, 0.1]), labels, verbose=False)
    assert dict(close)[0.2] == (0.5000009 + 0.5000004) / 2  # rounding would land on a score: kept exact
    wide = train.calibration(np.array([0.9, 0.41, 0.6, 0.1]), labels, verbose=False)
    assert dict(wide)[0.2] == 0.505


def test_a_second_cosine_enters_alone_and_times_the_first_and_counts_zero_where_not_measured() -> None:
    x = np.array([[0.9, 5.0], [0.5, 6.0]])
    out = second_opinion.with_second(x, np.array([0.8, np.nan]))
    assert out.shape == (2, 4)
    np.testing.assert_allclose(out[:, :2], x)
    np.testing.assert_allclose(out[0, 2:], [0.8, 0.8 * 0.9])
    np.testing.assert_allclose(out[1, 2:], [0.0, 0.0])
