"""Only answers worth reusing are kept: not unsure ones from the cascade, not ones about the current date
or time, not ones about the user's earlier turns."""

from __future__ import annotations

import pytest

from groupqwen.cache.answers import unworthy
from groupqwen.cache.embedders import MiniLMEmbedder
from groupqwen.cache.semantic import SemanticCache
from groupqwen.messages import CascadeStep, Decision

from .helpers import embedded_store, policy
from .test_semantic import answer, ask

CASCADE = (CascadeStep("small", 0.6, False), CascadeStep("large", None, False))


def decided(model: str, confidence: float | None) -> Decision:
    return Decision(model, "auto", "routed", False, confidence=confidence, steps=CASCADE)


@pytest.mark.parametrize(
    ("question", "reply", "decision", "reason"),
    [
        ("what is 2+2?", "5", decided("small", 0.3), "low_confidence"),  # below min_confidence
        ("what is 2+2?", "4", decided("small", 0.55), "low_confidence"),  # below its step's bar (0.6)
        ("what is 2+2?", "4", decided("large", 0.45), "low_confidence"),  # the last step, unsure
        ("what day is it today?", "Thursday", None, "time"),
        ("what's the weather right now in paris?", "sunny", None, "time"),
        ("when did the war end?", "As of today, it has not ended.", None, "time"),
        ("what are you doing next friday?", "Nothing yet.", None, "time"),
        ("what year is it?", "2026.", None, "time"),
        ("how many days until christmas?", "21.", None, "time"),
        ("what is the weather like in oslo?", "Snowing.", None, "time"),
        ("what is the apple stock price?", "$231.", None, "time"),
        ("who won the match last night?", "Arsenal.", None, "time"),
        ("what did i ask you before?", "You asked about Paris.", None, "earlier_turns"),
        ("summarise it", "As you mentioned earlier, the plan has three parts.", None, "earlier_turns"),
        ("can you expand on your previous answer?", "Sure.", None, "earlier_turns"),
    ],
)
def test_unworthy_answers(question: str, reply: str, decision: Decision | None, reason: str) -> None:
    assert unworthy(question, reply, decision, 0.5) == reason


@pytest.mark.parametrize(
    ("question", "reply", "decision"),
    [
        ("what is 2+2?", "4", decided("small", 0.9)),
        ("what is 2+2?", "4", decided("large", None)),  # not scored: kept
        ("what is the capital of france?", "Paris.", None),
        ("how many days are in a week?", "Seven.", None),
        ("what happened in the year 1066?", "The Norman conquest of England.", None),
        ("what causes weather on earth?", "The sun heating the air unevenly.", None),
        ("what is the capital of the next country south of france?", "Madrid.", None),
        ("how many days are there in a leap year?", "366.", None),
    ],
)
def test_answers_worth_keeping(question: str, reply: str, decision: Decision | None) -> None:
    assert unworthy(question, reply, decision, 0.5) is None


async def test_the_cache_keeps_none_of_them_and_counts_why(minilm: MiniLMEmbedder) -> None:
    cache = SemanticCache(embedded_store(minilm.dim), minilm, policy())
    for text, reply, decision in (
        ("what is 17 * 23?", "381", decided("small", 0.2)),
        ("what is today's date?", "3 December", None),
        ("what did i just say?", "You said hello.", None),
    ):
        lookup = await cache.lookup(ask(text), "t", "m")
        assert cache.store(lookup, "m", answer(reply), None, decision) is None
        await cache.drain()
        assert (await cache.lookup(ask(text), "t", "m")).status == "miss"
    kept = await cache.lookup(ask("what is 17 * 23?"), "t", "m")
    task = cache.store(kept, "m", answer("391"), None, decided("small", 0.95))
    assert task is not None
    await task
    assert (await cache.lookup(ask("what is 17 * 23?"), "t", "m")).status == "hit"
    stats = await cache.stats()
    assert stats.not_stored == {"low_confidence": 1, "time": 1, "earlier_turns": 1} and stats.stores == 1
