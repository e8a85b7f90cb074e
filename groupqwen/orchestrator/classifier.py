"""A logistic model small enough to read: standardised inputs, one weight each, a bias.

Used twice: the router's complexity and thinking heads (inputs from ``features.vector``) and the
confidence calibration (inputs from ``confidence.measures``). ``fit`` is plain numpy gradient descent with
L2, deterministic; training lives in ``scripts/train_router.py``, the weights ship as JSON beside this
module (``data/router.json``) and are read once at start-up by ``load_json``.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from groupqwen.errors import ConfigError

Array = npt.NDArray[np.float64]
DATA_DIR = Path(__file__).parent / "data"


@dataclass(frozen=True)
class Logistic:
    """``p = sigmoid(bias + Σ weight_i · (x_i - mean_i) / scale_i)``."""

    weights: tuple[float, ...]
    bias: float
    mean: tuple[float, ...]
    scale: tuple[float, ...]

    def _standard(self, x: Array) -> Array:
        if x.shape[-1] != len(self.weights):
            raise ValueError(f"expected {len(self.weights)} inputs, got {x.shape[-1]}")
        standard: Array = (x - np.asarray(self.mean)) / np.asarray(self.scale)
        return standard

    def logit(self, x: Array) -> float:
        return float(self.bias + self._standard(x) @ np.asarray(self.weights))

    def probability(self, x: Array) -> float:
        return _sigmoid(self.logit(x))

    def contributions(self, x: Array, names: Sequence[str]) -> list[tuple[str, float]]:
        """The inputs that moved this prediction most, named, largest first (the explanation)."""
        parts = self._standard(x) * np.asarray(self.weights)
        order = np.argsort(-np.abs(parts))
        return [(names[i] if i < len(names) else f"word#{i - len(names)}", float(parts[i])) for i in order]

    def to_json(self) -> dict[str, Any]:
        return {
            "weights": [round(w, 6) for w in self.weights],
            "bias": round(self.bias, 6),
            "mean": [round(m, 6) for m in self.mean],
            "scale": [round(s, 6) for s in self.scale],
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Logistic:
        weights, mean, scale = data["weights"], data["mean"], data["scale"]
        if not (len(weights) == len(mean) == len(scale)) or any(s <= 0 for s in scale):
            raise ValueError("weights, mean and scale must have one positive-scaled entry per input")
        return cls(
            tuple(map(float, weights)), float(data["bias"]), tuple(map(float, mean)), tuple(map(float, scale))
        )


def _sigmoid(z: float) -> float:
    if z >= 0:
        return 1.0 / (1.0 + math.exp(-z))
    e = math.exp(z)
    return e / (1.0 + e)


def fit(
    x: Array,
    y: Array,
    *,
    l2: float = 1.0,
    steps: int = 3000,
    lr: float = 0.5,
    weight: Array | None = None,
    use: npt.NDArray[np.bool_] | None = None,
) -> Logistic:
    """Fit by full-batch gradient descent on the (sample-weighted) mean log-loss plus ``l2/n·|w|²``.

    ``use`` (booleans, one per input) keeps only those inputs: the others get weight 0, so the model still
    reads the whole vector (feature selection without another file format)."""
    n, d = x.shape
    keep = np.ones(d, bool) if use is None else np.asarray(use, bool)
    mean = np.where(keep, x.mean(axis=0), 0.0)
    scale = np.where(keep, x.std(axis=0), 1.0)
    scale[scale < 1e-9] = 1.0
    z = ((x - mean) / scale)[:, keep]
    w = np.zeros(z.shape[1])
    b = 0.0
    sw = np.ones(n) if weight is None else weight / weight.mean()
    step = lr / (1.0 + l2 / n)  # a strong L2 would otherwise overshoot
    for _ in range(steps):
        p = 1.0 / (1.0 + np.exp(-np.clip(z @ w + b, -50.0, 50.0)))
        g = (p - y) * sw
        w -= step * (z.T @ g / n + l2 * w / n)
        b -= step * float(g.mean())
    full = np.zeros(d)
    full[keep] = w
    return Logistic(tuple(map(float, full)), b, tuple(map(float, mean)), tuple(map(float, scale)))


def probabilities(model: Logistic, x: Array) -> Array:
    """``model.probability`` of each row of ``x``."""
    z = model.bias + ((x - np.asarray(model.mean)) / np.asarray(model.scale)) @ np.asarray(model.weights)
    out: Array = 1.0 / (1.0 + np.exp(-np.clip(z, -50.0, 50.0)))
    return out


def folds(n: int, k: int, seed: int = 0) -> npt.NDArray[np.int64]:
    """A fold number in ``0..k-1`` for each of ``n`` rows: balanced, shuffled with a fixed seed."""
    assignment = np.arange(n) % k
    np.random.default_rng(seed).shuffle(assignment)
    return assignment


def cross_validated(
    x: Array,
    y: Array,
    fold: npt.NDArray[np.int64],
    *,
    l2: float,
    weight: Array | None = None,
    use: npt.NDArray[np.bool_] | None = None,
    extra: tuple[Array, Array, Array] | None = None,
) -> Array:
    """Out-of-fold probabilities: each row predicted by a model fitted without its fold. ``extra`` (inputs,
    labels, sample weights) joins every training fold and is never predicted (a synthetic corpus)."""
    out = np.zeros(len(y))
    w = np.ones(len(y)) if weight is None else weight
    for k in np.unique(fold):
        train, held = fold != k, fold == k
        xs, ys, ws = x[train], y[train], w[train]
        if extra is not None:
            xs, ys, ws = (
                np.concatenate([extra[0], xs]),
                np.concatenate([extra[1], ys]),
                np.concatenate([extra[2], ws]),
            )
        out[held] = probabilities(fit(xs, ys, l2=l2, weight=ws, use=use), x[held])
    return out


def log_loss(p: Array, y: Array) -> float:
    q = np.clip(p, 1e-6, 1 - 1e-6)
    return float(-np.mean(y * np.log(q) + (1 - y) * np.log(1 - q)))


def auc(p: Array, y: Array) -> float:
    """Area under the ROC curve: the chance a positive row scores above a negative one (ties: half)."""
    pos, neg = p[y > 0.5], p[y <= 0.5]
    if not len(pos) or not len(neg):
        return float("nan")
    wins = (pos[:, None] > neg[None, :]).sum() + 0.5 * (pos[:, None] == neg[None, :]).sum()
    return float(wins / (len(pos) * len(neg)))


def load_json(path: Path) -> dict[str, Any]:
    """Read a shipped or configured weights file; a missing or broken one is a ``ConfigError``."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise ConfigError([("router.weights", f"cannot read {path}: {exc}")]) from exc
    if not isinstance(data, dict):
        raise ConfigError([("router.weights", f"{path} must hold a JSON object")])
    return data
