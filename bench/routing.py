"""Routing policies compared on the same answers: accuracy, share escalated, latency, PGR, APGR, CPT, ECE.

    .venv/bin/python bench/routing_questions.py         # the question set (shipped; deterministic)
    .venv/bin/python bench/routing_collect.py short     # each bundled model answers every question once
    .venv/bin/python bench/routing_collect.py gsm8k|code --limit N   # long answers (resumable)
    .venv/bin/python bench/routing_long.py              # graded, compact: bench/data/routing_long.jsonl
    .venv/bin/python scripts/train_router.py            # classifier + calibration from the tune rows
    .venv/bin/python bench/routing.py                   # these tables, on the held-out rows only

Policies: the small model alone, the large alone, a random split, the router's classifier alone (its
probability that the large model wins), the confidence cascade (small first, escalate below the bar) at
several bars and at the bars the shipped table gives for a few targets, and ``auto`` (classifier +
cascade: straight to the large model above ``max_complexity``, else small first and escalate below the
bar) at the pairs the shipped ``auto`` table gives for a few targets and as configured by default. ``auto``
ranks requests by ``max(p − max_complexity, bar − confidence)`` for APGR and CPT.
Metrics follow RouteLLM (arXiv 2406.18665): PGR = (acc − acc_small) / (acc_large − acc_small);
APGR = mean PGR over 0 %, 10 %, …, 100 % of calls to the large model, the routing score ranking which
calls go; CPT(x) = the least share of calls to the large model reaching PGR ≥ x. Latency: the cascade pays
the small model's time and then the large model's on escalation (answers here are shorter than the
cascade's buffer, so each is scored whole). ECE: 10 equal-width bins of the calibrated confidence.
Then the small model's held-out confidence per answer length and part, and the realistic mix
(``routing_mix.py``: small, large, ``auto``, ``auto:cascade``, oracle per held-out part and for the mix),
the ceiling of bars on the small model's confidence there, and the share to the large model that even a
perfect confidence (one that knows which small answers are wrong) would need.
``--live``: that mix through a real gateway with the real models instead, beside the replay on the same
items (``routing_live.py``).
"""

from __future__ import annotations

import argparse
import random
import sys
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "bench"), str(ROOT / "scripts")]

import routing_live  # noqa: E402
import routing_long  # noqa: E402
import routing_mix  # noqa: E402
from routing_questions import is_correct  # noqa: E402
from train_router import L2_GRID, LARGE, SMALL, K, load_bench, request_of, tokens_of  # noqa: E402

from groupqwen.config import load_settings  # noqa: E402
from groupqwen.orchestrator import weights  # noqa: E402
from groupqwen.orchestrator.classifier import (  # noqa: E402
    Logistic,
    auc,
    cross_validated,
    fit,
    folds,
    log_loss,
)
from groupqwen.orchestrator.confidence import measures  # noqa: E402
from groupqwen.orchestrator.features import extract, vector  # noqa: E402
from groupqwen.orchestrator.weights import routing_from_settings  # noqa: E402

Array = np.ndarray


def pgr(acc: float, weak: float, strong: float) -> float:
    return (acc - weak) / (strong - weak) if strong != weak else float("nan")


def sweep(score: Array, small_ok: Array, large_ok: Array) -> Array:
    """Accuracy when the k highest-scoring questions go to the large model, k = 0..n."""
    order = np.argsort(-score, kind="stable")
    n = len(score)
    accs = [small_ok.mean()]
    ok = small_ok.astype(float).copy()
    for k in range(n):
        ok[order[k]] = large_ok[order[k]]
        accs.append(ok.mean())
    return np.asarray(accs) if n else np.zeros(1)


def apgr_cpt(score: Array, small_ok: Array, large_ok: Array) -> tuple[float, float, float]:
    weak, strong = small_ok.mean(), large_ok.mean()
    accs = sweep(score, small_ok, large_ok)
    n = len(score)
    gains = np.asarray([pgr(a, weak, strong) for a in accs])
    grid = [gains[round(c * n)] for c in np.linspace(0, 1, 11)]
    cpt = []
    for target in (0.8, 0.95):
        reached = np.flatnonzero(gains >= target - 1e-12)
        cpt.append(reached[0] / n if reached.size else float("nan"))
    return float(np.mean(grid)), cpt[0], cpt[1]


def ece(conf: Array, ok: Array, bins: int = 10) -> float:
    idx = np.minimum((conf * bins).astype(int), bins - 1)
    total = 0.0
    for b in range(bins):
        mask = idx == b
        if mask.any():
            total += mask.sum() / len(conf) * abs(ok[mask].mean() - conf[mask].mean())
    return total


def main() -> None:
    test, answers = load_bench("test")
    w = weights.load()
    system = answers["system"]
    small, large = answers["models"][SMALL], answers["models"][LARGE]
    s_ok = np.asarray([is_correct(small[q["id"]]["text"], q["answer"]) for q in test])
    l_ok = np.asarray([is_correct(large[q["id"]]["text"], q["answer"]) for q in test])
    s_t = np.asarray([small[q["id"]]["seconds"] for q in test])
    l_t = np.asarray([large[q["id"]]["seconds"] for q in test])
    conf_s = np.asarray([w.scorer.score(SMALL, tokens_of(small[q["id"]]["tokens"])) for q in test])
    conf_l = np.asarray([w.scorer.score(LARGE, tokens_of(large[q["id"]]["tokens"])) for q in test])
    cplx = np.asarray(
        [w.heads.complexity.probability(vector(extract(request_of(q["question"], system)))) for q in test]
    )
    weak, strong = s_ok.mean(), l_ok.mean()
    rng = random.Random(0)
    rand = np.asarray([rng.random() for _ in test])

    rows: list[dict[str, Any]] = []

    def add(name: str, to_large: Array, cascaded: Array, score: Array | None) -> None:
        ok = np.where(to_large, l_ok, s_ok)
        latency = np.where(to_large, l_t, 0.0) + np.where(~to_large | cascaded, s_t, 0.0)
        acc = ok.mean()
        apgr, c80, c95 = apgr_cpt(score, s_ok, l_ok) if score is not None else (float("nan"),) * 3
        rows.append(
            {"policy": name, "accuracy": acc, "of_large": acc / strong, "to_large": to_large.mean(),
             "latency_s": latency.mean(), "pgr": pgr(acc, weak, strong), "apgr": apgr,
             "cpt80": c80, "cpt95": c95}
        )  # fmt: skip

    none = np.zeros(len(test), bool)
    add("small only", none, none, None)
    add("large only", ~none, none, None)
    add("random 50 %", rand < 0.5, none, rand)
    add("classifier alone (P(large wins) > 0.5 → large)", cplx > 0.5, none, cplx)
    for bar in (0.3, 0.5, 0.7):
        add(f"cascade, bar {bar:.2f}", conf_s < bar, ~none, 1 - conf_s)
    calibration = w.scorer.calibrations[SMALL]
    for target in (0.02, 0.05, 0.1):
        bar = calibration.bar_for(target)
        add(f"cascade, target {target:.0%} (bar {bar:.2f})", conf_s < bar, ~none, 1 - conf_s)
    for target in (0.02, 0.05, 0.1):
        pair = calibration.auto_for(target)
        if pair is None:
            continue
        edge, bar = pair
        direct = cplx > edge
        name = f"auto, target {target:.0%} (max_complexity {edge:.2f}, bar {bar:.2f})"
        add(name, direct | (conf_s < bar), ~direct, np.maximum(cplx - edge, bar - conf_s))
    # the pair these answers are of, at the default target (the default ladder is 0.5B -> 1.5B: see below)
    settings = load_settings(router={"tiers": [{"model": SMALL, "multilingual": False}, {"model": LARGE}]})
    small_tier = routing_from_settings(settings).router.policy.tiers[0]
    edge, bar = small_tier.max_complexity, small_tier.bar or 0.0
    direct = cplx > edge
    add(
        f"**auto, {SMALL} → {LARGE}** (target {settings.router.tiers[0].target:.0%})",
        direct | (conf_s < bar), ~direct, np.maximum(cplx - edge, bar - conf_s),
    )  # fmt: skip
    default_to_large = direct | (conf_s < bar)

    head = (
        "| policy | accuracy | % of large | to large | mean latency (s) | PGR | APGR | CPT(80%) | CPT(95%) |"
    )
    print(f"test split: {len(test)} questions; small {weak:.3f}, large {strong:.3f}\n")
    print(head)
    print("|" + "---|" * 9)
    for r in rows:

        def pct(v: float) -> str:
            return "–" if v != v else f"{v:.0%}"

        def num(v: float) -> str:
            return "–" if v != v else f"{v:.2f}"

        print(
            f"| {r['policy']} | {r['accuracy']:.3f} | {pct(r['of_large'])} | {pct(r['to_large'])} | "
            f"{r['latency_s']:.3f} | {num(r['pgr'])} | {num(r['apgr'])} | "
            f"{pct(r['cpt80'])} | {pct(r['cpt95'])} |"
        )
    print(
        f"\nconfidence ECE (test split, 10 bins): {SMALL} {ece(conf_s, s_ok.astype(float)):.3f}, "
        f"{LARGE} {ece(conf_l, l_ok.astype(float)):.3f}"
    )
    print(
        f"classifier ECE (P(large wins), test split, 10 bins): {ece(cplx, (l_ok & ~s_ok).astype(float)):.3f}"
    )
    # how noisy the default row is: resample the test questions (bootstrap, 2000 draws, fixed seed)
    boot = np.random.default_rng(0)
    ratios, shares = [], []
    chosen = np.where(default_to_large, l_ok, s_ok)
    for _ in range(2000):
        i = boot.integers(0, len(test), len(test))
        if l_ok[i].mean() > 0:
            ratios.append(chosen[i].mean() / l_ok[i].mean())
            shares.append(default_to_large[i].mean())
    lo, hi = np.percentile(ratios, [5, 95])
    slo, shi = np.percentile(shares, [5, 95])
    print(
        f"default auto, 90% bootstrap interval: {lo:.0%}–{hi:.0%} of the large model's accuracy, "
        f"{slo:.0%}–{shi:.0%} of requests to the large model"
    )
    by_cat: dict[str, list[int]] = {}
    for q, a, b in zip(test, s_ok, l_ok, strict=True):
        by_cat.setdefault(q["category"], [0, 0, 0])
        by_cat[q["category"]][0] += 1
        by_cat[q["category"]][1] += int(a)
        by_cat[q["category"]][2] += int(b)
    print("per category (n, small right, large right):", {k: tuple(v) for k, v in sorted(by_cat.items())})
    held_out_confidence(w)
    print("\nthe realistic mix, held-out splits, the default configuration (bench/routing_mix.py):\n")
    items = routing_mix.items("heldout")
    routing_mix.print_table(routing_mix.table(items))
    top = routing_mix.ceiling(items)
    if top["share"] is None:
        print("\nno bars on the 0.5B's confidence keep 95 % of the 1.5B's accuracy on the mix")
    else:
        per_part = ", ".join(f"{part} {share:.0%}" for part, share in top["escalated"].items())
        print(
            f"\nthe ceiling of bars on the 0.5B's confidence (per part, chosen on these held-out rows: an "
            f"upper bound): {top['share']:.1%} to the 1.5B for {top['accuracy']:.3f} on the mix "
            f"(≥ 95 % of the 1.5B's), escalating {per_part}"
        )
    print(
        "\nwhat a perfect confidence of the 0.5B would need (it knows whether its answer is right, nothing "
        "of the 1.5B's; expected over its order among the wrong ones; routing_mix.perfect_confidence):"
    )
    tune = routing_mix.items("tune")
    for name, rows in (("held out", items), ("tune", tune), ("both", items + tune)):
        best = routing_mix.perfect_confidence(rows)
        per_part = ", ".join(f"{part} {share:.0%}" for part, share in best["escalated"].items())
        print(
            f"  {name}: {best['share']:.1%} to the 1.5B for 95 % of its mix accuracy (escalating {per_part})"
        )


BUCKETS = ((1, 3), (4, 16), (17, 64), (65, 10**6))  # answer length in tokens


def whole_answer_calibration() -> Logistic:
    """The small model's confidence over its *whole* answers (the answer span included), fitted here on
    the tune rows only (short calibration questions + long tune items), L2 by cross-validation. Not shipped:
    the cascade commits a long answer on its first ``buffer_tokens``; this says what waiting for the
    whole answer (``buffer_tokens`` ≥ ``max_tokens``) would buy."""
    calibration, answers = load_bench("calibration")
    x = [measures(tokens_of(answers["models"][SMALL][q["id"]]["tokens"])) for q in calibration]
    y = [is_correct(answers["models"][SMALL][q["id"]]["text"], q["answer"]) for q in calibration]
    for row in routing_long.rows(split="tune"):
        if row["model"] == SMALL:
            x.append(np.asarray(row["measures"]))
            y.append(row["ok"])
    xs, ys = np.stack(x), np.asarray(y, float)
    fold = folds(len(ys), K)
    reg = min(L2_GRID, key=lambda r: (round(log_loss(cross_validated(xs, ys, fold, l2=r), ys), 4), -r))
    return fit(xs, ys, l2=reg)


def held_out_confidence(w: weights.Weights) -> None:
    """The default first tier's confidence on held-out answers only (the short test split, the held-out
    GSM8K and code items), per answer-length bucket and per part: ECE and AUC of the score the cascade
    decides on (the shipped calibration over the answer's first ``buffer_tokens``: a long answer's span is
    never seen before it commits) and of a whole-answer score (``whole_answer_calibration``); then how
    often, and at which token, the cascade at the default bar leaves each part's answers."""
    routing = routing_from_settings(load_settings())
    items = routing_mix.items("heldout")
    whole_model = whole_answer_calibration()
    conf, whole, ok, lengths, part_of = [], [], [], [], []
    for item in items:
        a = item.small
        decided = routing_long.decision_prefixes(a.n, routing.min_tokens, routing.buffer_tokens)[-1]
        conf.append(w.scorer.score(SMALL, a.tokens[:decided]))
        whole.append(whole_model.probability(a.whole))
        ok.append(a.ok)
        lengths.append(a.n)
        part_of.append(item.part)
    c, cw, y, n = np.asarray(conf), np.asarray(whole), np.asarray(ok, float), np.asarray(lengths)
    parts = {p: sum(i.part == p for i in items) for p in ("short", *routing_long.PARTS)}
    print(
        f"\n{SMALL} confidence on held-out answers {parts}: at the decision length (shipped) | whole answer"
    )
    print("| answers | n | right | mean conf. | ECE | AUC | whole: mean conf. | ECE | AUC |")
    print("|---|---|---|---|---|---|---|---|---|")
    groups = [
        (f"{lo}–{hi} tokens" if hi < 10**6 else f"{lo}+ tokens", (n >= lo) & (n <= hi)) for lo, hi in BUCKETS
    ]
    groups += [(part, np.asarray(part_of) == part) for part in parts] + [("all", n > 0)]
    for label, m in groups:
        if not m.any():
            continue
        cells = [label, str(m.sum()), f"{y[m].mean():.2f}"]
        for score in (c, cw):
            area = f"{auc(score[m], y[m]):.2f}" if 0 < y[m].sum() < m.sum() else "–"
            cells += [f"{score[m].mean():.2f}", f"{ece(score[m], y[m]):.3f}", area]
        print("| " + " | ".join(cells) + " |")
    bar = routing.router.policy.tiers[0].bar
    for part, count in parts.items():
        mine = [i for i in items if i.part == part]
        left = [routing_mix.escalation(routing, i.small, bar) for i in mine]
        stops = [k for k in left if k is not None]
        kept_right = sum(i.small.ok for i, k in zip(mine, left, strict=True) if k is None)
        print(
            f"  {part}: at the default bar {bar or 0:.2f}, {len(stops)} of {count} left"
            + (f" (at token {min(stops)}–{max(stops)})" if stops else "")
            + f"; kept {count - len(stops)}, {kept_right} of them right"
        )


if __name__ == "__main__":
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--live", action="store_true", help="the mix through a real gateway (routing_live.py)"
    )
    parser.add_argument("--limit", nargs="+", default=["short=6", "code=3", "gsm8k=2"], help="--live: PART=N")
    parser.add_argument("--rows", type=Path, help="--live: report an earlier run's rows instead of running")
    args = parser.parse_args()
    if args.live:
        routing_live.main(routing_live.parse_limits(args.limit), args.rows)
    else:
        main()
