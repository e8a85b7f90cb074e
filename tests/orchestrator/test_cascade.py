"""The cascade with scripted fake backends: logprobs that force escalation and that avoid it."""

from __future__ import annotations

import logging
import math
from collections.abc import AsyncGenerator, Sequence

import pytest

from groupqwen.backends.fake import FakeBackend
from groupqwen.catalog import ModelSpec
from groupqwen.errors import BackendError, UpstreamError
from groupqwen.messages import CascadeStep, ChatRequest, Chunk, Decision, GenerationRequest, Message
from groupqwen.orchestrator.cascade import Cascade
from groupqwen.orchestrator.classifier import Logistic
from groupqwen.orchestrator.confidence import MEASURES, TOP_K, Calibration, Scorer
from groupqwen.orchestrator.router import Router, RouterPolicy
from groupqwen.orchestrator.weights import Routing
from groupqwen.pool.scheduler import Pool

SURE, UNSURE = math.log(0.95), math.log(0.2)  # uncalibrated score: the geometric mean probability


def spec(model_id: str, thinking: bool = False) -> ModelSpec:
    return ModelSpec(model_id, "fake", "?", 4096, 0, backend="fake", thinking=thinking)


def cascade(
    small: FakeBackend, large: FakeBackend, buffer_tokens: int = 8, scorer: Scorer | None = None
) -> Cascade:
    specs = {"small": spec("small"), "large": spec("large", thinking=True)}
    backends = {"small": small, "large": large}
    pool = Pool(specs, lambda s: backends[s.id], need=lambda s: 0, budget=1 << 40, max_queue=16)
    return Cascade(pool, Routing(Router(RouterPolicy(tiers=())), scorer or Scorer(), buffer_tokens))


def early_scorer(early: Sequence[float], models: Sequence[str] = ("small",)) -> Scorer:
    """A calibration of ``models`` scoring ``sigmoid(3 + mean logprob)`` (a sure token 0.95, a 1 % one
    0.17), with ``early`` as its early bars at 1, 2, … tokens for bars from 0.5 (and none below)."""
    n = len(MEASURES)
    model = Logistic((1.0,) + (0.0,) * (n - 1), 3.0, (0.0,) * n, (1.0,) * n)
    return Scorer({m: Calibration(model, early=((0.5, tuple(early)),)) for m in models})


STEPS = (CascadeStep("small", 0.5, False), CascadeStep("large", None, True))
ROUTE = Decision("small", "auto", "test", False, steps=STEPS)


def ask(**kwargs: object) -> ChatRequest:
    return ChatRequest(messages=(Message("user", "2+2?"),), model="auto", **kwargs)  # type: ignore[arg-type]


async def run(
    c: Cascade, request: ChatRequest, route: Decision = ROUTE
) -> tuple[str, list[Chunk], list[Decision]]:
    decisions: list[Decision] = []
    chunks: list[Chunk] = []
    async for chunk in c.stream(request, route, decisions.append):
        assert decisions, "the decision is known before the first chunk"
        chunks.append(chunk)
    return "".join(ch.text for ch in chunks), chunks, decisions


def fake(model_id: str, tokens: Sequence[str], logprob: float, **kwargs: object) -> FakeBackend:
    return FakeBackend(model_id=model_id, tokens=tuple(tokens), logprob=logprob, **kwargs)  # type: ignore[arg-type]


async def test_confident_small_answer_is_kept() -> None:
    small, large = fake("small", ["4"], SURE), fake("large", ["Four"], SURE)
    text, chunks, decisions = await run(cascade(small, large), ask())
    assert text == "4" and chunks[-1].finish_reason == "stop"
    (decision,) = decisions
    assert decision.model == "small" and decision.escalations == 0
    assert decision.confidence == pytest.approx(0.95) and decision.thinking is False
    assert large.requests == [] and small.requests[0].top_logprobs == TOP_K


async def test_unsure_small_answer_escalates_and_the_client_sees_one_answer() -> None:
    small, large = fake("small", ["5"], UNSURE), fake("large", ["4"], SURE)
    text, _, decisions = await run(cascade(small, large), ask())
    assert text == "4"
    final = decisions[-1]
    assert final.model == "large" and final.escalations == 1 and final.confidence is None
    assert final.thinking is True  # the large model supports it and the route wished it
    assert "small escalated at confidence 0.20" in final.reason
    assert large.requests[0].top_logprobs == 0  # the final step is not scored


async def test_a_client_that_does_not_stream_has_only_the_final_step_answer_whole() -> None:
    """A scored step is streamed from its model (it may be abandoned early); the last, unscored, is asked
    for whole when the client does not stream (an HTTP backend then gets one JSON answer)."""
    small, large = fake("small", ["5"], UNSURE), fake("large", ["4"], SURE)
    text, _, _ = await run(cascade(small, large), ask(stream=False))
    assert text == "4" and small.requests[0].stream and not large.requests[0].stream
    small, large = fake("small", ["5"], UNSURE), fake("large", ["4"], SURE)
    await run(cascade(small, large), ask())
    assert small.requests[0].stream and large.requests[0].stream


async def test_long_unsure_answer_is_abandoned_after_the_buffer() -> None:
    small = fake("small", [" la"] * 100, UNSURE)
    large = fake("large", ["ok"], SURE)
    text, _, decisions = await run(cascade(small, large, buffer_tokens=8), ask())
    assert text == "ok" and decisions[-1].model == "large"
    assert small.cancelled == 1  # stopped after 8 of its 100 tokens


async def test_long_confident_answer_commits_after_the_buffer_and_streams_the_rest() -> None:
    small = fake("small", [f" w{i}" for i in range(30)], SURE)
    large = fake("large", ["never"], SURE)
    text, _chunks, decisions = await run(cascade(small, large, buffer_tokens=8), ask())
    assert text == "".join(f" w{i}" for i in range(30)) and len(decisions) == 1
    assert decisions[0].model == "small" and large.requests == []


async def test_failing_small_tier_escalates_and_failing_last_tier_raises() -> None:
    small = fake("small", ["4"], SURE, fail_after=0)
    text, _, decisions = await run(cascade(small, fake("large", ["4"], SURE)), ask())
    assert text == "4" and "small failed: backend_error" in decisions[-1].reason
    broken = fake("large", ["4"], SURE, fail_after=0)
    with pytest.raises(BackendError):
        await run(cascade(fake("small", ["5"], UNSURE), broken), ask())


class RateLimited(FakeBackend):
    """A server that answers 429 with no error code of its own (``UpstreamError``)."""

    async def stream(self, request: GenerationRequest) -> AsyncGenerator[Chunk, None]:
        raise UpstreamError("slow down", status=429, error_type=None, code=None, retry_after=2)
        yield  # pragma: no cover


async def test_a_tier_its_server_refuses_escalates_with_the_servers_status() -> None:
    text, _, decisions = await run(cascade(RateLimited(model_id="small"), fake("large", ["4"], SURE)), ask())
    assert text == "4" and "small failed: upstream_429" in decisions[-1].reason


async def test_a_failing_tier_is_logged_once_by_the_cascade_that_escalates(
    caplog: pytest.LogCaptureFixture,
) -> None:
    small = fake("small", ["4"], SURE, fail_after=0)
    with caplog.at_level(logging.INFO, logger="groupqwen"):
        text, _, _ = await run(cascade(small, fake("large", ["4"], SURE)), ask())
    assert text == "4"
    [logged] = [r for r in caplog.records if r.levelno >= logging.WARNING]
    assert logged.getMessage() == "cascade escalates" and logged.name == "groupqwen.orchestrator.cascade"
    assert logged.kv == {  # type: ignore[attr-defined]
        "model": "small",
        "to": "large",
        "outcome": "failed: backend_error",
        "confidence": None,
        "error": "model 'small' failed: scripted failure",
    }


async def test_a_bar_of_zero_streams_live_and_still_escalates_a_failure() -> None:
    small = fake("small", [f" w{i}" for i in range(30)], UNSURE, fail_after=3)
    route = Decision("small", "auto", "test", False, steps=(CascadeStep("small", 0.0, False), STEPS[1]))
    decisions: list[Decision] = []
    stream = cascade(small, fake("large", ["never"], SURE), buffer_tokens=8).stream(
        ask(), route, decisions.append
    )
    # passed on as they come: a held-back buffer would have escalated on the failure at the 4th token
    assert [(await anext(stream)).text for _ in range(3)] == [" w0", " w1", " w2"]
    with pytest.raises(BackendError):
        await anext(stream)
    assert [d.model for d in decisions] == ["small"] and decisions[0].confidence is None
    streamed = fake("small", [f" w{i}" for i in range(30)], UNSURE)
    text, chunks, decisions = await run(cascade(streamed, fake("large", ["never"], SURE)), ask(), route)
    assert text == "".join(f" w{i}" for i in range(30)) and chunks[-1].finish_reason == "stop"
    assert [d.confidence is None for d in decisions] == [True, False]  # scored after 8 tokens
    failing = fake("small", ["5"], UNSURE, fail_after=0)
    text, _, decisions = await run(cascade(failing, fake("large", ["4"], SURE)), ask(), route)
    assert text == "4" and "small failed: backend_error" in decisions[-1].reason


async def test_client_gets_only_the_alternatives_it_asked_for() -> None:
    small = fake("small", ["4"], SURE)
    _, chunks, _ = await run(cascade(small, fake("large", ["4"], SURE)), ask(logprobs=True, top_logprobs=1))
    assert small.requests[0].top_logprobs == TOP_K
    assert all(len(t.top) <= 1 for ch in chunks for t in ch.logprobs)


async def test_single_step_route_streams_live() -> None:
    large = fake("large", ["a", "b"], UNSURE)
    route = Decision("large", "auto:best", "best", False)
    text, _, decisions = await run(cascade(fake("small", ["x"], SURE), large), ask(), route)
    assert text == "ab" and decisions[0].model == "large" and decisions[0].escalations == 0


async def test_a_confidence_drop_aborts_the_small_model_early() -> None:
    """Sure for 10 tokens, then unsure: the running confidence falls below the bar a few tokens after the
    drop, and the small model stops there — long before its 300 tokens and its buffer of 100."""
    logprobs = [SURE] * 10 + [math.log(0.01)] * 290
    small = FakeBackend(model_id="small", tokens=(" w",) * 300, logprobs=logprobs)
    large = fake("large", ["4"], SURE)
    text, _, decisions = await run(cascade(small, large, buffer_tokens=100), ask())
    assert text == "4" and small.cancelled == 1
    final = decisions[-1]
    assert final.model == "large" and final.escalations == 1
    # geometric mean of 0.95 x10 and 0.01 xk drops under 0.5 at k = 2: 12 tokens generated
    assert "small aborted at token 12 at confidence" in final.reason
    assert final.abandoned_tokens == 12


async def test_running_confidence_is_checked_from_min_tokens_on() -> None:
    """Without early bars (a model with no calibration), an unsure first token does not abort by itself:
    the check starts at ``min_tokens``; a short answer that ends sure is kept."""
    small = FakeBackend(model_id="small", tokens=("Well", ",", " 4"), logprobs=[UNSURE, SURE, SURE])
    c = cascade(small, fake("large", ["never"], SURE), buffer_tokens=100)
    text, _, decisions = await run(c, ask())
    assert text == "Well, 4" and decisions[-1].model == "small" and decisions[-1].abandoned_tokens == 0


async def test_an_answer_that_ends_unsure_escalates_with_its_tokens_counted() -> None:
    small = fake("small", ["5", " or", " 6"], UNSURE)
    text, _, decisions = await run(cascade(small, fake("large", ["4"], SURE), buffer_tokens=100), ask())
    assert text == "4" and "small escalated at confidence 0.20" in decisions[-1].reason
    assert decisions[-1].abandoned_tokens == 3


UNLIKELY = math.log(0.01)


@pytest.mark.parametrize(
    ("early", "logprobs", "left_at"),
    [
        ((0.3,), [UNLIKELY, SURE, SURE], 1),  # the first token's score 0.17 is under its bar 0.3
        ((0.1, 0.3), [UNLIKELY, UNLIKELY, SURE], 2),  # passes at 1, under the bar at 2
        ((0.1, 0.1, 0.1), [UNLIKELY, SURE, SURE], None),  # over every early bar, and ends sure (0.81)
    ],
)
async def test_an_answer_is_left_at_the_first_token_below_that_lengths_early_bar(
    early: tuple[float, ...], logprobs: list[float], left_at: int | None
) -> None:
    """Before ``min_tokens`` the running confidence is checked against the early bar its calibration has
    for that length: the small model stops at the first token below it, not at the end of its answer."""
    small = FakeBackend(model_id="small", tokens=("7", "2", "0"), logprobs=logprobs)
    large = fake("large", ["4"], SURE)
    text, _, decisions = await run(
        cascade(small, large, buffer_tokens=100, scorer=early_scorer(early)), ask()
    )
    final = decisions[-1]
    if left_at is None:
        assert text == "720" and final.model == "small" and small.cancelled == 0
        return
    assert text == "4" and final.model == "large" and small.cancelled == 1
    assert f"small aborted at token {left_at} at confidence 0.17" in final.reason
    assert final.abandoned_tokens == left_at


async def test_an_early_bar_is_never_above_the_steps_own_bar() -> None:
    """An early bar of 0.99 over a step held to 0.5: a sure answer (0.95) is kept, not cut at token 1."""
    small = fake("small", ["4", "2"], SURE)
    c = cascade(small, fake("large", ["never"], SURE), buffer_tokens=100, scorer=early_scorer((0.99, 0.99)))
    text, _, decisions = await run(c, ask())
    assert text == "42" and decisions[-1].model == "small" and decisions[-1].abandoned_tokens == 0
