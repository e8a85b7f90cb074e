"""Train the router's classifier and calibrate the confidence score; write ``orchestrator/data/router.json``.

    .venv/bin/python scripts/train_router.py

Inputs, all shipped in the repo (no downloads):
- ``scripts/router_corpus.py``: synthetic prompts labelled ``complex`` / ``think``;
- ``bench/data/routing_questions.jsonl`` + ``bench/data/routing_answers.json`` (``bench/routing_collect.py``):
  the bundled models' answers to the *calibration* split. A question the small model got wrong is labelled
  ``complex`` (it needs more than the fast tier); each model's answers, checked against the known answer,
  calibrate its confidence score; the small model's ``bars`` table maps a target ("at most X of answers
  worse than the top tier's") to the lowest bar that met it on this split.
The *test* split is never read here: ``bench/routing.py`` reports on it.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "bench"), str(ROOT / "scripts")]

from router_corpus import corpus  # noqa: E402
from routing_questions import is_correct  # noqa: E402

from groupqwen.messages import ChatRequest, Message, TokenLogprob, TopLogprob  # noqa: E402
from groupqwen.orchestrator import features  # noqa: E402
from groupqwen.orchestrator.classifier import DATA_DIR, fit  # noqa: E402
from groupqwen.orchestrator.confidence import Calibration, measures  # noqa: E402

QUESTIONS = ROOT / "bench" / "data" / "routing_questions.jsonl"
ANSWERS = ROOT / "bench" / "data" / "routing_answers.json"
SMALL, LARGE = "smollm2-135m", "qwen2.5-coder-0.5b"
TARGETS = (0.0, 0.01, 0.02, 0.03, 0.05, 0.075, 0.1, 0.15, 0.2, 0.3)


def request_of(question: str, system: str | None = None) -> ChatRequest:
    messages = ((Message("system", system),) if system else ()) + (Message("user", question),)
    return ChatRequest(messages=messages, model="auto")


def tokens_of(raw: list[Any]) -> list[TokenLogprob]:
    return [TokenLogprob("", lp, (), tuple(TopLogprob("", t, ()) for t in top)) for lp, top in raw]


def load_bench(split: str) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    questions = [json.loads(line) for line in QUESTIONS.read_text(encoding="utf-8").splitlines()]
    answers = json.loads(ANSWERS.read_text(encoding="utf-8"))
    return [q for q in questions if q["split"] == split], answers


def bars_table(scores: np.ndarray, small_ok: np.ndarray, large_ok: np.ndarray) -> list[tuple[float, float]]:
    """For each target, the lowest bar whose kept answers are worse than the large model's on at most
    that share of all questions."""
    n = len(scores)
    worse = (~small_ok) & large_ok
    candidates = sorted({0.0, *scores.tolist(), 1.0})
    table = []
    for target in TARGETS:
        for bar in candidates:
            if ((scores >= bar) & worse).sum() / n <= target + 1e-12:
                table.append((target, min(bar + 1e-6, 1.0)))
                break
    return table


def main() -> None:
    rows = corpus()
    calibration, answers = load_bench("calibration")
    system = answers["system"]
    small = answers["models"][SMALL]
    large = answers["models"][LARGE]
    small_ok = np.asarray([is_correct(small[q["id"]]["text"], q["answer"]) for q in calibration])
    large_ok = np.asarray([is_correct(large[q["id"]]["text"], q["answer"]) for q in calibration])

    # complexity head: synthetic prompts + the calibration questions labelled by the small model's success
    x_syn = np.stack([features.vector(features.extract(request_of(p))) for p, _, _ in rows])
    x_bench = np.stack(
        [features.vector(features.extract(request_of(q["question"], system))) for q in calibration]
    )
    # "the small model got it wrong" (tried: "wrong and the large one right" — worse on the test split)
    y_complex = np.concatenate([np.asarray([c for _, c, _ in rows], float), (~small_ok).astype(float)])
    x_all = np.concatenate([x_syn, x_bench])
    weight = np.concatenate([np.ones(len(rows)), np.full(len(calibration), len(rows) / len(calibration))])
    complexity = fit(x_all, y_complex, l2=4.0, weight=weight)
    thinking = fit(x_syn, np.asarray([t for _, _, t in rows], float), l2=4.0)

    confidence: dict[str, Any] = {}
    for model, ok in ((SMALL, small_ok), (LARGE, large_ok)):
        m = np.stack([measures(tokens_of(answers["models"][model][q["id"]]["tokens"])) for q in calibration])
        logistic = fit(m, ok.astype(float), l2=2.0)
        scores = np.asarray([logistic.probability(row) for row in m])
        bars = bars_table(scores, small_ok, large_ok) if model == SMALL else []
        confidence[model] = Calibration(logistic, tuple(bars)).to_json()
        print(f"{model}: {ok.mean():.2f} right on calibration; bars {bars}")

    train_acc = ((np.asarray([complexity.probability(x) for x in x_all]) >= 0.5) == (y_complex > 0.5)).mean()
    out = {
        "version": 1,
        "features": {"dense": list(features.DENSE), "hash_buckets": features.HASH_BUCKETS},
        "complexity": complexity.to_json(),
        "thinking": thinking.to_json(),
        "confidence": confidence,
        "trained_on": {
            "synthetic_prompts": len(rows),
            "calibration_questions": len(calibration),
            "complexity_train_accuracy": round(float(train_acc), 3),
            "small_model": SMALL,
            "large_model": LARGE,
        },
    }
    path = DATA_DIR / "router.json"
    path.write_text(json.dumps(out, separators=(",", ":")) + "\n", encoding="utf-8")
    print(f"wrote {path} ({path.stat().st_size} bytes); complexity train accuracy {train_acc:.3f}")


if __name__ == "__main__":
    main()
