"""Tools, tool calls and penalties are part of the cache scope (``keys.py``); a tool-call loop that ends on a
tool result is never cached."""

from __future__ import annotations

from dataclasses import replace

from groupqwen.cache.embedders import MiniLMEmbedder
from groupqwen.cache.semantic import SemanticCache
from groupqwen.messages import ChatRequest, Completion, Message, Sampling, Tool, ToolCall, Tools, Usage

from .helpers import embedded_store, policy

WEATHER = Tool("get_weather", "The weather in a city", {"type": "object", "properties": {"city": {}}})
QUESTION = "Which city should I visit in France?"


def ask(tools: Tools | None = None, sampling: Sampling | None = None) -> ChatRequest:
    return ChatRequest((Message("user", QUESTION),), "m", sampling or Sampling(0.0), tools=tools)


async def test_tools_and_penalties_shape_the_scope(minilm: MiniLMEmbedder) -> None:
    cache = SemanticCache(embedded_store(minilm.dim), minilm, policy())
    offered = ask(Tools((WEATHER,)))
    lookup = await cache.lookup(offered, "t", "m")
    assert lookup.status == "miss"
    task = cache.store(lookup, "m", Completion("I can look that up.", "", "stop", Usage(5, 3)), None)
    assert task is not None
    await task
    assert (await cache.lookup(offered, "t", "m")).status == "hit"
    for other in (
        ask(),
        ask(Tools((WEATHER,), choice="required")),
        ask(Tools((WEATHER,), parallel=False)),
        ask(Tools((replace(WEATHER, description="Weather"),))),
        ask(Tools((WEATHER, Tool("get_time")))),
        ask(Tools((WEATHER,)), Sampling(0.0, presence_penalty=0.5)),
        ask(Tools((WEATHER,)), Sampling(0.0, logit_bias=((42, -100.0),))),
    ):
        assert (await cache.lookup(other, "t", "m")).status == "miss", other


async def test_a_conversation_with_earlier_calls_has_its_own_scope(minilm: MiniLMEmbedder) -> None:
    cache = SemanticCache(embedded_store(minilm.dim), minilm, policy())

    def after(arguments: str, result: str) -> ChatRequest:
        call = ToolCall("call_1", "get_weather", arguments)
        return ChatRequest(
            (
                Message("user", QUESTION),
                Message("assistant", "", tool_calls=(call,)),
                Message("tool", result, tool_call_id="call_1"),
                Message("user", "And should I take an umbrella?"),
            ),
            "m",
            Sampling(0.0),
            tools=Tools((WEATHER,)),
        )

    first = after('{"city": "Paris"}', "rain")
    lookup = await cache.lookup(first, "t", "m")
    task = cache.store(lookup, "m", Completion("Yes.", "", "stop", Usage(5, 1)), None)
    assert task is not None
    await task
    assert (await cache.lookup(first, "t", "m")).status == "hit"
    assert (await cache.lookup(after('{"city": "Paris"}', "sun"), "t", "m")).status == "miss"
    assert (await cache.lookup(after('{"city": "Oslo"}', "rain"), "t", "m")).status == "miss"
    # a conversation that ends on a tool result is not looked up at all
    ends_on_result = replace(first, messages=first.messages[:3])
    assert (await cache.lookup(ends_on_result, "t", "m")).status == "bypass"
