"""The routing benchmark's own parts: code graded by running its tests, and the cascade replayed on
recorded tokens as the real cascade decides (bench/routing_code.py, routing_long.py, routing_mix.py)."""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path

import numpy as np
import pytest

from groupqwen.backends.fake import FakeBackend
from groupqwen.messages import ChatRequest, GenerationRequest, Message, Sampling, TokenLogprob
from groupqwen.orchestrator.confidence import Scorer, measures
from groupqwen.orchestrator.router import Router, RouterPolicy
from groupqwen.orchestrator.weights import Routing

ROOT = Path(__file__).resolve().parents[2]
sys.path[:0] = [str(ROOT / "scripts"), str(ROOT / "bench")]

import routing_code  # noqa: E402
import routing_collect  # noqa: E402
import routing_escalation  # noqa: E402
import routing_gsm8k  # noqa: E402
import routing_live  # noqa: E402
import routing_long  # noqa: E402
import routing_mix  # noqa: E402
import routing_question as rq  # noqa: E402
import train_router  # noqa: E402

from orchestrator.test_cascade import ROUTE, ask, cascade, early_scorer, fake, run  # noqa: E402


def test_code_is_graded_by_the_problems_own_tests() -> None:
    first = routing_code.problems()[0]
    assert first["id"] == "h000" and first["prompt"].strip() in first["question"]
    right = f"Here you go:\n```python\n{first['prompt']}{first['canonical_solution']}```\nDone."
    assert routing_code.passes(first, right)
    assert routing_code.passes(first, first["canonical_solution"])  # a bare body completes the prompt
    wrong = f"```python\ndef {first['entry_point']}(numbers, threshold):\n    return False\n```"
    assert not routing_code.passes(first, wrong)
    hangs = f"```python\ndef {first['entry_point']}(numbers, threshold):\n    while True:\n        pass\n```"
    assert not routing_code.passes(first, hangs, timeout_s=2)


SMALL_ID, LARGE_ID = routing_collect.MODELS


def _answer(text: str) -> dict[str, object]:
    """A cached whole answer as ``routing_collect`` writes it: one token per line, with 5 alternatives."""
    lines = text.splitlines(keepends=True)
    return {"text": text, "seconds": 1.5, "tokens": [[t, -0.25, [-0.25, -2.0, -3, -4, -5]] for t in lines]}


def _shipped(item_id: str, model: str, ok: bool) -> dict[str, object]:
    return {"part": "code", "id": item_id, "split": "tune", "model": model, "ok": ok, "seconds": 9.0,
            "tokens": 7, "measures": [0.5], "head": [["x", -0.1, [-0.1]]]}  # fmt: skip


def test_the_long_rows_keep_what_was_shipped_and_add_what_is_cached() -> None:
    """Per (item, model) a cached answer is graded afresh and replaces the shipped row; a shipped row with
    no cached answer stays as it was; an item is kept only when both models have a row."""
    first = routing_code.problems()[0]
    right = f"```python\n{first['prompt']}{first['canonical_solution']}```"
    shipped = [
        _shipped("h000", SMALL_ID, False),  # re-collected below: the cache wins
        _shipped("h001", SMALL_ID, True),  # shipped only, kept
        _shipped("h001", LARGE_ID, False),
        _shipped("h002", SMALL_ID, True),  # only one model: dropped
        {**_shipped("h003", SMALL_ID, True), "part": "gsm8k"},  # another part's
    ]
    answered = {
        SMALL_ID: {"h000": _answer(right)},
        LARGE_ID: {"h000": _answer("no code"), "h004": _answer(right)},
    }
    built = routing_long.build("code", answered, shipped)
    assert [(r["id"], r["model"]) for r in built] == [
        ("h000", SMALL_ID), ("h000", LARGE_ID), ("h001", SMALL_ID), ("h001", LARGE_ID)
    ]  # fmt: skip
    small, large = built[0], built[1]
    assert small["ok"] and not large["ok"] and small["seconds"] == 1.5
    assert small["tokens"] == len(right.splitlines()) and len(small["head"]) == small["tokens"]
    assert small["split"] == routing_gsm8k.split_of(first["question"])
    assert built[2:] == shipped[1:3]  # as shipped, untouched
    assert routing_long.build("code", {}, shipped) == shipped[1:3]


async def test_collecting_skips_the_items_shipped_or_cached(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``routing_collect`` asks a model only the items it has neither a cached answer nor a shipped row
    for, and loads no model when there are none."""
    long = tmp_path / "routing_long.jsonl"
    rows = [
        _shipped("h000", SMALL_ID, True),
        _shipped("h000", LARGE_ID, True),
        _shipped("h001", SMALL_ID, True),
    ]
    long.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    monkeypatch.setattr(routing_collect, "LONG", long)
    monkeypatch.setattr(routing_collect, "CACHE", tmp_path / "cache")
    (tmp_path / "cache").mkdir()
    (tmp_path / "cache" / f"code.{LARGE_ID}.jsonl").write_text(
        json.dumps({"id": "h002", **_answer("a")}) + "\n"
    )
    loaded: dict[str, FakeBackend] = {}

    async def backend(model_id: str, threads: int, n_ctx: int) -> FakeBackend:
        loaded[model_id] = FakeBackend(model_id=model_id, tokens=("ok",))
        return loaded[model_id]

    monkeypatch.setattr(routing_collect, "_backend", backend)
    assert routing_collect.shipped(SMALL_ID, "code") == {"h000", "h001"}
    assert routing_collect.shipped(SMALL_ID, "gsm8k") == set()
    items = [{"id": f"h00{k}", "question": f"q{k}"} for k in range(3)]
    await routing_collect.collect_long("code", items[:2], "system", 8, [SMALL_ID], 1)
    assert loaded == {}  # both shipped for the small model: nothing to load
    await routing_collect.collect_long("code", items, "system", 8, list(routing_collect.MODELS), 1)
    asked = {m: [r.messages[-1].content for r in b.requests] for m, b in loaded.items()}
    assert asked == {SMALL_ID: ["q2"], LARGE_ID: ["q1"]}
    assert set(routing_collect.cached(SMALL_ID, "code")) == {"h002"}
    assert set(routing_collect.cached(LARGE_ID, "code")) == {"h001", "h002"}


def test_decision_prefixes_are_the_lengths_the_cascade_checks() -> None:
    assert routing_long.decision_prefixes(3, 8, 48) == [3]  # shorter than min_tokens: scored at its end
    assert routing_long.decision_prefixes(10, 8, 48) == [8, 9, 10]
    assert routing_long.decision_prefixes(320, 8, 48) == list(range(8, 49))  # committed at the buffer
    assert routing_long.fit_prefixes(320) == [8, 16, 32, 48] and routing_long.fit_prefixes(2) == [2]


@pytest.mark.parametrize("drop_at", [3, 10, 30, None])
async def test_the_replay_leaves_an_answer_where_the_cascade_does(drop_at: int | None) -> None:
    """Sure tokens, then unsure ones from ``drop_at``: the replay's abort token is the real cascade's."""
    sure, unsure = math.log(0.95), math.log(0.01)
    logprobs = [sure if drop_at is None or i < drop_at else unsure for i in range(60)]
    small = FakeBackend(model_id="small", tokens=(" w",) * 60, logprobs=logprobs)
    _, _, decisions = await run(cascade(small, fake("large", ["4"], sure), buffer_tokens=20), ask())
    reason = decisions[-1].reason
    real = int(reason.split("aborted at token ")[1].split()[0]) if "aborted" in reason else None
    routing = Routing(Router(RouterPolicy(tiers=())), Scorer(), buffer_tokens=20)
    tokens = [TokenLogprob(" w", lp, ()) for lp in logprobs]
    answer = routing_mix.Answer(ok=True, seconds=1.0, n=60, tokens=tokens, whole=measures(tokens))
    assert routing_mix.escalation(routing, answer, ROUTE.steps[0].bar) == real
    assert (real is None) == (drop_at is None or drop_at >= 20)


@pytest.mark.parametrize("drop_at", [0, 1, 3, 6, 10, None])
async def test_the_replay_checks_the_early_bars_where_the_cascade_does(drop_at: int | None) -> None:
    """With early bars (0.2 at token 1, 0.45 after; the step's bar 0.5), the replay's abort token is the
    real cascade's: early on a drop well before ``min_tokens``, at the bar after it, never for a sure
    answer."""
    sure, unsure = math.log(0.95), math.log(1e-4)
    logprobs = [sure if drop_at is None or i < drop_at else unsure for i in range(30)]
    scorer = early_scorer((0.2,) + (0.45,) * 6, ("small", train_router.SMALL))  # the replay scores SMALL
    small = FakeBackend(model_id="small", tokens=(" w",) * 30, logprobs=logprobs)
    c = cascade(small, fake("large", ["4"], sure), buffer_tokens=20, scorer=scorer)
    _, _, decisions = await run(c, ask())
    reason = decisions[-1].reason
    real = int(reason.split("aborted at token ")[1].split()[0]) if "aborted" in reason else None
    routing = Routing(Router(RouterPolicy(tiers=())), scorer, buffer_tokens=20)
    tokens = [TokenLogprob(" w", lp, ()) for lp in logprobs]
    answer = routing_mix.Answer(ok=True, seconds=1.0, n=30, tokens=tokens, whole=measures(tokens))
    assert routing_mix.escalation(routing, answer, ROUTE.steps[0].bar) == real
    assert (real is not None and real < routing.min_tokens) == (drop_at is not None and drop_at < 6)


def test_the_live_bench_reads_the_route_from_the_headers() -> None:
    headers = {
        "x-groupqwen-model": "qwen2.5-coder-1.5b",
        "x-groupqwen-route": "auto",
        "x-groupqwen-escalations": "1",
        "x-groupqwen-abandoned-tokens": "2",
    }
    assert routing_live.taken(headers) == routing_live.Taken("qwen2.5-coder-1.5b", "auto", 1, 2)
    plain = routing_live.taken({"x-groupqwen-model": "m", "x-groupqwen-route": "explicit"})
    assert plain.escalations == 0 and plain.abandoned == 0
    with pytest.raises(ValueError, match="x-groupqwen-model"):
        routing_live.taken({"x-groupqwen-route": "auto"})
    with pytest.raises(ValueError, match="escalations is not a count"):
        routing_live.taken({**headers, "x-groupqwen-escalations": "one"})
    with pytest.raises(ValueError, match="abandoned-tokens is not a count"):
        routing_live.taken({**headers, "x-groupqwen-abandoned-tokens": "-1"})


def test_the_live_bench_limits_each_part() -> None:
    assert routing_live.parse_limits(["short=6", "gsm8k=2"]) == {"short": 6, "gsm8k": 2}
    for bad in ("short", "short=x", "essays=3"):
        with pytest.raises(ValueError, match="PART=N"):
            routing_live.parse_limits([bad])
    items = [_item(part, f"{part}{k}") for part in ("short", "gsm8k") for k in range(3)]
    assert [i.id for i in routing_live.chosen(items, {"short": 2})] == ["short0", "short1"]


def _item(part: str, item_id: str) -> routing_mix.Item:
    answer = routing_mix.Answer(ok=True, seconds=1.0, n=1, tokens=[], whole=measures([]))
    return routing_mix.Item(
        part, item_id, ChatRequest(messages=(Message("user", "q"),), model="auto"), answer, answer
    )


def _row(part: str, item_id: str, policy: str, ok: bool, model: str, seconds: float) -> dict[str, object]:
    return {"part": part, "id": item_id, "policy": policy, "ok": ok, "model": model, "seconds": seconds}


def test_the_live_bench_compares_with_the_replay_item_by_item() -> None:
    """Live rows → outcomes (the oracle from the live small and large answers); the comparison counts an
    item's route and grade as agreeing only when the replay's match the live gateway's on that item."""
    small, large = "qwen2.5-coder-0.5b", "qwen2.5-coder-1.5b"
    rows = [
        _row("short", "a", "small", False, small, 1.0),
        _row("short", "a", "large", True, large, 3.0),
        _row("short", "a", "auto", True, large, 4.0),  # escalated live
        _row("short", "b", "small", True, small, 1.0),
        _row("short", "b", "large", True, large, 3.0),
        _row("short", "b", "auto", True, small, 1.0),
    ]
    live = routing_live.live_outcomes(rows)
    assert live["short", "a"]["oracle"] == (True, True, 3.0) and live["short", "b"]["oracle"] == (
        True,
        False,
        1.0,
    )
    no, up, yes = (False, False, 1.0), (True, True, 3.0), (True, False, 1.0)
    replay = {
        ("short", "a"): {"small": no, "large": up, "auto": no, "oracle": up},
        ("short", "b"): {"small": yes, "large": up, "auto": yes, "oracle": yes},
    }
    result = routing_live.compare([_item("short", "a"), _item("short", "b")], live, replay)
    auto = result["short"]["auto"]
    assert auto == {
        "n": 2, "accuracy": 1.0, "to_large": 0.5, "latency_s": 2.5, "replay_accuracy": 0.5,
        "replay_to_large": 0.0, "replay_latency_s": 1.0, "route_agreement": 0.5, "answer_agreement": 0.5,
    }  # fmt: skip
    assert result["short"]["small"]["route_agreement"] == 1.0 and "auto:cascade" not in result["short"]
    assert result["mix"]["auto"] == auto  # one part: the mix is that part


async def test_the_escalation_bench_notes_a_generation_and_closes_it_with_its_own() -> None:
    """``routing_escalation.Noted``: start, first token and close noted; closing it early cancels the
    backend's generation at once (not when the abandoned generator is collected)."""
    events: routing_escalation.Events = []
    backend = FakeBackend(model_id="small", tokens=("a", "b", "c"), logprob=0.0)
    noted = routing_escalation.Noted(backend, events)
    stream = noted.stream(GenerationRequest(messages=(Message("user", "hi"),), sampling=Sampling()))
    assert (await anext(stream)).text == "a"
    await stream.aclose()
    assert [(m, what) for _, m, what in events] == [
        ("small", "start"),
        ("small", "first"),
        ("small", "closed"),
    ]
    assert backend.cancelled == 1 and noted.model_id == "small"


def test_the_ceiling_escalates_the_least_confident_and_chooses_the_bars_per_part() -> None:
    """Per part, the least sure answers go up first; the cheapest combination keeping 95 % of the large
    model's mix accuracy is chosen (here: the unsure wrong short answer, nothing of GSM8K, whose unsure
    answer the large model gets wrong too)."""
    sure, unsure = math.log(0.95), math.log(0.01)

    def item(part: str, item_id: str, logprob: float, small_ok: bool, large_ok: bool) -> routing_mix.Item:
        tokens = [TokenLogprob(" w", logprob, ())] * 5

        def answer(ok: bool) -> routing_mix.Answer:
            return routing_mix.Answer(ok=ok, seconds=1.0, n=5, tokens=tokens, whole=measures(tokens))

        request = ChatRequest(messages=(Message("user", item_id),), model="auto")
        return routing_mix.Item(part, item_id, request, answer(small_ok), answer(large_ok))

    items = [
        item("short", "a", sure, True, True),
        item("short", "b", unsure, False, True),
        item("gsm8k", "c", sure, True, True),
        item("gsm8k", "d", unsure, False, False),
    ]
    routing = Routing(Router(RouterPolicy(tiers=())), Scorer(), buffer_tokens=20)
    top = routing_mix.ceiling(items, routing)
    assert top["escalated"] == {"short": 0.5, "gsm8k": 0.0}
    assert top["share"] == 0.25 and top["accuracy"] == 0.75  # the large model's own mix accuracy
    assert routing_mix.ceiling(items, routing, of_large=1.5)["share"] is None


def test_the_ceiling_ranks_by_another_score_when_given_one() -> None:
    """``score(item, tokens)`` replaces the scorer's confidence: ranked by it, the sure-looking wrong answer
    goes up first (the question-aware measurement, bench/routing_question.py, passes its own)."""
    sure, unsure = math.log(0.95), math.log(0.01)

    def item(item_id: str, logprob: float, small_ok: bool) -> routing_mix.Item:
        tokens = [TokenLogprob(" w", logprob, ())] * 5
        answer = routing_mix.Answer(ok=small_ok, seconds=1.0, n=5, tokens=tokens, whole=measures(tokens))
        request = ChatRequest(messages=(Message("user", item_id),), model="auto")
        big = routing_mix.Answer(ok=True, seconds=1.0, n=5, tokens=tokens, whole=measures(tokens))
        return routing_mix.Item("short", item_id, request, answer, big)

    items = [item("a", unsure, True), item("b", sure, False)]
    routing = Routing(Router(RouterPolicy(tiers=())), Scorer(), buffer_tokens=20)
    assert routing_mix.ceiling(items, routing)["escalated"] == {"short": 1.0}  # b is the more confident
    by_name = routing_mix.ceiling(items, routing, score=lambda i, _tokens: 0.1 if i.id == "b" else 0.9)
    assert by_name["escalated"] == {"short": 0.5} and by_name["accuracy"] == 1.0


def test_a_perfect_confidence_sends_the_small_models_wrong_answers_up_first() -> None:
    """It knows which small answers are wrong, not which of them the large model gets right: sending up k
    of a part's W wrong answers is expected to rescue k/W of those the large model gets right. Short: the
    small model wrong on 2 of 4, the large model right on 1 of those and on both others (0.5 → 0.75);
    GSM8K: the small model wrong on 1 of 2, the large model right on both (0.5 → 1.0). 90 % of the large
    model's mix accuracy (0.875) is 0.7875: one short answer sent up (expected 0.625 there) and GSM8K's
    wrong one (1.0) give 0.8125 at a share of 0.375; both short ones are needed for 95 % (0.83125)."""
    tokens = [TokenLogprob(" w", math.log(0.5), ())] * 5

    def item(part: str, item_id: str, small_ok: bool, large_ok: bool) -> routing_mix.Item:
        def answer(ok: bool) -> routing_mix.Answer:
            return routing_mix.Answer(ok=ok, seconds=1.0, n=5, tokens=tokens, whole=measures(tokens))

        request = ChatRequest(messages=(Message("user", item_id),), model="auto")
        return routing_mix.Item(part, item_id, request, answer(small_ok), answer(large_ok))

    items = [
        item("short", "a", True, True),
        item("short", "b", True, True),
        item("short", "c", False, True),
        item("short", "d", False, False),
        item("gsm8k", "e", False, True),
        item("gsm8k", "f", True, True),
    ]
    best = routing_mix.perfect_confidence(items, of_large=0.9)
    assert best["escalated"] == {"short": 0.25, "gsm8k": 0.5}
    assert best["share"] == 0.375 and best["accuracy"] == pytest.approx(0.8125)
    best = routing_mix.perfect_confidence(items)
    assert best["escalated"] == {"short": 0.5, "gsm8k": 0.5}
    assert best["share"] == 0.5 and best["accuracy"] == pytest.approx(0.875)


def test_the_question_measurement_joins_the_answer_and_question_inputs() -> None:
    """bench/routing_question.py: a variant's inputs are the answer's measures, then its question measures
    (and, crossed, the products of three answer measures with four question measures); one bar for all parts
    keeps the large model's share of accuracy with the fewest escalated."""
    request = ChatRequest(messages=(Message("user", "What is 12 + 30 * 2? Show the steps."),), model="auto")
    answer = np.arange(len(rq.MEASURES), dtype=float)
    plain = rq.Variant("dense", rq.PLAIN)
    q = plain.question(request)
    assert len(q) == len(rq.PLAIN) and not set(rq.CONSTANT) & set(rq.PLAIN)
    assert plain.inputs(answer, q).tolist() == [*answer, *q]
    assert rq.Variant("none").inputs(answer, rq.Variant("none").question(request)).tolist() == answer.tolist()
    crossed = rq.Variant("x", rq.PLAIN, cross=True)
    joined = crossed.inputs(answer, crossed.question(request))
    assert len(joined) == len(answer) + len(q) + 3 * 4
    mean, numbers = rq.MEASURES.index("mean_logprob"), rq.PLAIN.index("numbers")
    assert joined[len(answer) + len(q) + 3] == answer[mean] * q[numbers]  # (mean_logprob, numbers)

    def item(part: str, small_ok: bool, large_ok: bool) -> routing_mix.Item:
        tokens = [TokenLogprob(" w", -0.1, ())]
        a = routing_mix.Answer(small_ok, 1.0, 1, tokens, measures(tokens))
        b = routing_mix.Answer(large_ok, 1.0, 1, tokens, measures(tokens))
        return routing_mix.Item(part, "x", request, a, b)

    items = [item("short", False, True), item("short", True, True), item("code", True, True)]
    share, bar = rq.one_bar(items, np.asarray([0.2, 0.8, 0.9]), of_large=1.0)
    assert (share, bar) == (0.25, 0.8)  # the unsure wrong short answer alone: half of one part of two
