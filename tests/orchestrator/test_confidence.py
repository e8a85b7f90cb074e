"""The confidence score: measures from token logprobs, calibration, bars chosen from a target."""

from __future__ import annotations

import math

import numpy as np
import pytest

from groupqwen.errors import ConfigError
from groupqwen.messages import TokenLogprob, TopLogprob
from groupqwen.orchestrator import weights
from groupqwen.orchestrator.classifier import Logistic, fit
from groupqwen.orchestrator.confidence import MEASURES, Calibration, Scorer, measures


def token(logprob: float, *alternatives: float) -> TokenLogprob:
    top = tuple(TopLogprob("t", lp, ()) for lp in (logprob, *alternatives))
    return TokenLogprob("t", logprob, (), top)


def test_measures_of_sure_and_unsure_answers() -> None:
    sure = measures([token(-0.01, -6.0), token(-0.02, -5.0)])
    unsure = measures([token(-0.9, -1.0, -1.2), token(-2.5, -0.3)])
    names = dict(zip(MEASURES, range(len(MEASURES)), strict=True))
    assert sure[names["mean_logprob"]] > unsure[names["mean_logprob"]]
    assert sure[names["mean_entropy"]] < unsure[names["mean_entropy"]]
    assert sure[names["mean_margin"]] > 4 and unsure[names["min_margin"]] < 0.2
    assert unsure[names["unsure_share"]] == 1.0 and sure[names["unsure_share"]] == 0.0
    assert measures([]).shape == sure.shape  # an empty answer still has measures


def test_uncalibrated_score_is_geometric_mean_probability() -> None:
    scorer = Scorer()
    assert scorer.score("any", [token(math.log(0.5)), token(math.log(0.5))]) == pytest.approx(0.5)
    assert scorer.score("any", []) == 0.0


def test_fit_separates_and_calibration_round_trips() -> None:
    rng = np.random.default_rng(0)
    x = rng.normal(size=(200, 2))
    y = (x[:, 0] + 0.2 * rng.normal(size=200) > 0).astype(float)
    model = fit(x, y, l2=0.1)
    assert model.probability(np.asarray([2.0, 0.0])) > 0.9 > 0.1 > model.probability(np.asarray([-2.0, 0.0]))
    again = Logistic.from_json(model.to_json())
    assert again.probability(np.asarray([0.3, 0.1])) == pytest.approx(
        model.probability(np.asarray([0.3, 0.1])), abs=1e-4
    )


def test_bar_from_target_interpolates_the_table() -> None:
    model = Logistic((0.0,) * len(MEASURES), 0.0, (0.0,) * len(MEASURES), (1.0,) * len(MEASURES))
    calibration = Calibration(model, ((0.0, 0.9), (0.1, 0.5), (0.2, 0.3)))
    assert calibration.bar_for(0.05) == pytest.approx(0.7)
    assert calibration.bar_for(0.0) == 0.9 and calibration.bar_for(0.5) == 0.3
    assert Calibration.from_json(calibration.to_json()).bars == calibration.bars


def test_shipped_weights_are_calibrated_and_ordered() -> None:
    shipped = weights.load()
    small = shipped.scorer.calibrations["qwen2.5-coder-0.5b"]  # the default first tier
    sure = [token(-0.01, -7.0)] * 3
    unsure = [token(-1.5, -0.5, -0.9)] * 3
    assert 0 <= small.score(unsure) < small.score(sure) <= 1
    bars = [b for _, b in small.bars]
    assert bars == sorted(bars, reverse=True)  # a looser target never needs a stricter bar


def test_broken_weights_file_is_a_config_error(tmp_path: object) -> None:
    from pathlib import Path

    path = Path(str(tmp_path)) / "w.json"
    path.write_text('{"features": {"dense": ["x"], "hash_buckets": 3}}')
    with pytest.raises(ConfigError, match=r"router\.weights"):
        weights.load(path)
    path.write_text("not json")
    with pytest.raises(ConfigError, match=r"router\.weights"):
        weights.load(path)
