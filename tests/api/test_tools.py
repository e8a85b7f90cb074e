"""Tool calling, ``n`` choices, penalties and ``logit_bias`` on ``/v1/chat/completions``, through the
``openai`` SDK and on the raw wire, with a scripted model whose calls are parsed like a real one's."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import openai
import pytest
from fastapi.testclient import TestClient

from groupqwen.backends.fake import FakeBackend
from groupqwen.cache.embedders import HashingEmbedder
from groupqwen.messages import Message, Sampling, Tool, ToolCall, Tools
from groupqwen.testing import fake_services, fake_settings, gateway

from .test_chat import make_services, sync_client

WEATHER = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "The weather in a city",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
    },
}
TIME = {"type": "function", "function": {"name": "get_time", "parameters": {"type": "object"}}}
ASK = [{"role": "user", "content": "Weather in Paris and Oslo?"}]
CALLS = (
    "Checking.",
    "\n<tool_call>\n",
    '{"name": "get_weather", ',
    '"arguments": {"city": ',
    '"Paris"}}\n</tool_call>\n<tool_call>\n{"name": "get_weather", "arguments": {"city": "Oslo"}}',
    "\n</tool_call>",
)


@pytest.fixture
def caller() -> FakeBackend:
    return FakeBackend(model_id="fake", tokens=CALLS)


@pytest.fixture
def sdk(tmp_path: Path, caller: FakeBackend) -> Iterator[tuple[openai.OpenAI, TestClient]]:
    with sync_client(make_services(tmp_path, {"fake": caller})) as pair:
        yield pair


def test_calls_come_back_as_tool_calls(sdk: tuple[openai.OpenAI, TestClient], caller: FakeBackend) -> None:
    client, _ = sdk
    done = client.chat.completions.create(model="fake", messages=ASK, tools=[WEATHER, TIME])  # type: ignore[list-item]
    choice = done.choices[0]
    assert choice.finish_reason == "tool_calls"
    assert choice.message.content == "Checking."
    calls = choice.message.tool_calls or []
    assert [(c.type, c.function.name, json.loads(c.function.arguments)) for c in calls] == [
        ("function", "get_weather", {"city": "Paris"}),
        ("function", "get_weather", {"city": "Oslo"}),
    ]
    assert len({c.id for c in calls}) == 2 and all(c.id.startswith("call_") for c in calls)
    tools = caller.requests[-1].tools
    assert tools is not None
    assert (
        tools.choice == "auto"
        and tools.parallel
        and [t.name for t in tools.functions]
        == [
            "get_weather",
            "get_time",
        ]
    )
    assert tools.functions[0].parameters == WEATHER["function"]["parameters"]  # type: ignore[index]


def test_streamed_calls_have_openais_chunk_shape(sdk: tuple[openai.OpenAI, TestClient]) -> None:
    _, http = sdk
    body = {"model": "fake", "messages": ASK, "tools": [WEATHER], "stream": True}
    with http.stream("POST", "/v1/chat/completions", json=body) as response:
        events = [line[6:] for line in response.iter_lines() if line.startswith("data: ")]
    assert events[-1] == "[DONE]"
    chunks = [json.loads(e) for e in events[:-1]]
    deltas = [c["choices"][0]["delta"] for c in chunks]
    pieces = [p for d in deltas for p in d.get("tool_calls", [])]
    firsts = [p for p in pieces if "id" in p]
    assert [p["index"] for p in firsts] == [0, 1]
    for first in firsts:
        assert set(first) == {"index", "id", "type", "function"} and first["type"] == "function"
        assert first["function"]["name"] == "get_weather"
    more = [p for p in pieces if "id" not in p]
    assert more and all(set(p) == {"index", "function"} and set(p["function"]) == {"arguments"} for p in more)
    by_index: dict[int, str] = {}
    for piece in pieces:
        by_index[piece["index"]] = by_index.get(piece["index"], "") + piece["function"]["arguments"]
    assert [json.loads(a) for a in by_index.values()] == [{"city": "Paris"}, {"city": "Oslo"}]
    assert len([p for p in pieces if p["index"] == 0]) > 2  # the arguments came in several pieces
    assert all("content" not in d for d in deltas if "tool_calls" in d)
    assert "".join(d.get("content") or "" for d in deltas) == "Checking."
    assert chunks[-1]["choices"][0]["finish_reason"] == "tool_calls"


def test_the_sdk_assembles_a_streamed_call(sdk: tuple[openai.OpenAI, TestClient]) -> None:
    client, _ = sdk
    stream = client.chat.completions.create(model="fake", messages=ASK, tools=[WEATHER], stream=True)  # type: ignore[list-item]
    names: dict[int, str] = {}
    arguments: dict[int, str] = {}
    finish = None
    for chunk in stream:
        for piece in chunk.choices[0].delta.tool_calls or []:
            if piece.function and piece.function.name:
                names[piece.index] = piece.function.name
            if piece.function and piece.function.arguments:
                arguments[piece.index] = arguments.get(piece.index, "") + piece.function.arguments
        finish = chunk.choices[0].finish_reason or finish
    assert names == {0: "get_weather", 1: "get_weather"}
    assert json.loads(arguments[1]) == {"city": "Oslo"}
    assert finish == "tool_calls"


def test_the_tool_loop_reaches_the_backend_intact(
    sdk: tuple[openai.OpenAI, TestClient], caller: FakeBackend
) -> None:
    """An assistant turn with calls and the tool results, sent back: the model sees them as internal
    messages, and with ``tool_choice`` and ``parallel_tool_calls`` as sent."""
    client, _ = sdk
    caller.tokens = ("It is 18 C in Paris.",)
    messages: list[Any] = [
        *ASK,
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [
                {
                    "id": "call_a",
                    "type": "function",
                    "function": {"name": "get_weather", "arguments": '{"city": "Paris"}'},
                }
            ],
        },
        {"role": "tool", "tool_call_id": "call_a", "content": "18 C"},
    ]
    done = client.chat.completions.create(
        model="fake",
        messages=messages,
        tools=[WEATHER],  # type: ignore[list-item]
        tool_choice={"type": "function", "function": {"name": "get_weather"}},
        parallel_tool_calls=False,
    )
    assert done.choices[0].message.content == "It is 18 C in Paris."
    assert done.choices[0].finish_reason == "stop" and not done.choices[0].message.tool_calls
    seen = caller.requests[-1]
    assert seen.messages[1:] == (
        Message("assistant", "", tool_calls=(ToolCall("call_a", "get_weather", '{"city": "Paris"}'),)),
        Message("tool", "18 C", tool_call_id="call_a"),
    )
    assert seen.tools == Tools(
        (Tool("get_weather", "The weather in a city", WEATHER["function"]["parameters"]),),  # type: ignore[index]
        "named",
        "get_weather",
        False,
    )


def test_tool_choice_none_reads_calls_as_text(
    sdk: tuple[openai.OpenAI, TestClient], caller: FakeBackend
) -> None:
    client, _ = sdk
    done = client.chat.completions.create(model="fake", messages=ASK, tools=[WEATHER], tool_choice="none")  # type: ignore[list-item]
    assert done.choices[0].finish_reason == "stop" and not done.choices[0].message.tool_calls
    assert "<tool_call>" in (done.choices[0].message.content or "")


def test_a_call_naming_an_unoffered_tool_is_a_clear_error(sdk: tuple[openai.OpenAI, TestClient]) -> None:
    client, http = sdk
    with pytest.raises(openai.APIStatusError) as info:
        client.chat.completions.create(model="fake", messages=ASK, tools=[TIME])  # type: ignore[list-item]
    assert info.value.status_code == 502
    assert "not among the request's tools" in info.value.message
    body = {"model": "fake", "messages": ASK, "tools": [TIME], "stream": True}
    with http.stream("POST", "/v1/chat/completions", json=body) as response:
        events = [line[6:] for line in response.iter_lines() if line.startswith("data: ")]
    assert events[-1] == "[DONE]"
    assert "not among the request's tools" in json.loads(events[-2])["error"]["message"]


def test_n_choices_each_with_its_own_seed(tmp_path: Path) -> None:
    fake = FakeBackend(model_id="fake", tokens=("Hi", "!"))
    with sync_client(make_services(tmp_path, {"fake": fake})) as (client, _):
        done = client.chat.completions.create(model="fake", messages=ASK, n=3, seed=10)
        assert [c.index for c in done.choices] == [0, 1, 2]
        assert all(c.message.content == "Hi!" for c in done.choices)
        assert [r.sampling.seed for r in fake.requests] == [10, 11, 12]
        assert done.usage is not None
        assert done.usage.completion_tokens == 6 and done.usage.prompt_tokens == fake_prompt_tokens(ASK)
        fake.requests.clear()
        client.chat.completions.create(model="fake", messages=ASK, n=2)
        assert [r.sampling.seed for r in fake.requests] == [None, None]
        stream = client.chat.completions.create(
            model="fake", messages=ASK, n=2, stream=True, stream_options={"include_usage": True}
        )
        texts: dict[int, str] = {}
        finishes: dict[int, str] = {}
        usage = None
        for chunk in stream:
            if chunk.usage is not None:
                usage = chunk.usage
            for choice in chunk.choices:
                texts[choice.index] = texts.get(choice.index, "") + (choice.delta.content or "")
                if choice.finish_reason:
                    finishes[choice.index] = choice.finish_reason
        assert texts == {0: "Hi!", 1: "Hi!"} and finishes == {0: "stop", 1: "stop"}
        assert usage is not None and usage.completion_tokens == 4


def fake_prompt_tokens(messages: list[dict[str, str]]) -> int:
    return sum(len(m["content"].split()) + 4 for m in messages)


def test_n_above_one_neither_reads_nor_writes_the_cache(tmp_path: Path) -> None:
    """With the cache on, a repeated question is a hit, unless it asks for several choices."""
    fake = FakeBackend(model_id="fake", tokens=("Hi", "!"))
    settings = fake_settings(tmp_path, cache={"backend": "embedded"})
    with gateway(fake_services(settings, {"fake": fake}, embedder=HashingEmbedder())) as http:
        greet = [{"role": "user", "content": "Greet me."}]  # (a weather question is never kept: answers.py)
        ask = {"model": "fake", "messages": greet, "temperature": 0}
        for _ in range(2):
            response = http.post("/v1/chat/completions", json={**ask, "n": 2})
            assert response.headers["x-groupqwen-cache"] == "bypass"
            assert len(response.json()["choices"]) == 2
        assert len(fake.requests) == 4
        http.post("/v1/chat/completions", json=ask)
        assert http.post("/v1/chat/completions", json=ask).headers["x-groupqwen-cache"] == "hit"


def test_penalties_and_logit_bias_reach_the_model(tmp_path: Path) -> None:
    fake = FakeBackend(model_id="fake")
    with sync_client(make_services(tmp_path, {"fake": fake})) as (client, _):
        client.chat.completions.create(
            model="fake",
            messages=ASK,
            presence_penalty=0.5,
            frequency_penalty=-1,
            logit_bias={"42": -100, "7": 2.5},
            stream=True,
            stream_options={"include_usage": True, "include_obfuscation": False},  # type: ignore[typeddict-unknown-key]
        ).close()
        assert fake.requests[-1].sampling == Sampling(  # no temperature: the model's default
            presence_penalty=0.5, frequency_penalty=-1.0, logit_bias=((7, 2.5), (42, -100.0))
        )
