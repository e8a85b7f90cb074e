"""The routing benchmark's own parts: code graded by running its tests, and the cascade replayed on
recorded tokens as the real cascade decides (bench/routing_code.py, routing_long.py, routing_mix.py)."""

from __future__ import annotations

import math
import sys
from pathlib import Path

import pytest

from groupqwen.backends.fake import FakeBackend
from groupqwen.messages import TokenLogprob
from groupqwen.orchestrator.confidence import Scorer, measures
from groupqwen.orchestrator.router import Router, RouterPolicy
from groupqwen.orchestrator.weights import Routing

ROOT = Path(__file__).resolve().parents[2]
sys.path[:0] = [str(ROOT / "scripts"), str(ROOT / "bench")]

import routing_code  # noqa: E402
import routing_long  # noqa: E402
import routing_mix  # noqa: E402

from orchestrator.test_cascade import ROUTE, ask, cascade, fake, run  # noqa: E402


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
