"""The gateway in-process, through the official ``openai`` SDK (the contract), sync and async."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager, contextmanager
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest
from fastapi.testclient import TestClient

from groupqwen.api.app import create_app
from groupqwen.api.services import Services
from groupqwen.backends.fake import FakeBackend
from groupqwen.config import load_settings
from groupqwen.messages import ReplicaState
from groupqwen.testing import fake_services, fake_settings, gateway

USER = [{"role": "user", "content": "Say hello"}]


def make_services(
    tmp_path: Path,
    backends: dict[str, FakeBackend],
    *,
    thinking: tuple[str, ...] = (),
    **settings: Any,
) -> Services:
    """Settings with one ``backend: fake`` model per entry of ``backends``, served by those very objects."""
    config = fake_settings(tmp_path, {m: {"thinking": m in thinking} for m in backends}, **settings)
    return fake_services(config, backends)


@contextmanager
def sync_client(services: Services) -> Iterator[tuple[openai.OpenAI, TestClient]]:
    with gateway(services) as http:
        yield (
            openai.OpenAI(base_url="http://testserver/v1", api_key="x", http_client=http, max_retries=0),
            http,
        )


@asynccontextmanager
async def async_client(services: Services) -> AsyncIterator[openai.AsyncOpenAI]:
    app = create_app(services.settings, services)
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as http:
        yield openai.AsyncOpenAI(
            base_url="http://testserver/v1", api_key="x", http_client=http, max_retries=0
        )


@pytest.fixture
def fake() -> FakeBackend:
    return FakeBackend(model_id="fake", tokens=("Hello", ",", " world", "!"))


@pytest.fixture
def client(tmp_path: Path, fake: FakeBackend) -> Iterator[openai.OpenAI]:
    with sync_client(make_services(tmp_path, {"fake": fake})) as (sdk, _):
        yield sdk


def _reasoning(obj: Any) -> Any:
    """``reasoning_content`` is not in the SDK's types: read it as an extra field."""
    value = getattr(obj, "reasoning_content", None)
    assert value == (obj.model_extra or {}).get("reasoning_content")
    return value


async def _until(condition: Callable[[], bool], within: float = 3.0) -> None:
    """Poll ``condition`` (state owned by someone else) until it holds; fail after ``within`` seconds."""
    step = 0.005
    for _ in range(int(within / step)):
        if condition():
            return
        await asyncio.sleep(step)
    assert condition(), "condition not reached in time"


# --------------------------------------------------------------------------------------------------------
# Answers


def test_non_stream_answer_and_usage(client: openai.OpenAI, fake: FakeBackend) -> None:
    completion = client.chat.completions.create(model="fake", messages=USER)  # type: ignore[arg-type]
    assert completion.object == "chat.completion"
    assert completion.id.startswith("chatcmpl-")
    assert completion.model == "fake"
    choice = completion.choices[0]
    assert choice.message.role == "assistant"
    assert choice.message.content == "Hello, world!"
    assert choice.finish_reason == "stop"
    assert choice.logprobs is None
    assert _reasoning(choice.message) is None
    assert completion.usage is not None
    assert completion.usage.completion_tokens == 4
    assert completion.usage.prompt_tokens == 2 + 4  # the fake counts words + 4 per message
    assert completion.usage.total_tokens == 10
    assert len(fake.requests) == 1


def test_sampling_reaches_the_backend(client: openai.OpenAI, fake: FakeBackend) -> None:
    completion = client.chat.completions.create(
        model="fake",
        messages=[{"role": "system", "content": "Be brief"}, *USER],  # type: ignore[list-item]
        temperature=0,
        top_p=0.5,
        seed=7,
        max_tokens=2,
        stop=["zzz"],
    )
    assert completion.choices[0].message.content == "Hello,"
    assert completion.choices[0].finish_reason == "length"
    request = fake.requests[-1]
    assert [(m.role, m.content) for m in request.messages] == [("system", "Be brief"), ("user", "Say hello")]
    assert request.sampling.temperature == 0
    assert request.sampling.top_p == 0.5
    assert request.sampling.seed == 7
    assert request.sampling.max_tokens == 2
    assert request.sampling.stop == ("zzz",)


def test_stop_sequence(client: openai.OpenAI) -> None:
    completion = client.chat.completions.create(model="fake", messages=USER, stop=" wor")  # type: ignore[arg-type]
    assert completion.choices[0].message.content == "Hello,"
    assert completion.choices[0].finish_reason == "stop"


def test_stream_pieces_join_to_the_answer(client: openai.OpenAI) -> None:
    stream = client.chat.completions.create(model="fake", messages=USER, stream=True)  # type: ignore[arg-type]
    chunks = list(stream)
    assert all(c.object == "chat.completion.chunk" for c in chunks)
    assert len({c.id for c in chunks}) == 1
    assert chunks[0].choices[0].delta.role == "assistant"
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == "Hello, world!"
    assert chunks[-1].choices[0].finish_reason == "stop"
    assert [c.choices[0].finish_reason for c in chunks[:-1]] == [None] * (len(chunks) - 1)
    assert all(c.usage is None for c in chunks)


def test_stream_include_usage_gives_a_final_usage_chunk(client: openai.OpenAI) -> None:
    stream = client.chat.completions.create(
        model="fake",
        messages=USER,  # type: ignore[arg-type]
        stream=True,
        stream_options={"include_usage": True},
    )
    chunks = list(stream)
    last = chunks[-1]
    assert last.choices == []
    assert last.usage is not None
    assert (last.usage.prompt_tokens, last.usage.completion_tokens, last.usage.total_tokens) == (6, 4, 10)
    assert all(c.usage is None for c in chunks[:-1])
    assert "".join(c.choices[0].delta.content or "" for c in chunks[:-1]) == "Hello, world!"


def test_logprobs_non_stream(client: openai.OpenAI, fake: FakeBackend) -> None:
    completion = client.chat.completions.create(
        model="fake",
        messages=USER,  # type: ignore[arg-type]
        logprobs=True,
        top_logprobs=2,
    )
    logprobs = completion.choices[0].logprobs
    assert logprobs is not None and logprobs.content is not None
    assert [lp.token for lp in logprobs.content] == ["Hello", ",", " world", "!"]
    for lp in logprobs.content:
        assert lp.logprob == pytest.approx(-0.1)
        assert lp.bytes == list(lp.token.encode())
        assert [t.token for t in lp.top_logprobs] == [lp.token, "<alt>"]
        assert lp.top_logprobs[0].logprob >= lp.top_logprobs[1].logprob
    assert fake.requests[-1].top_logprobs == 2


def test_logprobs_without_top(client: openai.OpenAI, fake: FakeBackend) -> None:
    completion = client.chat.completions.create(model="fake", messages=USER, logprobs=True)  # type: ignore[arg-type]
    content = completion.choices[0].logprobs.content  # type: ignore[union-attr]
    assert content is not None and len(content) == 4
    assert all(lp.top_logprobs == [] for lp in content)
    assert fake.requests[-1].top_logprobs == 0


def test_logprobs_stream(client: openai.OpenAI) -> None:
    stream = client.chat.completions.create(
        model="fake",
        messages=USER,  # type: ignore[arg-type]
        stream=True,
        logprobs=True,
        top_logprobs=1,
    )
    tokens = []
    for chunk in stream:
        if chunk.choices and chunk.choices[0].logprobs and chunk.choices[0].logprobs.content:
            for lp in chunk.choices[0].logprobs.content:
                tokens.append(lp.token)
                assert [t.token for t in lp.top_logprobs] == [lp.token]
    assert tokens == ["Hello", ",", " world", "!"]


# --------------------------------------------------------------------------------------------------------
# Thinking


def test_reasoning_content_non_stream(tmp_path: Path) -> None:
    fake = FakeBackend(model_id="qwen", tokens=("<think>plan</think>", "\n\nanswer"))
    with sync_client(make_services(tmp_path, {"qwen": fake}, thinking=("qwen",))) as (sdk, _):
        completion = sdk.chat.completions.create(model="qwen", messages=USER)  # type: ignore[arg-type]
    message = completion.choices[0].message
    assert message.content == "answer"
    assert _reasoning(message) == "plan"


def test_reasoning_content_stream_with_the_tag_split_across_tokens(tmp_path: Path) -> None:
    fake = FakeBackend(model_id="qwen", tokens=("<th", "ink>pl", "an</th", "ink>", "answer"))
    with sync_client(make_services(tmp_path, {"qwen": fake}, thinking=("qwen",))) as (sdk, _):
        chunks = list(sdk.chat.completions.create(model="qwen", messages=USER, stream=True))  # type: ignore[arg-type]
    contents = [c.choices[0].delta.content or "" for c in chunks if c.choices]
    reasoning = [_reasoning(c.choices[0].delta) or "" for c in chunks if c.choices]
    for piece in contents:
        assert "plan" not in piece and "pl" not in piece and "<" not in piece
    for piece in reasoning:
        assert "<" not in piece and ">" not in piece
    assert "".join(contents) == "answer"
    assert "".join(reasoning) == "plan"


def test_prompt_opened_thinking_is_reasoning(tmp_path: Path) -> None:
    """A template that already opened ``<think>`` makes the output start inside reasoning."""

    class _OpenedThinking(FakeBackend):
        async def stream(self, request):  # type: ignore[no-untyped-def,override]
            from groupqwen.messages import Chunk, Usage

            yield Chunk(text="", prompt_opens_thinking=True)
            yield Chunk(text="hmm</think>\n\nok")
            yield Chunk(finish_reason="stop", usage=Usage(1, 2))

    fake = _OpenedThinking(model_id="qwen")
    with sync_client(make_services(tmp_path, {"qwen": fake}, thinking=("qwen",))) as (sdk, _):
        message = sdk.chat.completions.create(model="qwen", messages=USER).choices[0].message  # type: ignore[arg-type]
    assert (message.content, _reasoning(message)) == ("ok", "hmm")


def test_enable_thinking_reaches_only_thinking_models(tmp_path: Path) -> None:
    qwen = FakeBackend(model_id="qwen")
    plain = FakeBackend(model_id="plain")
    services = make_services(tmp_path, {"qwen": qwen, "plain": plain}, thinking=("qwen",))
    with sync_client(services) as (sdk, _):

        def ask(model: str, **kw: Any) -> None:
            sdk.chat.completions.create(model=model, messages=USER, **kw)  # type: ignore[arg-type]

        ask("qwen")
        ask("qwen", extra_body={"enable_thinking": False})
        ask("qwen", extra_body={"chat_template_kwargs": {"enable_thinking": False}})
        ask("qwen", extra_body={"chat_template_kwargs": {"enable_thinking": True}})
        sdk.chat.completions.create(model="qwen", messages=[{"role": "user", "content": "hi /no_think"}])
        sdk.chat.completions.create(
            model="qwen",
            messages=[{"role": "user", "content": "hi /no_think"}],
            extra_body={"enable_thinking": True},
        )
        ask("plain")
        ask("plain", extra_body={"enable_thinking": True})
        ask("plain", extra_body={"chat_template_kwargs": {"enable_thinking": True}})
    assert [r.enable_thinking for r in qwen.requests] == [True, False, False, True, False, True]
    assert [r.enable_thinking for r in plain.requests] == [False, False, False]


def test_enable_thinking_must_be_a_boolean(client: openai.OpenAI) -> None:
    with pytest.raises(openai.BadRequestError) as info:
        client.chat.completions.create(
            model="fake",
            messages=USER,  # type: ignore[arg-type]
            extra_body={"chat_template_kwargs": {"enable_thinking": "yes"}},
        )
    assert info.value.param == "chat_template_kwargs.enable_thinking"


# --------------------------------------------------------------------------------------------------------
# Routing, headers, models


def test_auto_resolves_to_the_default_model(tmp_path: Path) -> None:
    first, second = FakeBackend(model_id="first"), FakeBackend(model_id="second", tokens=("2",))
    services = make_services(tmp_path, {"first": first, "second": second}, default_model="second")
    with sync_client(services) as (sdk, _):
        raw = sdk.chat.completions.with_raw_response.create(model="auto", messages=USER)  # type: ignore[arg-type]
        completion = raw.parse()
        assert raw.headers["x-groupqwen-model"] == "second"
        assert raw.headers["x-groupqwen-route"] == "default"
        assert completion.model == "second"
        assert completion.choices[0].message.content == "2"
        raw = sdk.chat.completions.with_raw_response.create(model="first", messages=USER)  # type: ignore[arg-type]
        assert raw.headers["x-groupqwen-model"] == "first"
        assert raw.headers["x-groupqwen-route"] == "explicit"
    assert (len(first.requests), len(second.requests)) == (1, 1)


def test_stream_has_the_routing_headers(client: openai.OpenAI) -> None:
    with client.chat.completions.with_streaming_response.create(
        model="auto",
        messages=USER,  # type: ignore[arg-type]
        stream=True,
    ) as response:
        assert response.headers["x-groupqwen-model"] == "fake"
        assert response.headers["content-type"].startswith("text/event-stream")
        assert response.headers["x-request-id"]
        assert "".join(c.choices[0].delta.content or "" for c in response.parse() if c.choices) == (
            "Hello, world!"
        )


def test_request_id_generated_and_echoed(client: openai.OpenAI) -> None:
    one = client.chat.completions.with_raw_response.create(model="fake", messages=USER)  # type: ignore[arg-type]
    two = client.chat.completions.with_raw_response.create(model="fake", messages=USER)  # type: ignore[arg-type]
    assert one.headers["x-request-id"] and two.headers["x-request-id"]
    assert one.headers["x-request-id"] != two.headers["x-request-id"]
    mine = client.chat.completions.with_raw_response.create(
        model="fake",
        messages=USER,  # type: ignore[arg-type]
        extra_headers={"x-request-id": "client-req-42"},
    )
    assert mine.headers["x-request-id"] == "client-req-42"
    assert mine.headers.get_list("x-request-id") == ["client-req-42"]
    odd = client.chat.completions.with_raw_response.create(
        model="fake",
        messages=USER,  # type: ignore[arg-type]
        extra_headers={"x-request-id": "no spaces or <tags> please"},
    )
    assert odd.headers["x-request-id"] not in ("", "no spaces or <tags> please")


def test_error_responses_carry_the_request_id(client: openai.OpenAI) -> None:
    with pytest.raises(openai.NotFoundError) as info:
        client.chat.completions.create(
            model="nope",
            messages=USER,  # type: ignore[arg-type]
            extra_headers={"x-request-id": "abc-123"},
        )
    assert info.value.response.headers["x-request-id"] == "abc-123"
    assert info.value.request_id is None or info.value.request_id == info.value.response.headers.get(
        "x-request-id"
    )


def test_list_models(tmp_path: Path) -> None:
    services = make_services(tmp_path, {"fake": FakeBackend(model_id="fake")})
    with sync_client(services) as (sdk, _):
        models = sdk.models.list()
        ids = [m.id for m in models.data]
        assert ids == ["fake", "auto"]  # only what is served here, plus the alias
        fake = models.data[0]
        assert fake.object == "model"
        assert fake.owned_by == "groupqwen"
        extra = fake.model_extra or {}
        info = extra["groupqwen"]
        assert info["status"] == "unloaded"
        assert info["backend"] == "fake"
        assert info["size_bytes"] == 0
        assert info["capabilities"] == {"thinking": False, "vision": False, "tools": False}
        assert (info["active_requests"], info["queued_requests"]) == (0, 0)
        auto = (models.data[1].model_extra or {})["groupqwen"]
        assert auto == {"status": "alias", "models": ["fake"], "resolves_to": "fake"}

        sdk.chat.completions.create(model="fake", messages=USER)  # type: ignore[arg-type]
        retrieved = sdk.models.retrieve("fake")
        assert retrieved.id == "fake"
        assert (retrieved.model_extra or {})["groupqwen"]["status"] == "loaded"
        with pytest.raises(openai.NotFoundError) as error:
            sdk.models.retrieve("qwen3-8b")  # in the catalog, but no weights here
        assert error.value.code == "model_not_found"


def test_models_show_the_replicas_a_loaded_backend_reports(tmp_path: Path) -> None:
    """``replicas``: what the backend declares (``Backend.replicas``) while loaded; null when it runs
    in-process or is not loaded."""
    replica = ReplicaState("http://a:8000/v1", True, 0, 3, 1, "HTTP 500: boom", 0.0)

    class Replicated(FakeBackend):
        def replicas(self) -> tuple[ReplicaState, ...]:
            return (replica,)

    services = make_services(tmp_path, {"fake": FakeBackend(), "remote": Replicated(model_id="remote")})
    with sync_client(services) as (sdk, http):

        def replicas(model_id: str) -> Any:
            return http.get(f"/v1/models/{model_id}").json()["groupqwen"]["replicas"]

        assert (replicas("remote"), replicas("fake")) == (None, None)
        for model_id in ("remote", "fake"):
            sdk.chat.completions.create(model=model_id, messages=USER)  # type: ignore[arg-type]
        listed = {m["id"]: m["groupqwen"]["replicas"] for m in http.get("/v1/models").json()["data"][:2]}
    expected = {
        "url": "http://a:8000/v1",
        "healthy": True,
        "outstanding": 0,
        "served": 3,
        "failures": 1,
        "last_error": "HTTP 500: boom",
        "ejected_for": 0.0,
    }
    assert listed == {"fake": None, "remote": [expected]}


def test_list_models_shows_sizes_of_real_files(tmp_path: Path) -> None:
    gguf = tmp_path / "custom.gguf"
    gguf.write_bytes(b"GGUF" * 256)
    settings = fake_settings(tmp_path, ["custom"], models={"custom": {"path": str(gguf)}})
    services = fake_services(settings, FakeBackend(model_id="custom"))
    with sync_client(services) as (sdk, _):
        info = (sdk.models.retrieve("custom").model_extra or {})["groupqwen"]
    assert info["size_bytes"] == 1024
    assert info["backend"] == "llamacpp"


def test_health(tmp_path: Path) -> None:
    with sync_client(make_services(tmp_path, {"fake": FakeBackend()})) as (_, http):
        response = http.get("/health")
    assert response.status_code == 200
    assert response.json() == {"status": "ok", "models": {"fake": "unloaded"}}


def test_app_built_from_settings_alone(tmp_path: Path) -> None:
    settings = load_settings(
        models={"fake": {"backend": "fake", "fake_reply": "Built by the lifespan."}},
        default_model="fake",
        models_dir=tmp_path,
    )
    with TestClient(create_app(settings)) as http:
        sdk = openai.OpenAI(base_url="http://testserver/v1", api_key="x", http_client=http, max_retries=0)
        completion = sdk.chat.completions.create(model="auto", messages=USER)  # type: ignore[arg-type]
        assert completion.choices[0].message.content == "Built by the lifespan."
        assert [m.id for m in sdk.models.list().data] == ["fake", "auto"]


# --------------------------------------------------------------------------------------------------------
# Errors, as the SDK raises them


def test_unknown_model(client: openai.OpenAI) -> None:
    for model in ("no-such-model", "qwen3-8b"):  # unknown, and known without weights
        with pytest.raises(openai.NotFoundError) as info:
            client.chat.completions.create(model=model, messages=USER)  # type: ignore[arg-type]
        error = info.value
        assert error.status_code == 404
        assert error.code == "model_not_found"
        assert error.param == "model"
        assert error.type == "invalid_request_error"
        assert model in error.message
    with pytest.raises(openai.NotFoundError):
        client.chat.completions.create(model="no-such-model", messages=USER, stream=True)  # type: ignore[arg-type]
    with pytest.raises(openai.NotFoundError):
        client.models.retrieve("no-such-model")


@pytest.mark.parametrize(
    ("kwargs", "param", "code"),
    [
        ({"n": 9}, "n", "invalid_request"),
        (
            {"tools": [{"type": "custom", "custom": {"name": "f"}}]},
            "tools[0].type",
            "unsupported_parameter",
        ),
        ({"top_logprobs": 2}, "top_logprobs", "invalid_request"),
        ({"temperature": 3}, "temperature", "invalid_request"),
        ({"max_tokens": 0}, "max_tokens", "invalid_request"),
        ({"stop": ["a", "b", "c", "d", "e"]}, "stop", "invalid_request"),
        (
            {"extra_body": {"response_format": {"type": "json_schema", "json_schema": {"name": "x"}}}},
            "response_format.json_schema",
            "invalid_request",
        ),
        (
            {
                "messages": [
                    {
                        "role": "user",
                        "content": [
                            {"type": "text", "text": "What is this?"},
                            {"type": "image_url", "image_url": {"url": "data:image/png;base64,AAAA"}},
                        ],
                    }
                ]
            },
            "model",  # "fake" does not take images
            "unsupported_parameter",
        ),
        (
            {
                "messages": [
                    {"role": "user", "content": [{"type": "image_url", "image_url": {"url": "a.png"}}]}
                ]
            },
            "messages[0].content[0].image_url.url",
            "invalid_request",
        ),
        (
            {"messages": [{"role": "tool", "content": "42", "tool_call_id": "c1"}]},
            "messages[0].tool_call_id",
            "invalid_request",
        ),
    ],
)
def test_bad_request(
    client: openai.OpenAI, fake: FakeBackend, kwargs: dict[str, Any], param: str, code: str
) -> None:
    kwargs.setdefault("messages", USER)
    for stream in (False, True):
        with pytest.raises(openai.BadRequestError) as info:
            client.chat.completions.create(model="fake", stream=stream, **kwargs)
        error = info.value
        assert error.status_code == 400
        assert error.param == param
        assert error.code == code
        assert error.type == "invalid_request_error"
    assert fake.requests == []  # refused before any work


def test_text_content_parts_are_joined(client: openai.OpenAI, fake: FakeBackend) -> None:
    client.chat.completions.create(
        model="fake",
        messages=[
            {"role": "user", "content": [{"type": "text", "text": "a"}, {"type": "text", "text": "b"}]}
        ],
    )
    assert fake.requests[-1].messages[0].content == "a\nb"


def test_context_length_exceeded(tmp_path: Path) -> None:
    fake = FakeBackend(model_id="tiny", n_ctx=16)
    long = [{"role": "user", "content": " ".join(["word"] * 20)}]
    with sync_client(make_services(tmp_path, {"tiny": fake})) as (sdk, _):
        for stream in (False, True):
            with pytest.raises(openai.BadRequestError) as info:
                sdk.chat.completions.create(model="tiny", messages=long, stream=stream)  # type: ignore[arg-type]
            assert info.value.code == "context_length_exceeded"
            assert info.value.param == "messages"
            assert "16" in info.value.message
        # prompt fits, but not with max_tokens on top
        with pytest.raises(openai.BadRequestError) as info:
            sdk.chat.completions.create(model="tiny", messages=USER, max_tokens=100)  # type: ignore[arg-type]
        assert info.value.code == "context_length_exceeded"
        assert sdk.chat.completions.create(model="tiny", messages=USER).choices[0].message.content  # type: ignore[arg-type]


def test_body_over_max_body_bytes_is_413(tmp_path: Path, fake: FakeBackend) -> None:
    services = make_services(tmp_path, {"fake": fake}, max_body_bytes=2048)
    with sync_client(services) as (sdk, _):
        with pytest.raises(openai.APIStatusError) as info:
            sdk.chat.completions.create(model="fake", messages=[{"role": "user", "content": "x" * 5000}])
        assert info.value.status_code == 413
        assert info.value.code == "payload_too_large"
        assert info.value.response.headers["x-request-id"]
        assert sdk.chat.completions.create(model="fake", messages=USER).choices[0].message.content  # type: ignore[arg-type]
    assert len(fake.requests) == 1


async def test_queue_full_is_503_with_retry_after(tmp_path: Path) -> None:
    fake = FakeBackend(model_id="slow", delay=0.05)
    services = make_services(tmp_path, {"slow": fake}, max_queue=0)
    async with async_client(services) as sdk:
        first = asyncio.create_task(sdk.chat.completions.create(model="slow", messages=USER))  # type: ignore[arg-type]
        await _until(lambda: fake.active == 1)
        with pytest.raises(openai.InternalServerError) as info:
            await sdk.chat.completions.create(model="slow", messages=USER)  # type: ignore[arg-type]
        error = info.value
        assert error.status_code == 503
        assert error.code == "overloaded"
        assert error.type == "server_error"
        assert int(error.response.headers["retry-after"]) >= 1
        assert error.response.headers["x-request-id"]
        with pytest.raises(openai.InternalServerError):  # a stream is refused the same way
            await sdk.chat.completions.create(model="slow", messages=USER, stream=True)  # type: ignore[arg-type]
        assert (await first).choices[0].message.content == "Hello, world!"
    assert len(fake.requests) == 1


async def test_backend_failure_before_the_first_token_is_502(tmp_path: Path) -> None:
    fake = FakeBackend(model_id="broken", fail_after=0)
    async with async_client(make_services(tmp_path, {"broken": fake})) as sdk:
        for stream in (False, True):
            with pytest.raises(openai.APIStatusError) as info:
                await sdk.chat.completions.create(model="broken", messages=USER, stream=stream)  # type: ignore[arg-type]
            assert info.value.status_code == 502
            assert info.value.code == "backend_error"
            assert info.value.type == "api_error"
    assert fake.active == 0


def test_backend_failure_before_the_first_token_is_502_sync(tmp_path: Path) -> None:
    fake = FakeBackend(model_id="broken", fail_after=0)
    with sync_client(make_services(tmp_path, {"broken": fake})) as (sdk, _):
        with pytest.raises(openai.APIStatusError) as info:
            sdk.chat.completions.create(model="broken", messages=USER)  # type: ignore[arg-type]
        assert info.value.status_code == 502


async def test_backend_failure_mid_stream_raises_from_the_iteration(tmp_path: Path) -> None:
    fake = FakeBackend(model_id="flaky", tokens=("one", " two", " three", " four"), fail_after=2)
    async with async_client(make_services(tmp_path, {"flaky": fake})) as sdk:
        stream = await sdk.chat.completions.create(model="flaky", messages=USER, stream=True)  # type: ignore[arg-type]
        received: list[str] = []
        with pytest.raises(openai.APIError) as info:
            async for chunk in stream:
                if chunk.choices:
                    received.append(chunk.choices[0].delta.content or "")
        assert "".join(received) == "one two"
        assert info.value.code == "backend_error"
        # the model is free again
        completion = await sdk.chat.completions.create(model="flaky", messages=USER, max_tokens=2)  # type: ignore[arg-type]
        assert completion.choices[0].message.content == "one two"
    assert fake.active == 0


def test_backend_failure_mid_stream_sync(tmp_path: Path) -> None:
    fake = FakeBackend(model_id="flaky", tokens=("one", " two", " three"), fail_after=1)
    with sync_client(make_services(tmp_path, {"flaky": fake})) as (sdk, _):
        stream = sdk.chat.completions.create(model="flaky", messages=USER, stream=True)  # type: ignore[arg-type]
        with pytest.raises(openai.APIError):
            for _ in stream:
                pass
        # mid-stream failure on a non-streamed request is a 502
        with pytest.raises(openai.APIStatusError) as info:
            sdk.chat.completions.create(model="flaky", messages=USER)  # type: ignore[arg-type]
        assert info.value.status_code == 502


# --------------------------------------------------------------------------------------------------------
# A client that goes away cancels the backend work


async def test_client_closing_the_stream_cancels_the_backend(
    tmp_path: Path, live_server: Any, caplog: pytest.LogCaptureFixture
) -> None:
    fake = FakeBackend(model_id="long", tokens=tuple(f" t{i}" for i in range(200)), delay=0.01)
    services = make_services(tmp_path, {"long": fake})
    with live_server(create_app(services.settings, services)) as url:
        async with httpx.AsyncClient(base_url=url, timeout=10) as http:
            sdk = openai.AsyncOpenAI(base_url=f"{url}/v1", api_key="x", http_client=http, max_retries=0)
            stream = await sdk.chat.completions.create(model="long", messages=USER, stream=True)  # type: ignore[arg-type]
            seen = 0
            async for _ in stream:
                seen += 1
                if seen == 2:
                    break
            await stream.close()
            assert fake.active == 1 or fake.cancelled == 1  # still running, or already stopped
            await _until(lambda: fake.cancelled == 1 and fake.active == 0, within=5)
            pool_state = services.pool.states()[0]
            await _until(lambda: services.pool.states()[0].active == 0, within=5)
            assert pool_state.spec.id == "long"
            # the model serves the next request
            completion = await sdk.chat.completions.create(model="long", messages=USER, max_tokens=3)  # type: ignore[arg-type]
            assert completion.choices[0].message.content == " t0 t1 t2"
    assert fake.cancelled == 1
    # recorded as the client's doing (499), and nothing escaped to the server as an error
    assert services.telemetry.summary(60)["status"] == {"200": 1, "499": 1}
    assert not [r for r in caplog.records if r.levelname in ("ERROR", "CRITICAL")]


def test_the_auto_alias_listed_by_models_list_can_be_retrieved(client: openai.OpenAI) -> None:
    listed = {m.id for m in client.models.list().data}
    assert "auto" in listed
    for model_id in listed:  # every listed model is retrievable, as with OpenAI
        assert client.models.retrieve(model_id).id == model_id
    auto = client.models.retrieve("auto")
    alias = {"status": "alias", "models": ["fake"], "resolves_to": "fake"}
    assert (auto.model_extra or {})["groupqwen"] == alias


async def test_client_giving_up_on_a_non_streamed_request_cancels_the_backend(
    tmp_path: Path, live_server: Any, caplog: pytest.LogCaptureFixture
) -> None:
    """DESIGN: "a client disconnect cancels the backend work" — for plain JSON answers too."""
    fake = FakeBackend(model_id="long", tokens=tuple(f" t{i}" for i in range(200)), delay=0.01)
    services = make_services(tmp_path, {"long": fake})
    with live_server(create_app(services.settings, services)) as url:
        async with httpx.AsyncClient(base_url=url, timeout=10) as http:
            sdk = openai.AsyncOpenAI(base_url=f"{url}/v1", api_key="x", http_client=http, max_retries=0)
            with pytest.raises(openai.APITimeoutError):
                await sdk.chat.completions.create(model="long", messages=USER, timeout=0.3)  # type: ignore[arg-type]
            await _until(lambda: fake.cancelled == 1 and fake.active == 0, within=1.5)
            await _until(lambda: bool(services.telemetry.summary(60)["status"]), within=1.5)
    assert fake.cancelled == 1
    assert services.telemetry.summary(60)["status"] == {"499": 1}
    assert not [r for r in caplog.records if r.levelname in ("ERROR", "CRITICAL")]


def test_models_show_the_served_context_and_the_native_one(tmp_path: Path) -> None:
    """``context_length`` is the limit requests are held to (n_ctx, default 4096), not the 32k the model was
    trained for; that one is ``native_context_length``. A request is refused at the limit shown."""
    settings = load_settings(
        None,
        models_dir=tmp_path / "models",
        data_dir=tmp_path / "data",
        default_model="long",
        models={
            "long": {"backend": "fake", "context_length": 32768},
            "wide": {"backend": "fake", "context_length": 32768, "n_ctx": 8192},
        },
    )
    with TestClient(create_app(settings)) as http:
        models = {m["id"]: m["groupqwen"] for m in http.get("/v1/models").json()["data"]}
        assert (models["long"]["context_length"], models["long"]["native_context_length"]) == (4096, 32768)
        assert (models["wide"]["context_length"], models["wide"]["native_context_length"]) == (8192, 32768)
        assert http.get("/v1/models/long").json()["groupqwen"]["context_length"] == 4096
        words = " ".join(["word"] * 5000)  # the fake backend counts words as tokens
        r = http.post(
            "/v1/chat/completions", json={"model": "long", "messages": [{"role": "user", "content": words}]}
        )
        assert r.status_code == 400 and r.json()["error"]["code"] == "context_length_exceeded"
        assert "4096" in r.json()["error"]["message"]


def test_stream_null_is_not_streamed(client: openai.OpenAI) -> None:
    """The SDK types ``stream`` as ``Optional[Literal[False]]`` and sends ``None`` as JSON null, which
    OpenAI reads as its default: a JSON answer, not a 400."""
    completion = client.chat.completions.create(model="fake", messages=USER, stream=None)  # type: ignore[arg-type]
    assert completion.choices[0].message.content == "Hello, world!"
