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
    x: Array, y: Array, *, l2: float = 1.0, steps: int = 3000, lr: float = 0.5, weight: Array | None = None
) -> Logistic:
    """Fit by full-batch gradient descent on the (sample-weighted) mean log-loss plus ``l2/n·|w|²``."""
    n, d = x.shape
    mean = x.mean(axis=0)
    scale = x.std(axis=0)
    scale[scale < 1e-9] = 1.0
    z = (x - mean) / scale
    w = np.zeros(d)
    b = 0.0
    sw = np.ones(n) if weight is None else weight / weight.mean()
    for _ in range(steps):
        p = 1.0 / (1.0 + np.exp(-(z @ w + b)))
        g = (p - y) * sw
        w -= lr * (z.T @ g / n + l2 * w / n)
        b -= lr * float(g.mean())
    return Logistic(tuple(map(float, w)), b, tuple(map(float, mean)), tuple(map(float, scale)))


def load_json(path: Path) -> dict[str, Any]:
    """Read a shipped or configured weights file; a missing or broken one is a ``ConfigError``."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise ConfigError([("router.weights", f"cannot read {path}: {exc}")]) from exc
    if not isinstance(data, dict):
        raise ConfigError([("router.weights", f"{path} must hold a JSON object")])
    return data
