"""Function calling in ``/v1/responses`` through the ``openai`` SDK, with a scripted model whose calls are
parsed like a real one's: ``function_call`` items (JSON and streamed events), the tool loop by
``previous_response_id`` and by sending the output back, and ``tool_choice`` reaching the model."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import openai
import pytest
from fastapi.testclient import TestClient

from groupqwen.backends.fake import FakeBackend
from groupqwen.testing import fake_services, fake_settings, gateway

from .test_tools import CALLS

WEATHER: Any = {
    "type": "function",
    "name": "get_weather",
    "description": "The weather in a city",
    "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
}
TIME: Any = {"type": "function", "name": "get_time", "parameters": {"type": "object"}}
ASK = "Weather in Paris and Oslo?"


@pytest.fixture
def caller() -> FakeBackend:
    return FakeBackend(model_id="fake", tokens=CALLS)


@pytest.fixture
def http(tmp_path: Path, caller: FakeBackend) -> Iterator[TestClient]:
    with gateway(fake_services(fake_settings(tmp_path), caller)) as client:
        yield client


def _sdk(http: TestClient) -> openai.OpenAI:
    return openai.OpenAI(base_url="http://testserver/v1", api_key="x", http_client=http, max_retries=0)


def _calls(output: list[Any]) -> list[tuple[str, dict[str, Any]]]:
    return [(item.name, json.loads(item.arguments)) for item in output if item.type == "function_call"]


def test_calls_come_back_as_function_call_items(http: TestClient, caller: FakeBackend) -> None:
    response = _sdk(http).responses.create(model="fake", input=ASK, tools=[WEATHER, TIME])
    assert response.status == "completed"
    assert [item.type for item in response.output] == ["message", "function_call", "function_call"]
    assert response.output_text == "Checking."
    assert _calls(response.output) == [("get_weather", {"city": "Paris"}), ("get_weather", {"city": "Oslo"})]
    calls = [item for item in response.output if item.type == "function_call"]
    assert all(c.call_id.startswith("call_") and (c.id or "").startswith("fc_") for c in calls)
    assert len({c.call_id for c in calls} | {c.id for c in calls}) == 4
    assert [t.name for t in response.tools if t.type == "function"] == ["get_weather", "get_time"]
    assert response.tool_choice == "auto"
    tools = caller.requests[-1].tools
    assert tools is not None and tools.choice == "auto" and tools.parallel
    assert tools.functions[0].parameters == WEATHER["parameters"]


def test_streamed_calls_are_typed_events(http: TestClient) -> None:
    body = {"model": "fake", "input": ASK, "tools": [WEATHER], "stream": True}
    with http.stream("POST", "/v1/responses", json=body) as streamed:
        lines = [line for line in streamed.iter_lines() if line.startswith("data: ")]
    events = [json.loads(line.removeprefix("data: ")) for line in lines]
    assert [e["sequence_number"] for e in events] == list(range(len(events)))
    added = [e["item"]["type"] for e in events if e["type"] == "response.output_item.added"]
    assert added == ["message", "function_call", "function_call"]
    first_call = next(
        e for e in events if e["type"] == "response.output_item.added" and e["output_index"] == 1
    )
    assert first_call["item"]["name"] == "get_weather" and first_call["item"]["arguments"] == ""
    deltas = [e for e in events if e["type"] == "response.function_call_arguments.delta"]
    assert {d["output_index"] for d in deltas} == {1, 2}
    joined = "".join(d["delta"] for d in deltas if d["output_index"] == 1)
    dones = [e for e in events if e["type"] == "response.function_call_arguments.done"]
    assert [json.loads(d["arguments"]) for d in dones] == [{"city": "Paris"}, {"city": "Oslo"}]
    assert dones[0]["arguments"] == joined and dones[0]["name"] == "get_weather"
    assert dones[0]["item_id"] == first_call["item"]["id"]
    final = events[-1]
    assert final["type"] == "response.completed"
    items = final["response"]["output"]
    assert [i["type"] for i in items] == ["message", "function_call", "function_call"]
    assert items[1]["id"] == first_call["item"]["id"] and items[1]["status"] == "completed"

    # the SDK's stream helper assembles the same response
    with _sdk(http).responses.stream(model="fake", input=ASK, tools=[WEATHER]) as stream:
        for _ in stream:
            pass
        assembled = stream.get_final_response()
    assert _calls(assembled.output) == [("get_weather", {"city": "Paris"}), ("get_weather", {"city": "Oslo"})]


def _conversation(caller: FakeBackend) -> list[tuple[str, str, tuple[str, ...], str | None]]:
    return [
        (m.role, m.content, tuple(c.name for c in m.tool_calls), m.tool_call_id)
        for m in caller.requests[-1].messages
    ]


def test_the_tool_loop_by_previous_response_id(http: TestClient, caller: FakeBackend) -> None:
    sdk = _sdk(http)
    first = sdk.responses.create(model="fake", input=ASK, tools=[WEATHER])
    calls = [item for item in first.output if item.type == "function_call"]
    results: Any = [
        {"type": "function_call_output", "call_id": c.call_id, "output": f"{i + 20} C"}
        for i, c in enumerate(calls)
    ]
    second = sdk.responses.create(model="fake", input=results, previous_response_id=first.id, tools=[WEATHER])
    assert _conversation(caller) == [
        ("user", ASK, (), None),
        ("assistant", "Checking.", ("get_weather", "get_weather"), None),
        ("tool", "20 C", (), calls[0].call_id),
        ("tool", "21 C", (), calls[1].call_id),
    ]
    listed = sdk.responses.input_items.list(second.id, order="asc").data
    assert [(item.type, getattr(item, "call_id", None)) for item in listed] == [
        ("function_call_output", calls[0].call_id),
        ("function_call_output", calls[1].call_id),
    ]
    # the second answer's calls are stored too: a third turn may answer them
    again = [item for item in second.output if item.type == "function_call"]
    third: Any = [{"type": "function_call_output", "call_id": again[0].call_id, "output": "ok"}]
    sdk.responses.create(model="fake", input=third, previous_response_id=second.id)
    assert _conversation(caller)[-1] == ("tool", "ok", (), again[0].call_id)


def test_the_tool_loop_by_sending_the_output_back(http: TestClient, caller: FakeBackend) -> None:
    sdk = _sdk(http)
    first = sdk.responses.create(model="fake", input=ASK, tools=[WEATHER], store=False)
    calls = [item for item in first.output if item.type == "function_call"]
    turns: Any = [
        {"role": "user", "content": ASK},
        *(item.model_dump(exclude_none=True) for item in first.output),
        *({"type": "function_call_output", "call_id": c.call_id, "output": "20 C"} for c in calls),
    ]
    second = sdk.responses.create(model="fake", input=turns, tools=[WEATHER])
    assert _conversation(caller)[1] == ("assistant", "Checking.", ("get_weather", "get_weather"), None)
    assert [role for role, *_ in _conversation(caller)] == ["user", "assistant", "tool", "tool"]
    listed = [item.model_dump() for item in sdk.responses.input_items.list(second.id, order="asc").data]
    assert [item["type"] for item in listed] == [
        "message",
        "message",
        "function_call",
        "function_call",
        "function_call_output",
        "function_call_output",
    ]
    assert listed[-1]["call_id"] == calls[1].call_id and listed[-1]["output"] == "20 C"


def test_tool_choice_reaches_the_model(http: TestClient, caller: FakeBackend) -> None:
    sdk = _sdk(http)
    named = sdk.responses.create(
        model="fake",
        input=ASK,
        tools=[WEATHER, TIME],
        tool_choice={"type": "function", "name": "get_weather"},
        parallel_tool_calls=False,
    )
    tools = caller.requests[-1].tools
    assert tools is not None and (tools.choice, tools.name, tools.parallel) == ("named", "get_weather", False)
    assert named.tool_choice.type == "function" and named.tool_choice.name == "get_weather"  # type: ignore[union-attr]
    assert named.parallel_tool_calls is False
    sdk.responses.create(model="fake", input=ASK, tools=[WEATHER], tool_choice="required")
    assert caller.requests[-1].tools is not None and caller.requests[-1].tools.choice == "required"


def test_tool_choice_none_answers_in_text(http: TestClient) -> None:
    response = _sdk(http).responses.create(model="fake", input=ASK, tools=[WEATHER], tool_choice="none")
    assert [item.type for item in response.output] == ["message"]
    assert "<tool_call>" in response.output_text
