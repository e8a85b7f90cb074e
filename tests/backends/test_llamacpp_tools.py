"""Tool calls, logit bias and penalties in-process, with the bundled Qwen2.5-Coder-0.5B (its GGUF's own chat
template renders the tools) and SmolLM2-135M (a template without tools: folded into the prompt). One
thread, temperature 0, a few tokens."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from dataclasses import replace

import pytest

from groupqwen.backends.llamacpp import LlamaCppBackend
from groupqwen.catalog import ModelSpec, builtin_catalog
from groupqwen.config import load_settings
from groupqwen.errors import InvalidRequest
from groupqwen.messages import (
    Chunk,
    GenerationRequest,
    Message,
    Sampling,
    Tool,
    ToolCall,
    Tools,
)
from groupqwen.orchestrator.answer import merge_tool_calls
from groupqwen.pool.bundled import ensure_bundled

pytestmark = pytest.mark.integration

WEATHER = Tool(
    "get_weather",
    "Get the current weather in a city",
    {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
)
TIME = Tool(
    "get_time",
    "Get the current time in a timezone",
    {"type": "object", "properties": {"timezone": {"type": "string"}}, "required": ["timezone"]},
)
PARIS = (Message("user", "What is the weather in Paris?"),)


def _bundled(model_id: str) -> ModelSpec:
    spec = builtin_catalog()[model_id]
    return replace(spec, path=ensure_bundled(spec, load_settings().models_dir))


@pytest.fixture(scope="module")
def qwen_spec() -> ModelSpec:
    return _bundled("qwen2.5-coder-0.5b")


@pytest.fixture
async def qwen(qwen_spec: ModelSpec) -> AsyncIterator[LlamaCppBackend]:
    backend = LlamaCppBackend(qwen_spec, n_ctx=1024, n_threads=1)
    yield backend
    await backend.close()


def _request(
    messages: tuple[Message, ...] = PARIS,
    tools: Tools | None = None,
    max_tokens: int = 48,
    **sampling: object,
) -> GenerationRequest:
    options: dict[str, object] = {"temperature": 0.0, "max_tokens": max_tokens, **sampling}
    return GenerationRequest(messages=messages, sampling=Sampling(**options), tools=tools)  # type: ignore[arg-type]


async def _run(backend: LlamaCppBackend, request: GenerationRequest) -> tuple[str, list[ToolCall], Chunk]:
    chunks = [chunk async for chunk in backend.stream(request)]
    calls: list[ToolCall] = []
    for chunk in chunks:
        merge_tool_calls(calls, chunk.tool_calls)
    return "".join(c.text for c in chunks), calls, chunks[-1]


async def test_auto_calls_the_tool_the_question_needs(qwen: LlamaCppBackend) -> None:
    text, calls, last = await _run(qwen, _request(tools=Tools((WEATHER, TIME))))
    assert text == ""
    assert [(c.name, json.loads(c.arguments)) for c in calls] == [("get_weather", {"city": "Paris"})]
    assert last.finish_reason == "tool_calls"
    assert last.usage is not None and last.usage.prompt_tokens > 100  # the tools are in the prompt


async def test_required_forces_a_valid_call_by_grammar_streamed_in_pieces(qwen: LlamaCppBackend) -> None:
    ask = (Message("user", "Hello there!"),)
    chunks = [c async for c in qwen.stream(_request(ask, Tools((WEATHER, TIME), choice="required")))]
    pieces = [p for c in chunks for p in c.tool_calls]
    assert pieces[0].id is not None and pieces[0].name in ("get_weather", "get_time")
    assert pieces[0].arguments == "" and len([p for p in pieces if p.index == 0]) > 3
    calls: list[ToolCall] = []
    merge_tool_calls(calls, tuple(pieces))
    assert chunks[-1].finish_reason == "tool_calls" and calls
    for call in calls:
        schema = {"get_weather": "city", "get_time": "timezone"}
        assert set(json.loads(call.arguments)) == {schema[call.name]}


async def test_a_named_function_is_the_one_called(qwen: LlamaCppBackend) -> None:
    tools = Tools((WEATHER, TIME), choice="named", name="get_time", parallel=False)
    _, calls, last = await _run(qwen, _request(tools=tools))
    assert [c.name for c in calls] == ["get_time"] and last.finish_reason == "tool_calls"
    assert isinstance(json.loads(calls[0].arguments)["timezone"], str)


async def test_none_answers_in_text(qwen: LlamaCppBackend) -> None:
    text, calls, last = await _run(qwen, _request(tools=Tools((WEATHER,), choice="none"), max_tokens=12))
    assert text.strip() and calls == [] and last.finish_reason in ("stop", "length")
    assert "<tool_call>" not in text


async def test_the_tool_result_informs_the_answer(qwen: LlamaCppBackend) -> None:
    """The call and its result in the history (rendered by the GGUF's template) reach the model: asked for
    text, this small model writes the call and the result back as JSON rather than answering from it (the
    1.5B answers: tests/api/test_tools_real.py), but the result's "31" is in it."""
    call = ToolCall("call_1", "get_weather", '{"city": "Paris"}')
    loop = (
        *PARIS,
        Message("assistant", "", tool_calls=(call,)),
        Message("tool", "31 C, sunny", tool_call_id="call_1"),
    )
    text, calls, last = await _run(qwen, _request(loop, Tools((WEATHER,), choice="none"), max_tokens=32))
    assert calls == [] and last.finish_reason in ("stop", "length")
    assert "31" in text


async def test_a_template_without_tools_gets_them_folded_in() -> None:
    smol = LlamaCppBackend(_bundled("smollm2-135m"), n_ctx=1024, n_threads=1)
    try:
        tools = Tools((WEATHER,), choice="required", parallel=False)
        _, calls, last = await _run(smol, _request(tools=tools))
    finally:
        await smol.close()
    assert [c.name for c in calls] == ["get_weather"] and last.finish_reason == "tool_calls"
    assert set(json.loads(calls[0].arguments)) == {"city"}


async def test_logit_bias_bans_and_forces_tokens(qwen: LlamaCppBackend) -> None:
    ask = (Message("user", "What is the capital of France? One word."),)
    plain = [c async for c in qwen.stream(replace(_request(ask, max_tokens=3), logprobs=True))]
    first = plain[0].logprobs[0]
    token = qwen._model.llm.tokenize(bytes(first.bytes), add_bos=False, special=True)  # type: ignore[union-attr]
    assert len(token) == 1
    banned = [c async for c in qwen.stream(_request(ask, max_tokens=3, logit_bias=((token[0], -100.0),)))]
    assert "".join(c.text for c in banned) != "".join(c.text for c in plain)
    assert not "".join(c.text for c in banned).startswith(first.token)
    forced_id = qwen._model.llm.tokenize(b" banana", add_bos=False)[0]  # type: ignore[union-attr]
    forced = [c async for c in qwen.stream(_request(ask, max_tokens=2, logit_bias=((forced_id, 100.0),)))]
    assert "".join(c.text for c in forced).startswith(" banana")


async def test_a_logit_bias_token_outside_the_vocabulary_is_a_400(qwen: LlamaCppBackend) -> None:
    with pytest.raises(InvalidRequest) as info:
        await _run(qwen, _request(logit_bias=((10**7, 5.0),)))
    assert info.value.param == "logit_bias" and "vocabulary" in info.value.message


async def test_penalties_change_a_repetitive_answer(qwen: LlamaCppBackend) -> None:
    ask = (Message("user", "Write the word 'cat' twelve times, separated by spaces."),)
    plain, _, _ = await _run(qwen, _request(ask, max_tokens=16))
    penalised, _, _ = await _run(
        qwen, _request(ask, max_tokens=16, frequency_penalty=2.0, presence_penalty=2.0)
    )
    assert plain.count("cat") > penalised.count("cat")
