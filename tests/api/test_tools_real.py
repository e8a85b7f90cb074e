"""The ``openai`` SDK's tool loop end to end on the bundled Qwen models in-process: a call by the 0.5B (JSON
and streamed), the tool's result sent back, an answer from it by the 1.5B (the 0.5B writes its call again
as text instead: docs/api.md, "Tool calling"). One thread, temperature 0, few tokens."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import openai
import pytest

from groupqwen.config import Settings, load_settings
from groupqwen.pool.bundled import ensure_bundled
from groupqwen.testing import fake_services, gateway

pytestmark = pytest.mark.integration

QWEN = "qwen2.5-coder-0.5b"
LARGE = "qwen2.5-coder-1.5b"  # answers from a tool's result
WEATHER: Any = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Get the current weather in a city",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
    },
}


@pytest.fixture
def client(tmp_path: Path) -> Iterator[openai.OpenAI]:
    models_dir = Settings().models_dir
    for model in (QWEN, LARGE):
        ensure_bundled(Settings().catalog()[model], models_dir)
    settings = load_settings(
        models_dir=models_dir,
        data_dir=tmp_path / "data",
        default_model=QWEN,
        n_threads=1,
        n_ctx=1024,
        cache={"backend": "off"},
    )
    with gateway(fake_services(settings)) as http:
        yield openai.OpenAI(base_url="http://testserver/v1", api_key="x", http_client=http, max_retries=0)


def test_the_sdk_tool_loop_on_qwen(client: openai.OpenAI) -> None:
    messages: list[Any] = [{"role": "user", "content": "What is the weather in Paris?"}]
    asked = {"model": QWEN, "tools": [WEATHER], "temperature": 0, "max_tokens": 48}
    done = client.chat.completions.create(messages=messages, **asked)
    choice = done.choices[0]
    assert choice.finish_reason == "tool_calls"
    calls = choice.message.tool_calls or []
    assert [(c.function.name, json.loads(c.function.arguments)) for c in calls] == [  # type: ignore[union-attr]
        ("get_weather", {"city": "Paris"})
    ]

    # the same, streamed: OpenAI's chunks, assembled by the SDK's own helper
    with client.chat.completions.stream(messages=messages, **asked) as stream:  # type: ignore[arg-type]
        for _ in stream:
            pass
        streamed = stream.get_final_completion().choices[0]
    assert streamed.finish_reason == "tool_calls"
    assert [
        (c.function.name, json.loads(c.function.arguments)) for c in streamed.message.tool_calls or []
    ] == [("get_weather", {"city": "Paris"})]

    # the tool's result goes back and the answer is asked for in text
    messages += [
        choice.message.model_dump(exclude_none=True),
        {"role": "tool", "tool_call_id": calls[0].id, "content": "31 C, sunny"},
    ]
    final = client.chat.completions.create(
        messages=messages, **{**asked, "model": LARGE, "tool_choice": "none"}
    )
    assert final.choices[0].finish_reason in ("stop", "length")
    assert not final.choices[0].message.tool_calls
    assert _answers_31(final.choices[0].message.content)


def test_the_sdk_responses_tool_loop_on_qwen(client: openai.OpenAI) -> None:
    """The same loop in the Responses API: a ``function_call`` item (JSON and streamed), its result sent
    back as a ``function_call_output`` after ``previous_response_id``, an answer from it."""
    function = {"type": "function", **WEATHER["function"]}
    asked: Any = {"model": QWEN, "tools": [function], "temperature": 0, "max_output_tokens": 48}
    ask = "What is the weather in Paris?"
    first = client.responses.create(input=ask, **asked)
    calls = [item for item in first.output if item.type == "function_call"]
    assert [(c.name, json.loads(c.arguments)) for c in calls] == [("get_weather", {"city": "Paris"})]

    with client.responses.stream(input=ask, **asked) as stream:
        for _ in stream:
            pass
        streamed = stream.get_final_response()
    assert [(i.name, json.loads(i.arguments)) for i in streamed.output if i.type == "function_call"] == [
        ("get_weather", {"city": "Paris"})
    ]

    result: Any = [{"type": "function_call_output", "call_id": calls[0].call_id, "output": "31 C, sunny"}]
    final = client.responses.create(
        input=result, previous_response_id=first.id, **{**asked, "model": LARGE, "tool_choice": "none"}
    )
    assert [item.type for item in final.output] == ["message"]
    assert _answers_31(final.output_text)


def _answers_31(text: str | None) -> bool:
    """An answer in words from the tool's result: "31" in it, and not the call written again as JSON
    (what the 0.5B writes after a result: ``{"name": "get_weather", …}\n{"response": "31 C, sunny"}``)."""
    return text is not None and "31" in text and "{" not in text
