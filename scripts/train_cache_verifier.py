"""Fit the cache's verifier and its calibration; write ``groupqwen/cache/data/cache_verifier.json``.

    nice .venv/bin/python scripts/train_cache_verifier.py [--data shared/data/qqp_dev.jsonl]

Inputs: Quora Question Pairs (``bench/qqp.py``: the ``tune`` part fits the weights, the ``calibrate`` part
maps accepted false-hit rates to bars; the ``heldout`` part is never read here) and the project's
hand-made tuning pairs (``bench/data/cache_pairs.tsv``: negations, swaps, numbers, entities), which may
join the training rows with a weight each (``HAND_WEIGHTS``, 0: not at all); the hand-made held-out pairs
are never read here either.

The model sees only candidates (cosine ≥ its floor): the pairs a lookup would verify. The floor (``FLOORS``),
the hand-made pairs' weight and the L2 strength are chosen by ``K``-fold cross-validation on the tune part
(the recall at a 1 % false-hit rate, pair-level over all of a fold's pairs, the way ``bench/cache_quality.py``
reports). The calibration table: for each target rate, the lowest bar whose false-hit rate on the calibrate
part (non-duplicates served, over all of them) stays within ``MARGIN`` × the target, so that the rate holds on
pairs the fit never saw.
Deterministic: the same data give the same file.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import numpy.typing as npt

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "bench")]

import qqp  # noqa: E402

from groupqwen.cache.embedders import MiniLMEmbedder  # noqa: E402
from groupqwen.cache.guard import LexicalGuard, parse  # noqa: E402
from groupqwen.cache.keys import normalise  # noqa: E402
from groupqwen.cache.verifier import DATA_FILE, INPUTS, Idf, features  # noqa: E402
from groupqwen.orchestrator.classifier import Logistic, folds, probabilities  # noqa: E402

Array = npt.NDArray[np.float64]
Bools = npt.NDArray[np.bool_]
HAND = ROOT / "bench" / "data" / "cache_pairs.tsv"
HAND_WEIGHTS = (0.0, 2.0)
K = 4
FLOORS = (0.70, 0.80, 0.85)
L2_GRID = (1.0, 10.0)
TARGETS = (0.0025, 0.005, 0.0075, 0.01, 0.015, 0.02, 0.03, 0.05, 0.075, 0.1, 0.15, 0.2)
MARGIN = 0.8


def fit(x: Array, y: Array, *, l2: float, weight: Array, iterations: int = 25) -> Logistic:
    """Logistic regression by Newton's method (few inputs: exact, and deterministic) on standardised
    inputs, with ``l2/2·|w|²`` (not on the bias) and sample weights."""
    mean, scale = x.mean(axis=0), x.std(axis=0)
    scale[scale < 1e-9] = 1.0
    z = np.hstack([(x - mean) / scale, np.ones((len(x), 1))])
    penalty = l2 * np.eye(z.shape[1])
    penalty[-1, -1] = 0.0
    beta = np.zeros(z.shape[1])
    for _ in range(iterations):
        p = 1.0 / (1.0 + np.exp(-np.clip(z @ beta, -50.0, 50.0)))
        gradient = z.T @ (weight * (p - y)) + penalty @ beta
        hessian = (z * (weight * p * (1 - p))[:, None]).T @ z + penalty
        beta -= np.linalg.solve(hessian, gradient)
    return Logistic(
        tuple(map(float, beta[:-1])), float(beta[-1]), tuple(map(float, mean)), tuple(map(float, scale))
    )


def document_frequencies(questions: set[str]) -> Idf:
    """How many of ``questions`` hold each content word (words in fewer than two are left out)."""
    counts: Counter[str] = Counter()
    for question in questions:
        counts.update(set(parse(question).content))
    return Idf(len(questions), {w: n for w, n in sorted(counts.items()) if n >= 2})


def matrix(a: list[str], b: list[str], cosine: Array, idf: Idf) -> Array:
    guard = LexicalGuard()
    rows = [features(x, y, float(c), guard, idf) for x, y, c in zip(a, b, cosine, strict=True)]
    return np.stack(rows) if rows else np.zeros((0, len(INPUTS)))


def recall_at(scores: Array, labels: Bools, rate: float) -> float:
    """The recall at the lowest bar whose false-hit rate is within ``rate`` (``scores``: -inf below the
    floor, never served)."""
    negatives = np.sort(scores[~labels])[::-1]
    allowed = int(np.floor(rate * len(negatives)))
    bar = negatives[allowed] if allowed < len(negatives) else -np.inf
    served = scores > bar
    return float((served & labels).sum() / max(1, labels.sum()))


def hand_pairs() -> tuple[list[str], list[str], Bools]:
    a, b, labels = [], [], []
    for line in HAND.read_text(encoding="utf-8").splitlines():
        if line.startswith("#") or not line.strip() or line.startswith("label"):
            continue
        label, _, query, cached = line.split("\t")
        a.append(normalise(query))
        b.append(normalise(cached))
        labels.append(label == "1")
    return a, b, np.array(labels)


@dataclass(frozen=True)
class Choice:
    """The cross-validated choice: its recall at 1 %, floor, L2 and hand-made weight, and the model refitted
    with them on all the rows."""

    recall: float
    floor: float
    l2: float
    hand_weight: float
    model: Logistic


def scored(model: Logistic, floor: float, inputs: Array) -> Array:
    """The model's probability for each row (column 0: the cosine); -inf below ``floor``."""
    return np.where(inputs[:, 0] >= floor, probabilities(model, inputs), -np.inf)


def choose(
    x: Array,
    labels: Bools,
    hand_x: Array,
    hand_labels: Bools,
    *,
    floors: tuple[float, ...] = FLOORS,
    verbose: bool = True,
) -> Choice:
    """``floors`` × ``L2_GRID`` × ``HAND_WEIGHTS`` by ``K``-fold cross-validation on the rows ``x`` (column
    0: the cosine, which the floor applies to), the best refitted on all of them."""
    y = labels.astype(np.float64)
    fold = folds(len(y), K)

    def fitted(rows: Bools, floor: float, l2: float, hand_weight: float) -> Logistic:
        keep, hand = rows & (x[:, 0] >= floor), (hand_x[:, 0] >= floor) & (hand_weight > 0)
        weight = np.concatenate([np.ones(int(keep.sum())), np.full(int(hand.sum()), hand_weight)])
        xs = np.concatenate([x[keep], hand_x[hand]])
        ys = np.concatenate([y[keep], hand_labels[hand].astype(np.float64)])
        return fit(xs, ys, l2=l2, weight=weight)

    best: tuple[float, float, float, float] | None = None  # (recall, floor, l2, hand weight)
    for hand_weight in HAND_WEIGHTS:
        for floor in floors:
            for l2 in L2_GRID:
                scores = np.zeros(len(y))
                for k in range(K):
                    model = fitted(fold != k, floor, l2, hand_weight)
                    scores[fold == k] = scored(model, floor, x[fold == k])
                got = np.mean([recall_at(scores[fold == k], labels[fold == k], 0.01) for k in range(K)])
                if verbose:
                    print(
                        f"hand-made weight {hand_weight}, floor {floor}, l2 {l2}: CV recall at 1 % {got:.3f}"
                    )
                if best is None or got > best[0]:
                    best = (float(got), floor, l2, hand_weight)
    assert best is not None
    recall, floor, l2, hand_weight = best
    return Choice(recall, floor, l2, hand_weight, fitted(np.ones(len(y), bool), floor, l2, hand_weight))


def calibration(scores: Array, labels: Bools, *, verbose: bool = True) -> list[tuple[float, float]]:
    """(target, bar) for each of ``TARGETS``: the lowest bar whose false-hit rate on these pairs stays
    within ``MARGIN`` × the target. The bar is stored halfway between the lowest score it serves and the
    next score below (to 6 decimals where that stays between them), so that neither the file's rounding
    nor the last bits of another machine's arithmetic can move a pair across it."""
    negatives = ~labels
    candidates = sorted({*scores[np.isfinite(scores)].tolist(), 1.0})
    table = []
    for target in TARGETS:
        for index, bar in enumerate(candidates):
            served = scores >= bar
            rate = (served & negatives).sum() / negatives.sum()
            if rate <= MARGIN * target + 1e-12:
                recall = (served & labels).sum() / labels.sum()
                below = candidates[index - 1] if index else bar  # nothing below: the score itself
                middle = (bar + below) / 2
                short = round(middle, 6)
                table.append((target, short if below < short <= bar else middle))
                if verbose:
                    print(f"  {target:.4f} → {bar:.4f}: {rate:.4f}, {recall:.3f}")
                break
    return table


def stored(model: Logistic) -> Logistic:
    """``model`` as the file keeps it (6 decimals): the calibration scores with what the gateway will."""
    return Logistic(
        tuple(round(w, 6) for w in model.weights),
        round(model.bias, 6),
        tuple(round(m, 6) for m in model.mean),
        tuple(round(s, 6) for s in model.scale),
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--data", type=Path, default=qqp.DEFAULT_DATA)
    parser.add_argument("--out", type=Path, default=DATA_FILE)
    args = parser.parse_args()
    embedder = MiniLMEmbedder(threads=1)
    parts = qqp.load(args.data, embedder)
    tune, calibrate = parts["tune"], parts["calibrate"]
    idf = document_frequencies(set(tune.a) | set(tune.b))
    hand_a, hand_b, hand_labels = hand_pairs()
    hand_cos = (embedder.embed(hand_a) * embedder.embed(hand_b)).sum(axis=1).astype(np.float64)
    hand_x = matrix(hand_a, hand_b, hand_cos, idf)
    x = matrix(tune.a, tune.b, tune.cosine.astype(np.float64), idf)
    print(f"tune: {len(tune.labels)} pairs; hand-made: {len(hand_labels)} pairs")
    best = choose(x, tune.labels, hand_x, hand_labels)
    floor, l2, hand_weight, model = best.floor, best.l2, best.hand_weight, stored(best.model)

    scores = scored(model, floor, matrix(calibrate.a, calibrate.b, calibrate.cosine.astype(np.float64), idf))
    print(f"\ncalibration ({len(calibrate.labels)} calibrate pairs): target → bar: false hits, recall")
    table = calibration(scores, calibrate.labels)
    out = {
        "version": 1,
        "inputs": list(INPUTS),
        "embedder": embedder.name,
        "floor": floor,
        "weights": list(model.weights),
        "bias": model.bias,
        "mean": list(model.mean),
        "scale": list(model.scale),
        "calibration": table,
        "idf": {"documents": idf.documents, "df": idf.frequencies},
        "trained_on": {
            "tune_pairs": len(tune.labels),
            "hand_pairs": len(hand_labels),
            "hand_weight": hand_weight,
            "l2": l2,
            "cv_recall_at_1pct": round(best.recall, 4),
            "calibrate_pairs": len(calibrate.labels),
            "margin": MARGIN,
        },
    }
    args.out.write_text(json.dumps(out, separators=(",", ":")) + "\n", encoding="utf-8")
    print(f"\nwrote {args.out}")


if __name__ == "__main__":
    main()
