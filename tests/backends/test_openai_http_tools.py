"""Tools through an ``openai_http`` backend: the request goes to the server as the client sent it (tools,
tool choice, calls and results, penalties, logit bias), and the server's calls come back as they stream —
from a scripted server (vLLM's chunk shape) and from a real llama-cpp-python server (a named tool choice,
which it enforces with a grammar), through the gateway and the ``openai`` SDK."""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import openai
import pytest
from servers import ALIAS, LlamaServer

from groupqwen.api.app import create_app
from groupqwen.catalog import builtin_catalog
from groupqwen.config import Settings
from groupqwen.messages import Message, Sampling, Tool, ToolCall, Tools
from groupqwen.orchestrator.answer import merge_tool_calls
from groupqwen.testing import fake_services, fake_settings

from .test_openai_http import Exchange, ask, collect, loaded, raw_server

pytestmark = pytest.mark.integration

WEATHER = Tool(
    "get_weather",
    "Get the current weather in a city",
    {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
)


async def test_tools_go_as_sent_and_streamed_calls_come_back() -> None:
    async def calls(exchange: Exchange) -> None:
        await exchange.send_head()
        first = {
            "index": 0,
            "id": "call_x",
            "type": "function",
            "function": {"name": "get_weather", "arguments": ""},
        }
        await exchange.send_event(
            {"choices": [{"index": 0, "delta": {"role": "assistant", "tool_calls": [first]}}]}
        )
        for piece in ('{"city": ', '"Oslo"}'):
            more = {"index": 0, "function": {"arguments": piece}}
            await exchange.send_event({"choices": [{"index": 0, "delta": {"tool_calls": [more]}}]})
        await exchange.send_event({"choices": [{"index": 0, "delta": {}, "finish_reason": "tool_calls"}]})
        await exchange.send_event("[DONE]")
        await exchange.end()

    history = (
        Message("user", "Weather in Paris, then Oslo?"),
        Message("assistant", "", tool_calls=(ToolCall("call_p", "get_weather", '{"city": "Paris"}'),)),
        Message("tool", "18 C", tool_call_id="call_p"),
    )
    sampling = Sampling(
        0.0, max_tokens=20, presence_penalty=0.5, frequency_penalty=0.25, logit_bias=((42, -100.0),)
    )
    tools = Tools((WEATHER,), choice="named", name="get_weather", parallel=False)
    async with raw_server(calls) as server, loaded(server.url) as backend:
        chunks = await collect(backend, replace(ask(), messages=history, sampling=sampling, tools=tools))
    merged: list[ToolCall] = []
    for chunk in chunks:
        merge_tool_calls(merged, chunk.tool_calls)
    assert merged == [ToolCall("call_x", "get_weather", '{"city": "Oslo"}')]
    assert chunks[-1].finish_reason == "tool_calls"
    body = server.requests[0].body
    assert body["messages"] == [
        {"role": "user", "content": "Weather in Paris, then Oslo?"},
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [
                {
                    "id": "call_p",
                    "type": "function",
                    "function": {"name": "get_weather", "arguments": '{"city": "Paris"}'},
                }
            ],
        },
        {"role": "tool", "content": "18 C", "tool_call_id": "call_p"},
    ]
    assert body["tools"] == [
        {
            "type": "function",
            "function": {
                "name": "get_weather",
                "description": WEATHER.description,
                "parameters": WEATHER.parameters,
            },
        }
    ]
    assert body["tool_choice"] == {"type": "function", "function": {"name": "get_weather"}}
    assert body["parallel_tool_calls"] is False
    assert body["presence_penalty"] == 0.5 and body["frequency_penalty"] == 0.25
    assert body["logit_bias"] == {"42": -100.0}


async def test_no_tools_no_tool_fields() -> None:
    async def answer(exchange: Exchange) -> None:
        await exchange.send_head()
        await exchange.send_event(
            {"choices": [{"index": 0, "delta": {"content": "hi"}, "finish_reason": "stop"}]}
        )
        await exchange.send_event("[DONE]")
        await exchange.end()

    async with raw_server(answer) as server, loaded(server.url) as backend:
        await collect(backend, ask())
    body = server.requests[0].body
    assert not {"tools", "tool_choice", "parallel_tool_calls", "logit_bias", "presence_penalty"} & set(body)


@pytest.fixture(scope="module")
def server() -> Iterator[LlamaServer]:
    from groupqwen.pool.bundled import ensure_bundled

    model = ensure_bundled(builtin_catalog()["smollm2-135m"], Settings().models_dir)
    with LlamaServer(model).serving() as one:
        yield one


def test_a_real_servers_calls_reach_the_sdk(server: LlamaServer, tmp_path: Path) -> None:
    from fastapi.testclient import TestClient

    settings = fake_settings(
        tmp_path,
        models={"remote": {"backend": "openai_http", "urls": [server.url], "remote_model": ALIAS}},
        default_model="remote",
    )
    tool: Any = {"type": "function", "function": {"name": WEATHER.name, "parameters": WEATHER.parameters}}
    asked: dict[str, Any] = {
        "model": "remote",
        "messages": [{"role": "user", "content": "What is the weather in Paris?"}],
        "tools": [tool],
        "tool_choice": {"type": "function", "function": {"name": "get_weather"}},
        "temperature": 0,
        "max_tokens": 24,
    }
    with TestClient(create_app(settings, fake_services(settings))) as http:
        client = openai.OpenAI(base_url="http://testserver/v1", api_key="x", http_client=http, max_retries=0)
        done = client.chat.completions.create(**asked)
        calls = done.choices[0].message.tool_calls or []
        assert [c.function.name for c in calls] == ["get_weather"]  # type: ignore[union-attr]
        assert set(json.loads(calls[0].function.arguments)) <= {"city"}  # type: ignore[union-attr]
        with client.chat.completions.stream(**asked) as stream:
            for _ in stream:
                pass
            streamed = stream.get_final_completion().choices[0].message.tool_calls or []
        assert [(c.function.name, c.function.arguments) for c in streamed] == [
            (c.function.name, c.function.arguments)
            for c in calls  # type: ignore[union-attr]
        ]
