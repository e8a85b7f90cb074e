"""Training the router: feature selection by cross-validation, out-of-fold scores, the targets' tables,
and the arithmetic features the classifier uses to tell where the large model wins."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

from groupqwen.config import load_settings
from groupqwen.messages import ChatRequest, Message
from groupqwen.orchestrator import features, weights
from groupqwen.orchestrator.classifier import (
    Logistic,
    auc,
    cross_validated,
    fit,
    folds,
    log_loss,
    probabilities,
)
from groupqwen.orchestrator.confidence import MEASURES, Calibration, Scorer

ROOT = Path(__file__).resolve().parents[2]
sys.path[:0] = [str(ROOT / "scripts"), str(ROOT / "bench")]

import train_router  # noqa: E402


def arithmetic(text: str) -> dict[str, float]:
    v = features.vector(features.extract(ChatRequest(messages=(Message("user", text),), model="auto")))
    return {name: float(v[features.DENSE.index(name)]) for name in train_router.ARITHMETIC}


def test_arithmetic_features_tell_one_operation_from_several() -> None:
    assert arithmetic("What is 47 + 25?") == {
        "single_operation": 1.0, "multi_step": 0.0, "operand_digits": 2.0, "one_digit_operands": 0.0,
        "round_operands": 0.0,
    }  # fmt: skip
    assert arithmetic("What is 3 * 7?")["one_digit_operands"] == 1.0
    two_step = arithmetic("What is 123 + 45 * 6?")
    assert two_step["multi_step"] == 1.0 and two_step["single_operation"] == 0.0
    assert two_step["operand_digits"] == 3.0
    assert arithmetic("What is 80 * 30?")["round_operands"] == 1.0
    assert set(arithmetic("What is the capital of France? It has 2 airports.").values()) == {0.0}


def test_fit_uses_only_the_chosen_inputs() -> None:
    rng = np.random.default_rng(1)
    x = rng.normal(size=(300, 3))
    y = (x[:, 0] + x[:, 2] > 0).astype(float)
    model = fit(x, y, l2=0.1, use=np.asarray([True, True, False]))
    assert model.weights[2] == 0.0 and model.mean[2] == 0.0 and model.scale[2] == 1.0
    assert model.weights[0] > 1.0
    assert probabilities(model, x[:5]) == pytest.approx([model.probability(r) for r in x[:5]])


def test_strong_l2_does_not_diverge() -> None:
    rng = np.random.default_rng(2)
    x = rng.normal(size=(50, 4))
    model = fit(x, (x[:, 0] > 0).astype(float), l2=1e4)
    assert all(np.isfinite(model.weights)) and max(map(abs, model.weights)) < 0.5


def test_folds_are_balanced_and_reproducible() -> None:
    fold = folds(23, 5)
    assert sorted(np.bincount(fold).tolist()) == [4, 4, 5, 5, 5]
    assert (fold == folds(23, 5)).all() and not (fold == folds(23, 5, seed=1)).all()


def test_cross_validation_exposes_memorised_noise() -> None:
    """Many inputs and a weak L2 fit random labels perfectly; out-of-fold scores show it is chance."""
    rng = np.random.default_rng(3)
    x = rng.normal(size=(80, 60))
    y = (rng.random(80) < 0.5).astype(float)
    train = probabilities(fit(x, y, l2=0.01), x)
    held = cross_validated(x, y, folds(80, 5), l2=0.01)
    assert auc(train, y) > 0.99 and log_loss(train, y) < 0.1
    assert 0.25 < auc(held, y) < 0.75 and log_loss(held, y) > 0.6


def test_cross_validation_adds_extra_rows_to_every_training_fold() -> None:
    """The calibration rows alone carry no signal here; the extra (synthetic) rows do, and only they can
    have taught the held-out predictions."""
    x = np.asarray([[0.0]] * 10)
    y = np.asarray([0.0, 1.0] * 5)
    extra = (np.asarray([[-1.0], [1.0]] * 20), np.asarray([0.0, 1.0] * 20), np.ones(40))
    held = cross_validated(np.asarray([[-1.0], [1.0]] * 5), y, folds(10, 5), l2=0.1, extra=extra)
    assert (held[y == 1] > 0.8).all() and (held[y == 0] < 0.2).all()
    assert cross_validated(x, y, folds(10, 5), l2=0.1) == pytest.approx([0.5] * 10, abs=0.15)


def test_auc_counts_ties_as_half() -> None:
    y = np.asarray([1.0, 1.0, 0.0, 0.0])
    assert auc(np.asarray([0.9, 0.8, 0.2, 0.1]), y) == 1.0
    assert auc(np.asarray([0.5, 0.5, 0.5, 0.5]), y) == 0.5
    assert np.isnan(auc(np.asarray([0.5]), np.asarray([1.0])))


def test_auto_table_meets_each_target_with_the_fewest_calls_to_large() -> None:
    # rows 0–3: the large model wins and only the classifier sees it (the small model is wrong but sure);
    # row 4: a win only the small model's low confidence reveals; rows 5–9: the small model is right
    gain = np.asarray([0.9, 0.9, 0.9, 0.9, 0.1, 0.1, 0.1, 0.1, 0.1, 0.1])
    confidence = np.asarray([0.95, 0.95, 0.95, 0.95, 0.05, 0.9, 0.9, 0.9, 0.9, 0.9])
    small_ok = np.asarray([False] * 5 + [True] * 5)
    large_ok = np.asarray([True] * 5 + [False] * 5)
    table = dict((t, (e, b)) for t, e, b in train_router.auto_table(gain, confidence, small_ok, large_ok))
    edge, bar = table[0.0]
    assert 0.1 <= edge < 0.9 and 0.05 < bar <= 0.9  # direct for the classifier's wins, escalate row 4
    edge, bar = table[0.1]
    assert 0.1 <= edge < 0.9 and bar <= 0.05  # one loss in ten allowed: no escalation needed
    assert table[0.3] == table[0.1]  # keeping all five wins small would lose 50 %, over the target
    assert table[0.1][0] == 0.875  # of equal pairs, the highest max_complexity (fewest direct calls)


def test_bars_table_keeps_worse_answers_within_the_target() -> None:
    scores = np.asarray([0.9, 0.8, 0.3, 0.2])
    small_ok = np.asarray([True, False, False, True])
    large_ok = np.asarray([True, True, True, False])
    table = dict(train_router.bars_table(scores, small_ok, large_ok))
    assert table[0.0] == pytest.approx(0.9, abs=1e-5)  # keeping the 0.8 answer would lose one in four
    assert table[0.3] == pytest.approx(0.8, abs=1e-5)  # one in four may be lost, not two: not 0.3


def test_auto_pair_is_read_without_interpolation() -> None:
    model = Logistic((0.0,) * len(MEASURES), 0.0, (0.0,) * len(MEASURES), (1.0,) * len(MEASURES))
    calibration = Calibration(model, auto=((0.0, 0.2, 0.6), (0.05, 0.4, 0.3), (0.1, 0.6, 0.1)))
    assert calibration.auto_for(0.07) == (0.4, 0.3)  # the strictest row that meets 7 %
    assert calibration.auto_for(0.1) == (0.6, 0.1) and calibration.auto_for(0.5) == (0.6, 0.1)
    assert Calibration.from_json(calibration.to_json()).auto == calibration.auto
    assert Calibration(model).auto_for(0.1) is None and Scorer().auto("any", 0.1) is None


def test_early_bars_cut_no_answer_the_bar_keeps() -> None:
    """Per grid bar and prefix length: the lowest prefix score among the answers that bar keeps (NaN: the
    answer is shorter), 1.0 where it keeps none; so on the data no kept answer falls under an early bar."""
    running = np.asarray([0.9, 0.8, 0.4, 0.2])
    early = np.asarray([[0.7, 0.95], [0.6, np.nan], [0.1, 0.3], [0.5, 0.2]])
    table = dict(train_router.early_table(running, early))
    assert table[0.75] == (0.6, 0.95)  # kept: the first two; the second has one token
    assert table[0.85] == (0.7, 0.95) and table[0.0] == (0.1, 0.2) and table[1.0] == (1.0, 1.0)
    for bar, lowest in table.items():
        kept = early[running >= bar]
        assert all(np.isnan(v) or v >= b for row in kept for v, b in zip(row, lowest, strict=True))


def test_early_bar_reads_the_row_below_the_bar_and_never_exceeds_it() -> None:
    model = Logistic((0.0,) * len(MEASURES), 0.0, (0.0,) * len(MEASURES), (1.0,) * len(MEASURES))
    calibration = Calibration(model, early=((0.5, (0.3, 0.4)), (0.75, (0.6, 0.9))))
    assert calibration.early_bar(0.754, 1) == 0.6  # the 0.75 row (it kept more than 0.754 would)
    assert calibration.early_bar(0.754, 2) == 0.754  # 0.9, capped at the bar itself
    assert calibration.early_bar(0.7, 2) == 0.4 and calibration.early_bar(0.7, 3) is None
    assert calibration.early_bar(0.4, 1) is None  # below the table's first bar: no early check
    assert Calibration.from_json(calibration.to_json()).early == calibration.early
    assert Calibration(model).early_bar(0.5, 1) is None and Scorer().early_bar("any", 0.5, 1) is None


def test_router_json_is_what_the_repositorys_data_rebuild() -> None:
    """scripts/train_router.py --check: the shipped weights are reproduced byte for byte from the data in
    the repository (the held-out splits unread)."""
    import subprocess

    result = subprocess.run(
        [sys.executable, "scripts/train_router.py", "--check"], cwd=ROOT, capture_output=True, text=True
    )
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    assert "up to date" in result.stdout


SMALL, LARGE = "qwen2.5-coder-0.5b", "qwen2.5-coder-1.5b"  # the default ladder, as the tables were measured


def test_the_default_ladder_is_the_qwen_pair_at_its_measured_pair(tmp_path: Path) -> None:
    """0.5B first, 1.5B on escalation, at the (max_complexity, bar) the shipped table measured for the
    default target (2 %)."""
    policy = weights.routing_from_settings(load_settings(models_dir=tmp_path)).router.policy
    assert [t.model for t in policy.tiers] == [SMALL, LARGE]
    pair = weights.load().scorer.auto(SMALL, 0.02)
    assert pair is not None and (policy.tiers[0].max_complexity, policy.tiers[0].bar) == pytest.approx(pair)
    assert policy.tiers[1].bar is None and policy.routes["auto:tiny"] == "smollm2-135m"


def test_tiers_take_the_pair_measured_for_their_target(tmp_path: Path) -> None:
    shipped = weights.load().scorer
    pair = shipped.auto(SMALL, 0.1)
    assert pair is not None
    settings = load_settings(
        models_dir=tmp_path, router={"tiers": [{"model": SMALL, "target": 0.1}, {"model": LARGE}]}
    )
    small = weights.routing_from_settings(settings).router.policy.tiers[0]
    assert (small.max_complexity, small.bar) == pytest.approx(pair)
    tiers: list[dict[str, object]] = [
        {"model": SMALL, "max_complexity": 0.7, "target": 0.05},
        {"model": LARGE},
    ]
    settings = load_settings(models_dir=tmp_path, router={"tiers": tiers})
    small = weights.routing_from_settings(settings).router.policy.tiers[0]
    assert small.max_complexity == 0.7 and small.bar == pytest.approx(shipped.bar(SMALL, 0.05))
    tiers[0] = {"model": SMALL, "bar": 0.42, "target": 0.1}
    routing = weights.routing_from_settings(load_settings(models_dir=tmp_path, router={"tiers": tiers}))
    assert routing.router.policy.tiers[0].bar == 0.42
    assert routing.router.policy.tiers[0].max_complexity == pytest.approx(pair[0])


def test_shipped_classifier_was_chosen_by_cross_validation() -> None:
    import json

    from groupqwen.orchestrator.weights import SHIPPED

    trained = json.loads(SHIPPED.read_text())["trained_on"]
    scores = trained["complexity"]
    assert trained["complexity_label"] == "large model right and small model wrong"
    assert scores["cv_log_loss"] >= scores["train_log_loss"] - 0.05  # reported honestly, both
    assert scores["train_auc"] < 1.0  # no longer memorises its training rows


def test_rules_keep_their_own_edge_and_the_cascade_bar(tmp_path: Path) -> None:
    """The auto pair was measured on the classifier's scale; with the classifier off, the rules keep the
    edge 0.5 and the tier escalates at the cascade-alone bar for its target."""
    settings = load_settings(models_dir=tmp_path, router={"classifier": False})
    small = weights.routing_from_settings(settings).router.policy.tiers[0]
    assert small.max_complexity == weights.RULES_EDGE == 0.5
    assert small.bar == pytest.approx(weights.load().scorer.bar(SMALL, 0.02))
