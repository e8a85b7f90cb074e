"""The realistic mix: small, large, ``auto``, ``auto:cascade``, the oracle on each held-out part.

Parts: the short questions' *test* split (``bench/data/routing_answers.json``), and the held-out thirds of
GSM8K (steps + ``Answer:``) and HumanEval code (``bench/data/routing_long.jsonl``). Each policy is the
shipped router as configured by default (``routing_from_settings(load_settings())``: the tiers' pair and
bars for their target) deciding on the real request (its system prompt and question), and the cascade
replayed on the small model's recorded tokens: it escalates at the first length it checks where the
running confidence is below what it is held to there — its calibration's early bar before ``min_tokens``,
the bar from ``min_tokens`` to ``min(n, buffer_tokens)`` (``routing_long.decision_prefixes``). Latency: the
model that answered, plus, on an escalation, the small model's time up to the aborting token (its recorded
seconds × k / n: this overstates what an early abort saves on a short answer, whose time is mostly its
prompt's evaluation; read latency from the live run). The table also gives the small model's tokens
abandoned per escalation. The oracle sends an item to the large model
only when the small one is wrong and the large one right. The mix weighs the parts equally.
``bench/routing.py`` prints the table.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any

import numpy as np
import routing_long
from routing_questions import is_correct
from train_router import LARGE, SMALL, load_bench, request_of, tokens_of

from groupqwen.config import load_settings
from groupqwen.messages import ChatRequest, TokenLogprob
from groupqwen.orchestrator.classifier import Array
from groupqwen.orchestrator.confidence import measures
from groupqwen.orchestrator.router import ModelView
from groupqwen.orchestrator.weights import Routing, routing_from_settings

POLICIES = ("small", "large", "auto", "auto:cascade", "oracle")
ROUTED = ("auto", "auto:cascade")  # the policies the cascade runs (their small answers may be abandoned)


@dataclass(frozen=True)
class Answer:
    ok: bool
    seconds: float
    n: int  # tokens generated
    tokens: list[TokenLogprob]  # the first ones at least (what the cascade decides on)
    whole: Array  # ``confidence.measures`` of the whole answer


@dataclass(frozen=True)
class Item:
    part: str
    id: str  # the item's id in its part (the short questions', GSM8K's ``g…``, HumanEval's ``h…``)
    request: ChatRequest
    small: Answer
    large: Answer


def items(split: str) -> list[Item]:
    """The mix's items of ``split``: "heldout" (the short questions' test split, the long parts' held-out
    thirds) or "tune" (their calibration split and tune rows: what the router was fitted on)."""
    short, answers = load_bench({"heldout": "test", "tune": "calibration"}[split])
    out = []
    for q in short:
        got = {}
        for model in (SMALL, LARGE):
            a = answers["models"][model][q["id"]]
            tokens = tokens_of(a["tokens"])
            ok = is_correct(a["text"], q["answer"])
            got[model] = Answer(ok, a["seconds"], len(tokens), tokens, measures(tokens))
        out.append(
            Item("short", q["id"], request_of(q["question"], answers["system"]), got[SMALL], got[LARGE])
        )
    for part in routing_long.PARTS:
        for item in routing_long.paired(part, split):
            a = {
                m: Answer(r["ok"], r["seconds"], r["tokens"], r["head"], np.asarray(r["measures"]))
                for m, r in item["answers"].items()
            }
            request = request_of(item["question"], routing_long.SYSTEMS[part])
            out.append(Item(part, item["id"], request, a[SMALL], a[LARGE]))
    return out


def escalation(routing: Routing, answer: Answer, bar: float | None) -> int | None:
    """The token at which the cascade leaves the small model's answer (None: it keeps it): the first
    prefix below its early bar (``Routing.bar_at``, before ``min_tokens`` and the buffer), else the first
    of ``routing_long.decision_prefixes`` below ``bar``."""
    if bar is None or bar <= 0:  # a bar of 0 accepts every answer: committed from the first token
        return None
    for k in range(1, min(answer.n, routing.min_tokens - 1, routing.buffer_tokens - 1) + 1):
        early = routing.bar_at(SMALL, bar, k)
        if early is not None and routing.scorer.score(SMALL, answer.tokens[:k]) < early:
            return k
    for k in routing_long.decision_prefixes(answer.n, routing.min_tokens, routing.buffer_tokens):
        if routing.scorer.score(SMALL, answer.tokens[:k]) < bar:
            return k
    return None


def left_at(routing: Routing, item: Item, policy: str) -> int | None:
    """Under ``auto`` or ``auto:cascade``: 0 when the router sends ``item`` straight to the large model,
    the token at which the cascade leaves the small model's answer, or None when it keeps it."""
    models = {m: ModelView(warm=True, context_length=32768) for m in (SMALL, LARGE)}
    route = routing.router.route(replace(item.request, model=policy), models)
    return 0 if route.model != SMALL else escalation(routing, item.small, route.steps[0].bar)


def outcome(routing: Routing, item: Item, policy: str) -> tuple[bool, bool, float]:
    """(right, reached the large model, seconds) for ``item`` under ``policy``."""
    s, g = item.small, item.large
    if policy == "small":
        return s.ok, False, s.seconds
    if policy == "large":
        return g.ok, True, g.seconds
    if policy == "oracle":
        up = g.ok and not s.ok
        return (g.ok, True, g.seconds) if up else (s.ok, False, s.seconds)
    k = left_at(routing, item, policy)
    if k is None:
        return s.ok, False, s.seconds
    return g.ok, True, s.seconds * k / max(s.n, 1) + g.seconds


def table(items: list[Item], routing: Routing | None = None) -> dict[str, dict[str, dict[str, float]]]:
    """``{part (and "mix"): {policy: {n, accuracy, to_large, latency_s, abandoned}}}`` (``abandoned``: the
    small model's tokens per escalation under ``auto`` and ``auto:cascade``, 0 without one)."""
    routing = routing or routing_from_settings(load_settings())
    out: dict[str, dict[str, dict[str, float]]] = {}
    for part, mine in by_part(items).items():
        out[part] = {}
        for policy in POLICIES:
            got = np.asarray([outcome(routing, i, policy) for i in mine], float)
            left = [k for i in mine for k in [left_at(routing, i, policy)] if k] if policy in ROUTED else []
            out[part][policy] = {
                "n": len(mine),
                "accuracy": float(got[:, 0].mean()),
                "to_large": float(got[:, 1].mean()),
                "latency_s": float(got[:, 2].mean()),
                "abandoned": float(np.mean(left)) if left else 0.0,
            }
    out["mix"] = {
        policy: {
            key: float(np.mean([out[p][policy][key] for p in out]))
            for key in ("n", "accuracy", "to_large", "latency_s", "abandoned")
        }
        for policy in POLICIES
    }
    return out


def print_table(result: dict[str, Any]) -> None:
    print(
        "| part (held out) | n | policy | accuracy | % of large | to large | mean latency (s) "
        "| small tokens abandoned per escalation |"
    )
    print("|---|---|---|---|---|---|---|---|")
    for part, policies in result.items():
        strong = policies["large"]["accuracy"]
        for policy, r in policies.items():
            share = f"{r['accuracy'] / strong:.0%}" if strong else "–"
            n = "" if part == "mix" else str(int(r["n"]))
            label = "mix (parts weighed equally)" if part == "mix" else part
            left = f"{r['abandoned']:.1f}" if policy in ROUTED else ""
            print(
                f"| {label} | {n} | {policy} | {r['accuracy']:.3f} | {share} | {r['to_large']:.0%} | "
                f"{r['latency_s']:.2f} | {left} |"
            )


def ceiling(
    items: list[Item],
    routing: Routing | None = None,
    of_large: float = 0.95,
    score: Callable[[Item, list[TokenLogprob]], float] | None = None,
) -> dict[str, Any]:
    """An upper bound on what any bars on the small model's confidence could do on ``items``: each part
    ranked by the confidence at the length the cascade decides on (``min(n, buffer_tokens)`` tokens), the
    least confident ``k`` of it escalated, and the ``k`` per part chosen *on these items themselves* (every
    combination) for the smallest share to the large model that keeps ``of_large`` of its accuracy on the
    mix (parts weighed equally). Tuned on what it reports, so optimistic: no policy fitted elsewhere does
    better with this ranking. ``{"share", "accuracy", "of_large", "escalated": {part: k / n}}``; share
    ``None`` when no combination reaches ``of_large``. ``score(item, tokens)``: another confidence to rank
    by (default: the routing's scorer for the small model)."""
    routing = routing or routing_from_settings(load_settings())
    scorer = routing.scorer
    rank = score or (lambda item, tokens: scorer.score(SMALL, tokens))
    curves: dict[str, Array] = {}  # part -> accuracy when its k least confident go up, k = 0..n
    for part, mine in by_part(items).items():
        head = routing.buffer_tokens  # an answer is decided on by its first ``buffer_tokens`` at most
        ranked = sorted(mine, key=lambda i: rank(i, i.small.tokens[:head]))
        small = np.asarray([i.small.ok for i in ranked], float)
        large = np.asarray([i.large.ok for i in ranked], float)
        curves[part] = np.asarray(
            [np.concatenate([large[:k], small[k:]]).mean() for k in range(len(ranked) + 1)]
        )
    return cheapest(curves, of_large)


def perfect_confidence(items: list[Item], of_large: float = 0.95) -> dict[str, Any]:
    """What the best possible confidence of the small model would need: one that knows whether its answer
    is right (AUC 1) and nothing of whether the large model's would be. Per part, its wrong answers go up
    first, in no order among themselves (then its right ones): the *expected* accuracy when ``k`` go up is
    ``(S + k L / W) / n`` for ``k ≤ W`` (``S`` small right, ``W`` wrong, ``L`` of those the large model gets
    right), and ``(S + L - (k - W)(1 - B / S)) / n`` after (``B`` of the small model's right ones the large
    model gets right too). The per-part combination is chosen as in ``ceiling``; the same dict."""
    curves: dict[str, Array] = {}
    for part, mine in by_part(items).items():
        n, right = len(mine), sum(i.small.ok for i in mine)
        wrong = n - right
        rescued = sum(i.large.ok and not i.small.ok for i in mine) / max(wrong, 1)  # per wrong one sent up
        lost = 1 - sum(i.large.ok and i.small.ok for i in mine) / max(right, 1)  # per right one sent up
        curves[part] = np.asarray(
            [(right + min(k, wrong) * rescued - max(k - wrong, 0) * lost) / n for k in range(n + 1)]
        )
    return cheapest(curves, of_large)


def by_part(items: list[Item]) -> dict[str, list[Item]]:
    """``items`` by part, in the table's order, parts without items left out."""
    out = {part: [i for i in items if i.part == part] for part in ("short", *routing_long.PARTS)}
    return {part: mine for part, mine in out.items() if mine}


def cheapest(curves: dict[str, Array], of_large: float) -> dict[str, Any]:
    """``curves``: per part, its accuracy when ``k`` of its ``n`` items go to the large model (``k`` = 0..n;
    the last is the large model's own). The smallest share to the large model (parts weighed equally) over
    every combination of ``k`` that keeps ``of_large`` of its accuracy on the mix: ``{"share", "accuracy",
    "of_large", "escalated": {part: k / n}}``; share ``None`` when none does. Every combination of the other
    parts is tried; the last part's ``k`` is the smallest that reaches the goal with them (a search in its
    running maximum), which is what trying each of its ``k`` too would choose."""
    parts = list(curves)
    goal = of_large * float(np.mean([c[-1] for c in curves.values()])) - 1e-12
    last = curves[parts[-1]]
    reach = np.maximum.accumulate(last)  # the best the last part can add with at most k of it sent up
    best: dict[str, Any] = {"share": None, "accuracy": None, "of_large": of_large, "escalated": {}}
    for ks in itertools.product(*(range(len(curves[p])) for p in parts[:-1])):
        rest = sum(float(curves[p][k]) for p, k in zip(parts, ks, strict=False))
        k_last = int(np.searchsorted(reach, goal * len(parts) - rest))
        if k_last == len(last):
            continue
        chosen = (*ks, k_last)
        share = float(np.mean([k / (len(curves[p]) - 1) for p, k in zip(parts, chosen, strict=True)]))
        if best["share"] is None or share < best["share"]:
            accuracy = (rest + float(last[k_last])) / len(parts)
            escalated = {p: k / (len(curves[p]) - 1) for p, k in zip(parts, chosen, strict=True)}
            best.update(share=share, accuracy=accuracy, escalated=escalated)
    return best
