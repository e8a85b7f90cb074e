"""Train the router's classifier and calibrate the confidence score; write ``orchestrator/data/router.json``.

    .venv/bin/python scripts/train_router.py           # write it
    .venv/bin/python scripts/train_router.py --check   # exit 1 if the shipped file is not what it rebuilds

Inputs, all shipped in the repo (no downloads):
- ``scripts/router_corpus.py``: synthetic prompts labelled ``complex`` / ``think``;
- ``bench/data/routing_questions.jsonl`` + ``bench/data/routing_answers.json`` (``bench/routing_collect.py``):
  the bundled models' answers to the *calibration* split;
- the GSM8K answers cached by ``bench/routing_collect.py gsm8k`` (``bench/.cache/routing``, where present),
  *tune* split only (``bench/routing_gsm8k.py``: a third of the items, by hash, is held out): long answers
  with reasoning, so a model's confidence is calibrated on long answers as well as on one-to-three-token
  ones.

The complexity head estimates the probability that the large model *wins* — it answers right where the
small one answers wrong (RouteLLM's label) — so it learns where escalating pays, not merely where the small
model fails (on arithmetic the small model fails everything but the large one only wins on part of it).
Synthetic prompts keep their ``complex`` label (code, essays, proofs: where a larger model helps). The
inputs (dense measures with or without the arithmetic ones, with or without the hashed words) and the L2
strength are chosen by k-fold cross-validation on the calibration split only (log-loss; the synthetic
corpus joins every training fold and is never scored); the script prints train and cross-validated scores.

Each model's answers, checked against the known answer, calibrate its confidence score (L2 chosen the same
way). From out-of-fold classifier and confidence scores the small model gets tables: two for targets "at
most X of all answers worse than the large model's": ``bars`` (the cascade alone: the lowest bar that met
X) and ``auto`` (the classifier's ``max_complexity`` and the bar together: the pair that met X with the
fewest requests reaching the large model), and ``early``: per bar on the grid, the early bars the cascade
checks the first ``min_tokens`` - 1 prefixes against (the lowest out-of-fold prefix score among the answers
that bar keeps: on this data no answer the bar keeps is cut early).
The *test* split is never read here: ``bench/routing.py`` reports on it.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "bench"), str(ROOT / "scripts")]

import routing_long  # noqa: E402
from router_corpus import corpus  # noqa: E402
from routing_questions import is_correct  # noqa: E402

from groupqwen.config.router import RouterConfig  # noqa: E402
from groupqwen.messages import ChatRequest, Message, TokenLogprob, TopLogprob  # noqa: E402
from groupqwen.orchestrator import features  # noqa: E402
from groupqwen.orchestrator.classifier import (  # noqa: E402
    DATA_DIR,
    Array,
    auc,
    cross_validated,
    fit,
    folds,
    log_loss,
    probabilities,
)
from groupqwen.orchestrator.confidence import Calibration, EarlyRow, measures  # noqa: E402

QUESTIONS = ROOT / "bench" / "data" / "routing_questions.jsonl"
ANSWERS = ROOT / "bench" / "data" / "routing_answers.json"
LADDER = RouterConfig().tiers  # the default ladder of `auto`: its first tier is calibrated against its last
SMALL, LARGE = LADDER[0].model, LADDER[-1].model
TARGETS = (0.0, 0.01, 0.02, 0.03, 0.05, 0.075, 0.1, 0.15, 0.2, 0.3)
K = 5
L2_GRID = (0.25, 1.0, 4.0, 16.0, 64.0, 256.0, 1024.0)
GRID = np.round(np.linspace(0.0, 1.0, 41), 3)  # thresholds searched for the tables
EARLY = RouterConfig().min_tokens - 1  # prefix lengths with an early bar: those before the running check
Bools = npt.NDArray[np.bool_]
ARITHMETIC = ("single_operation", "multi_step", "operand_digits", "one_digit_operands", "round_operands")


def request_of(question: str, system: str | None = None) -> ChatRequest:
    messages = ((Message("system", system),) if system else ()) + (Message("user", question),)
    return ChatRequest(messages=messages, model="auto")


def tokens_of(raw: list[Any]) -> list[TokenLogprob]:
    return [TokenLogprob("", lp, (), tuple(TopLogprob("", t, ()) for t in top)) for lp, top in raw]


def load_bench(split: str) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    questions = [json.loads(line) for line in QUESTIONS.read_text(encoding="utf-8").splitlines()]
    answers = json.loads(ANSWERS.read_text(encoding="utf-8"))
    return [q for q in questions if q["split"] == split], answers


def feature_sets() -> dict[str, Bools]:
    """The input subsets cross-validation chooses from (masks over ``features.vector``)."""
    dense = np.zeros(features.size(), bool)
    dense[: len(features.DENSE)] = True
    # has_system is left out: in this training data it marks the source (every benchmark question carries
    # the benchmark's system prompt, no synthetic prompt has one), not how hard a request is
    dense[features.DENSE.index("has_system")] = False
    everything = np.ones(features.size(), bool)
    everything[features.DENSE.index("has_system")] = False
    plain = dense.copy()
    for name in ARITHMETIC:
        plain[features.DENSE.index(name)] = False
    return {"dense": plain, "dense+arithmetic": dense, "all (+ hashed words)": everything}


def bars_table(scores: Array, small_ok: Bools, large_ok: Bools) -> list[tuple[float, float]]:
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


def auto_table(
    gain: Array, confidence: Array, small_ok: Bools, large_ok: Bools
) -> list[tuple[float, float, float]]:
    """For each target, the (max_complexity, bar) pair on ``GRID`` that kept the share of all answers
    worse than the large model's within the target with the fewest requests reaching the large model
    (ties: the higher accuracy, then the higher max_complexity). Direct to large: ``gain > max_complexity``;
    otherwise the small model answers and escalates when ``confidence < bar``."""
    worse = (~small_ok) & large_ok
    rows = []  # (share to large, -accuracy, -max_complexity, share kept and worse, max_complexity, bar)
    for edge in GRID:
        direct = gain > edge
        for bar in GRID:
            to_large = direct | (confidence < bar)
            kept_worse = float((~to_large & worse).mean())
            accuracy = float(np.where(to_large, large_ok, small_ok).mean())
            rows.append(
                (float(to_large.mean()), -accuracy, -float(edge), kept_worse, float(edge), float(bar))
            )
    table = []
    for target in TARGETS:
        best = min(r for r in rows if r[3] <= target + 1e-12)  # bar 1.0 (all to large) always fits
        table.append((target, best[4], best[5]))
    return table


def choose(
    x: Array,
    y: Array,
    weight: Array,
    extras: dict[str, tuple[Array, Array, Array]],
    fold: npt.NDArray[np.int64],
    sets: dict[str, Bools],
) -> tuple[str, str, float, list[tuple[str, str, float, float, float, float, float]]]:
    """Every (input set, synthetic rows, L2) scored by out-of-fold log-loss on the measured rows, and the
    best one (ties: the stronger L2)."""
    scores = []
    for name, use in sets.items():
        for corpus_name, extra in extras.items():
            for l2 in L2_GRID:
                oof = cross_validated(x, y, fold, l2=l2, weight=weight, use=use, extra=extra)
                model = fit(np.concatenate([extra[0], x]), np.concatenate([extra[1], y]), l2=l2,
                            weight=np.concatenate([extra[2], weight]), use=use)  # fmt: skip
                train = probabilities(model, x)
                scores.append(
                    (name, corpus_name, l2, log_loss(train, y), auc(train, y), log_loss(oof, y), auc(oof, y))
                )
    best = min(scores, key=lambda s: (round(s[5], 4), -s[2]))  # ties: the stronger L2
    return best[0], best[1], best[2], scores


def accuracy(p: Array, y: Array) -> float:
    return float(((p >= 0.5) == (y > 0.5)).mean())


def items_of(
    calibration: list[dict[str, Any]], answers: dict[str, Any], models: tuple[str, ...] = (SMALL, LARGE)
) -> list[dict[str, Any]]:
    """The rows all ``models`` answered that the fit may read: the short *calibration* questions and the
    long *tune* items (``bench/data/routing_long.jsonl``, collected for the default pair); each ``{request,
    part, answers: {model: {tokens, n, ok}}}`` (long answers: their first tokens only, which is what the
    cascade decides on)."""
    out = []
    for q in calibration:
        got = {}
        for model in models:
            a = answers["models"][model][q["id"]]
            tokens = tokens_of(a["tokens"])
            got[model] = {"tokens": tokens, "n": len(tokens), "ok": is_correct(a["text"], q["answer"])}
        out.append({"request": request_of(q["question"], answers["system"]), "part": "short", "answers": got})
    for part in routing_long.PARTS:
        for item in routing_long.paired(part, "tune"):  # never held out
            if not set(models) <= item["answers"].keys():
                continue
            got = {
                m: {"tokens": r["head"], "n": r["tokens"], "ok": r["ok"]} for m, r in item["answers"].items()
            }
            out.append({"request": request_of(item["question"], routing_long.SYSTEMS[part]), "part": part,
                        "answers": got})  # fmt: skip
    return out


def early_table(running_scores: Array, early_scores: Array) -> list[EarlyRow]:
    """For each bar on ``GRID``: per prefix length ``k`` (the columns of ``early_scores``, NaN where an
    answer is shorter), the lowest score at ``k`` among the answers the bar keeps (``running_scores`` at or
    above it): below it, on this data, an answer was escalated anyway. 1.0 where the bar keeps none."""
    table = []
    for bar in GRID:
        kept = early_scores[running_scores >= bar]
        lowest = [float(np.nanmin(c)) if (~np.isnan(c)).any() else 1.0 for c in kept.T]
        table.append((float(bar), tuple(round(v, 6) for v in lowest)))
    return table


def calibrate(
    model_id: str,
    items: list[dict[str, Any]],
    fold: npt.NDArray[np.int64],
    inputs: Callable[[int, Array], Array] | None = None,
    weights: Sequence[float] | None = None,
) -> tuple[Any, ...]:
    """Fit ``model_id``'s confidence on its answers' measures at ``routing_long.fit_prefixes`` (each answer
    weighs one, or ``weights[i]`` for item ``i``), L2 by out-of-fold log-loss; ``inputs(i, measures)``: the
    row item ``i``'s answer measures give (the measures themselves by default; ``bench/routing_question.py``
    adds the question's). Returns the model, its scores and, per item, the out-of-fold running confidence
    (``running``: what the cascade would see on a new question), the out-of-fold scores of its first
    ``EARLY`` prefixes (NaN past its end) and its out-of-fold score at the decision length."""

    def row(i: int, tokens: list[Any]) -> Array:
        return measures(tokens) if inputs is None else inputs(i, measures(tokens))

    rows_x, rows_y, rows_w, owner, checked = [], [], [], [], []
    for i, item in enumerate(items):
        a = item["answers"][model_id]
        fit_at = routing_long.fit_prefixes(a["n"])
        for k in fit_at:
            rows_x.append(row(i, a["tokens"][:k]))
            rows_y.append(float(a["ok"]))
            rows_w.append((1.0 if weights is None else weights[i]) / len(fit_at))
            owner.append(i)
        checked.append(np.stack([row(i, a["tokens"][:k]) for k in routing_long.decision_prefixes(a["n"])]))
    x, y, w = np.stack(rows_x), np.asarray(rows_y), np.asarray(rows_w)
    row_fold = fold[np.asarray(owner)]
    by_l2 = {reg: cross_validated(x, y, row_fold, l2=reg, weight=w) for reg in L2_GRID}
    reg = min(L2_GRID, key=lambda r: (round(log_loss(by_l2[r], y), 4), -r))
    logistic = fit(x, y, l2=reg, weight=w)
    oof_running = np.zeros(len(items))
    oof_decision = np.zeros(len(items))
    oof_early = np.full((len(items), EARLY), np.nan)
    for k in np.unique(fold):
        held = fold == k
        train_rows = row_fold != k
        fold_model = fit(x[train_rows], y[train_rows], l2=reg, weight=w[train_rows])
        for i in np.flatnonzero(held):
            scores_at = probabilities(fold_model, checked[i])
            oof_running[i], oof_decision[i] = (
                scores_at.min(),
                scores_at[-1],
            )  # below the bar at any: escalated
            a = items[i]["answers"][model_id]
            for length in range(1, min(a["n"], EARLY) + 1):
                oof_early[i, length - 1] = probabilities(fold_model, row(i, a["tokens"][:length])[None])[0]
    train = probabilities(logistic, x)
    scores = {
        "l2": reg,
        "train_log_loss": round(log_loss(train, y), 3),
        "cv_log_loss": round(log_loss(by_l2[reg], y), 3),
        "train_auc": round(auc(train, y), 3),
        "cv_auc": round(auc(by_l2[reg], y), 3),
        **{
            f"{part}_answers": sum(it["part"] == part for it in items)
            for part in ("short", *routing_long.PARTS)
        },
    }
    return logistic, scores, oof_running, oof_early, oof_decision


def complexity_rows(
    items: list[dict[str, Any]], rows: list[tuple[str, int, int]], small_ok: Bools, large_ok: Bools
) -> tuple[Array, Array, Array, dict[str, tuple[Array, Array, Array]]]:
    """The complexity head's data: the tune items' features, whether the large model wins on each (right
    where the small one is wrong), their weight (the items and the synthetic ``rows`` weigh the same), and
    the synthetic rows ``choose`` may add to every training fold, by name."""
    x_syn = np.stack([features.vector(features.extract(request_of(p))) for p, _, _ in rows])
    x_bench = np.stack([features.vector(features.extract(it["request"])) for it in items])
    y_win = (large_ok & ~small_ok).astype(float)
    y_syn = np.asarray([c for _, c, _ in rows], float)
    w_bench = np.full(len(items), len(rows) / len(items))
    # the synthetic corpus labels by assumption ("code is complex"); cross-validation chooses whether it
    # joins, whole or without its code prompts once code was measured (HumanEval), or not at all
    code = np.asarray([features.extract(request_of(p)).code_markers > 0 for p, _, _ in rows])
    extras = {"all": (x_syn, y_syn, np.ones(len(rows)))}
    if any(it["part"] == "code" for it in items):
        extras["no code"] = (x_syn[~code], y_syn[~code], np.ones(int((~code).sum())))
    extras["none"] = (x_syn[:0], y_syn[:0], np.ones(0))
    return x_bench, y_win, w_bench, extras


def main(check: bool = False) -> None:
    rows = corpus()
    calibration, answers = load_bench("calibration")
    items = items_of(calibration, answers)
    small_ok = np.asarray([it["answers"][SMALL]["ok"] for it in items])
    large_ok = np.asarray([it["answers"][LARGE]["ok"] for it in items])
    fold = folds(len(items), K)

    # complexity head: P(the large model wins), chosen and scored by cross-validation on the tune rows
    x_bench, y_win, w_bench, extras = complexity_rows(items, rows, small_ok, large_ok)
    sets = feature_sets()
    chosen, corpus_name, l2, scores = choose(x_bench, y_win, w_bench, extras, fold, sets)
    extra = extras[corpus_name]
    parts = {p: sum(it["part"] == p for it in items) for p in ("short", *routing_long.PARTS)}
    print(f"complexity head = P(large right and small wrong); {K}-fold CV on {len(items)} tune items {parts}")
    print(f"({int(y_win.sum())} wins); synthetic prompts ({len(rows)}): in every training fold, or not")
    print("| inputs | synthetic prompts | L2 | train log-loss | train AUC | CV log-loss | CV AUC |")
    print("|---|---|---|---|---|---|---|")
    for name, syn, reg, tl, ta, cl, ca in scores:
        mark = " **chosen**" if (name, syn, reg) == (chosen, corpus_name, l2) else ""
        print(f"| {name} | {syn} | {reg:g} | {tl:.3f} | {ta:.3f} | {cl:.3f} | {ca:.3f} |{mark}")
    use = sets[chosen]
    complexity = fit(
        np.concatenate([extra[0], x_bench]), np.concatenate([extra[1], y_win]), l2=l2,
        weight=np.concatenate([extra[2], w_bench]), use=use,
    )  # fmt: skip
    gain_train = probabilities(complexity, x_bench)
    gain_oof = cross_validated(x_bench, y_win, fold, l2=l2, weight=w_bench, use=use, extra=extra)
    syn_train = accuracy(probabilities(complexity, extra[0]), extra[1]) if len(extra[1]) else float("nan")
    head_scores = {
        "inputs": chosen,
        "synthetic_prompts": corpus_name,
        "l2": l2,
        "train_accuracy": round(accuracy(gain_train, y_win), 3),
        "cv_accuracy": round(accuracy(gain_oof, y_win), 3),
        "train_log_loss": round(log_loss(gain_train, y_win), 3),
        "cv_log_loss": round(log_loss(gain_oof, y_win), 3),
        "train_auc": round(auc(gain_train, y_win), 3),
        "cv_auc": round(auc(gain_oof, y_win), 3),
        "synthetic_train_accuracy": round(syn_train, 3),
    }
    print(
        f"chosen: {chosen}, L2 {l2:g}: "
        + ", ".join(f"{k} {v}" for k, v in head_scores.items() if k[:2] in "trcv")
    )
    x_syn = extras["all"][0]  # every synthetic row
    thinking = fit(x_syn, np.asarray([t for _, _, t in rows], float), l2=4.0)

    confidence: dict[str, Any] = {}
    conf_scores: dict[str, Any] = {}
    for model in answers["models"]:  # every model with answers; the pair's tables for SMALL only
        mine = items if model in (SMALL, LARGE) else items_of(calibration, answers, (model,))
        logistic, conf_scores[model], oof, oof_early, _ = calibrate(model, mine, folds(len(mine), K))
        bars: list[tuple[float, float]] = []
        auto: list[tuple[float, float, float]] = []
        early: list[EarlyRow] = []
        if model == SMALL:  # the tables from out-of-fold scores: what a new question would see
            bars = bars_table(oof, small_ok, large_ok)
            auto = auto_table(gain_oof, oof, small_ok, large_ok)
            early = early_table(oof, oof_early)
        confidence[model] = Calibration(logistic, tuple(bars), tuple(auto), tuple(early)).to_json()
        right = np.mean([it["answers"][model]["ok"] for it in mine])
        print(f"{model}: {right:.2f} right on {len(mine)} items; confidence {conf_scores[model]}")
        if model == SMALL:
            print(f"  bars (target, bar): {[(t, round(b, 3)) for t, b in bars]}")
            print(f"  auto (target, max_complexity, bar): {auto}")
            print(
                f"  early bars at 1..{EARLY} tokens, by bar: {[(b, e) for b, e in early if b in (0.5, 0.75)]}"
            )

    out = {
        "version": 2,
        "features": {"dense": list(features.DENSE), "hash_buckets": features.HASH_BUCKETS},
        "complexity": complexity.to_json(),
        "thinking": thinking.to_json(),
        "confidence": confidence,
        "trained_on": {
            "synthetic_prompts": len(rows),
            "tune_items": parts,
            "complexity_label": "large model right and small model wrong",
            "complexity": head_scores,
            "confidence": conf_scores,
            "folds": K,
            "small_model": SMALL,
            "large_model": LARGE,
        },
    }
    path = DATA_DIR / "router.json"
    text = json.dumps(out, separators=(",", ":")) + "\n"
    if check:
        same = path.is_file() and path.read_text(encoding="utf-8") == text
        print(f"{path}: {'up to date' if same else 'differs from what the data rebuild'}")
        if not same:
            raise SystemExit(1)
        return
    path.write_text(text, encoding="utf-8")
    print(f"wrote {path} ({path.stat().st_size} bytes)")


if __name__ == "__main__":
    main(check="--check" in sys.argv[1:])
