"""``/v1/responses`` (OpenAI's Responses API) through the official ``openai`` SDK: text, typed streaming
events, stored responses and ``previous_response_id``, and every bad input as a clear error."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import openai
import pytest
from fastapi.testclient import TestClient

from groupqwen.api.services import Services
from groupqwen.backends.fake import FakeBackend
from groupqwen.messages import GenerationRequest
from groupqwen.testing import FakeClock, fake_services, fake_settings, gateway


@pytest.fixture
def fake() -> FakeBackend:
    return FakeBackend(model_id="fake", tokens=("Hello", ",", " world", "!"))


def _services(tmp_path: Path, fake: FakeBackend, **settings: Any) -> Services:
    return fake_services(fake_settings(tmp_path, **settings), fake)


@pytest.fixture
def http(tmp_path: Path, fake: FakeBackend) -> Iterator[TestClient]:
    with gateway(_services(tmp_path, fake)) as client:
        yield client


def _sdk(http: TestClient, key: str = "x") -> openai.OpenAI:
    return openai.OpenAI(base_url="http://testserver/v1", api_key=key, http_client=http, max_retries=0)


def _conversation(request: GenerationRequest) -> list[tuple[str, str]]:
    return [(m.role, m.content) for m in request.messages]


def test_a_text_response(http: TestClient, fake: FakeBackend) -> None:
    response = _sdk(http).responses.create(model="fake", input="Say hello", instructions="Be brief.")
    assert response.object == "response"
    assert response.id.startswith("resp_")
    assert response.status == "completed"
    assert response.output_text == "Hello, world!"
    assert response.model == "fake"
    assert response.instructions == "Be brief."
    assert response.usage is not None
    assert response.usage.output_tokens == 4
    assert response.usage.total_tokens == response.usage.input_tokens + 4
    assert _conversation(fake.requests[-1]) == [("system", "Be brief."), ("user", "Say hello")]
    assert (response.model_extra or {})["groupqwen"]["route"] == "explicit"


def test_message_items_parts_and_settings_reach_the_model(http: TestClient, fake: FakeBackend) -> None:
    _sdk(http).responses.create(
        model="fake",
        input=[
            {"role": "developer", "content": "Answer in English."},
            {"role": "user", "content": [{"type": "input_text", "text": "Hi"}]},
            {"type": "message", "role": "assistant", "content": [{"type": "output_text", "text": "Hello!"}]},
            {"type": "reasoning", "id": "rs_1", "summary": []},
            {"role": "user", "content": "And now?"},
        ],
        temperature=0,
        top_p=0.5,
        max_output_tokens=50,
        reasoning={"effort": "none"},
    )
    request = fake.requests[-1]
    assert _conversation(request) == [
        ("system", "Answer in English."),
        ("user", "Hi"),
        ("assistant", "Hello!"),
        ("user", "And now?"),
    ]
    assert (request.sampling.temperature, request.sampling.top_p, request.sampling.max_tokens) == (0, 0.5, 50)
    assert request.enable_thinking is False


def test_max_output_tokens_makes_an_incomplete_response(http: TestClient) -> None:
    response = _sdk(http).responses.create(model="fake", input="Say hello", max_output_tokens=2)
    assert response.status == "incomplete"
    assert response.incomplete_details is not None
    assert response.incomplete_details.reason == "max_output_tokens"
    assert response.output_text == "Hello,"


def test_json_schema_text_format_becomes_the_response_format(http: TestClient, fake: FakeBackend) -> None:
    schema = {"type": "object", "properties": {"a": {"type": "string"}}, "required": ["a"]}
    response = _sdk(http).responses.create(
        model="fake",
        input="Give JSON",
        text={"format": {"type": "json_schema", "name": "thing", "schema": schema, "strict": True}},
    )
    format_ = fake.requests[-1].response_format
    assert format_ is not None
    assert (format_.type, format_.schema) == ("json_schema", schema)
    assert response.text is not None and response.text.format is not None
    assert response.text.format.type == "json_schema"


def test_logprobs_when_included(http: TestClient) -> None:
    response = _sdk(http).responses.create(
        model="fake", input="Say hello", include=["message.output_text.logprobs"], top_logprobs=1
    )
    part = response.output[0].content[0]  # type: ignore[union-attr]
    assert part.type == "output_text"
    assert part.logprobs is not None
    assert [lp.token for lp in part.logprobs] == ["Hello", ",", " world", "!"]
    assert part.logprobs[0].top_logprobs[0].token == "Hello"


def test_the_stream_is_typed_events_in_order(http: TestClient) -> None:
    events = list(_sdk(http).responses.create(model="fake", input="Say hello", stream=True))
    kinds = [e.type for e in events]
    assert kinds == [
        "response.created",
        "response.in_progress",
        "response.output_item.added",
        "response.content_part.added",
        *["response.output_text.delta"] * 4,
        "response.output_text.done",
        "response.content_part.done",
        "response.output_item.done",
        "response.completed",
    ]
    assert [e.sequence_number for e in events] == list(range(len(events)))
    deltas = "".join(e.delta for e in events if e.type == "response.output_text.delta")
    assert deltas == "Hello, world!"
    completed = events[-1]
    assert completed.type == "response.completed"
    assert completed.response.output_text == "Hello, world!"
    assert completed.response.usage is not None
    item_ids = {e.item_id for e in events if e.type == "response.output_text.delta"}
    assert item_ids == {completed.response.output[0].id}


def test_the_sdk_stream_helper_gets_the_final_response(http: TestClient) -> None:
    with _sdk(http).responses.stream(model="fake", input="Say hello") as stream:
        text = "".join(e.delta for e in stream if e.type == "response.output_text.delta")
        final = stream.get_final_response()
    assert text == final.output_text == "Hello, world!"


def test_thinking_streams_a_reasoning_item_first(tmp_path: Path) -> None:
    thinker = FakeBackend(model_id="fake", tokens=("<think>", "Hmm", "</think>", "Hi", "!"))
    services = fake_services(fake_settings(tmp_path, {"fake": {"thinking": True}}), thinker)
    with gateway(services) as http:
        events = list(_sdk(http).responses.create(model="fake", input="Hi", stream=True))
        plain = _sdk(http).responses.create(model="fake", input="Hi")
    kinds = [e.type for e in events]
    assert kinds[2:4] == ["response.output_item.added", "response.reasoning_text.delta"]
    assert "response.reasoning_text.done" in kinds
    completed = events[-1].response  # type: ignore[union-attr]
    assert [item.type for item in completed.output] == ["reasoning", "message"]
    assert completed.output[0].content[0].text == "Hmm"  # type: ignore[union-attr]
    assert completed.output_text == "Hi!"
    assert [item.type for item in plain.output] == ["reasoning", "message"]
    assert [e.output_index for e in events if e.type == "response.output_text.delta"] == [1, 1]


def test_previous_response_id_continues_the_stored_conversation(http: TestClient, fake: FakeBackend) -> None:
    sdk = _sdk(http)
    first = sdk.responses.create(model="fake", input="My name is Ada.", instructions="Only the first time")
    second = sdk.responses.create(model="fake", input="What is my name?", previous_response_id=first.id)
    assert second.previous_response_id == first.id
    assert _conversation(fake.requests[-1]) == [
        ("user", "My name is Ada."),
        ("assistant", "Hello, world!"),
        ("user", "What is my name?"),
    ]
    streamed = list(
        sdk.responses.create(model="fake", input="Again?", previous_response_id=second.id, stream=True)
    )
    third = streamed[-1].response  # type: ignore[union-attr]
    fourth = sdk.responses.create(model="fake", input="Last", previous_response_id=third.id)
    assert fourth.status == "completed"
    assert [m.content for m in fake.requests[-1].messages] == [
        "My name is Ada.",
        "Hello, world!",
        "What is my name?",
        "Hello, world!",
        "Again?",
        "Hello, world!",
        "Last",
    ]


def test_stored_responses_are_read_listed_and_deleted(http: TestClient) -> None:
    sdk = _sdk(http)
    made = sdk.responses.create(model="fake", input=[{"role": "user", "content": "Hi"}])
    again = sdk.responses.retrieve(made.id)
    assert again.id == made.id
    assert again.output_text == "Hello, world!"
    items = sdk.responses.input_items.list(made.id)
    assert [(item.type, item.role) for item in items.data] == [("message", "user")]  # type: ignore[union-attr]
    assert items.data[0].content[0].text == "Hi"  # type: ignore[union-attr]
    sdk.responses.delete(made.id)
    with pytest.raises(openai.NotFoundError):
        sdk.responses.retrieve(made.id)
    with pytest.raises(openai.NotFoundError):
        sdk.responses.create(model="fake", input="Go on", previous_response_id=made.id)


def test_store_false_keeps_nothing(http: TestClient) -> None:
    sdk = _sdk(http)
    made = sdk.responses.create(model="fake", input="Hi", store=False)
    assert made.store is False
    with pytest.raises(openai.NotFoundError):
        sdk.responses.retrieve(made.id)


def test_another_key_cannot_read_or_continue_a_response(http: TestClient) -> None:
    made = _sdk(http, "key-a").responses.create(model="fake", input="secret")
    other = _sdk(http, "key-b")
    with pytest.raises(openai.NotFoundError):
        other.responses.retrieve(made.id)
    with pytest.raises(openai.NotFoundError):
        other.responses.create(model="fake", input="Go on", previous_response_id=made.id)
    with pytest.raises(openai.NotFoundError):
        other.responses.delete(made.id)
    assert _sdk(http, "key-a").responses.retrieve(made.id).id == made.id


def test_stored_responses_expire_and_are_bounded(tmp_path: Path, fake: FakeBackend) -> None:
    clock = FakeClock()
    settings = fake_settings(tmp_path, responses={"max_stored": 2, "ttl_s": 60})
    services = fake_services(settings, fake, clock=clock)
    with gateway(services) as http:
        sdk = _sdk(http)
        ids = [sdk.responses.create(model="fake", input=f"q{i}").id for i in range(3)]
        with pytest.raises(openai.NotFoundError):
            sdk.responses.retrieve(ids[0])  # the oldest made room
        assert sdk.responses.retrieve(ids[2]).id == ids[2]
        clock.now += 61
        with pytest.raises(openai.NotFoundError):
            sdk.responses.retrieve(ids[2])
    assert len(services.responses) <= 1


@pytest.mark.parametrize(
    ("body", "param", "words"),
    [
        ({"model": "fake"}, "input", "'input' is required"),
        ({"model": "fake", "input": []}, "input", "'input' is required"),
        ({"model": "fake", "input": [{"role": "assistant", "content": "x"}]}, "input", "no user message"),
        ({"model": "fake", "input": [{"role": "robot", "content": "x"}]}, "input[0].role", "must be one of"),
        ({"model": "fake", "input": [{"role": "user"}]}, "input[0].content", "is required"),
        (
            {
                "model": "fake",
                "input": [{"role": "user", "content": [{"type": "input_file", "file_id": "f"}]}],
            },
            "input[0].content[0].type",
            "'input_file'",
        ),
        (
            {"model": "fake", "input": [{"role": "user", "content": [{"type": "input_image"}]}]},
            "input[0].content[0].image_url",
            "is required",
        ),
        (
            {"model": "fake", "input": [{"type": "function_call_output", "call_id": "c", "output": "1"}]},
            "input[0].call_id",
            "answers no tool call",
        ),
        (
            {"model": "fake", "input": [{"type": "function_call", "name": "f", "arguments": "{}"}]},
            "input[0].call_id",
            "is required",
        ),
        (
            {
                "model": "fake",
                "input": [
                    {"type": "function_call", "call_id": "c", "name": "f", "arguments": "{}"},
                    {"type": "function_call_output", "call_id": "c"},
                ],
            },
            "input[1].output",
            "is required",
        ),
        (
            {"model": "fake", "input": "x", "tools": [{"type": "web_search"}]},
            "tools[0].type",
            "only 'function'",
        ),
        ({"model": "fake", "input": "x", "tools": [{"type": "function"}]}, "tools[0].name", "is required"),
        (
            {"model": "fake", "input": "x", "tools": [{"type": "function", "name": "a b"}]},
            "tools[0].name",
            "letters, digits",
        ),
        (
            {
                "model": "fake",
                "input": "x",
                "tools": [{"type": "function", "name": "f"}],
                "tool_choice": "any",
            },
            "tool_choice",
            '{"type": "function", "name": …}',
        ),
        (
            {
                "model": "fake",
                "input": "x",
                "tools": [{"type": "function", "name": "f"}],
                "tool_choice": {"type": "function", "name": "g"},
            },
            "tool_choice.name",
            "not among the tools",
        ),
        ({"model": "fake", "input": "x", "tool_choice": "required"}, "tool_choice", "needs 'tools'"),
        ({"model": "fake", "input": "x", "background": True}, "background", "not supported"),
        ({"model": "fake", "input": "x", "include": ["file_search_call.results"]}, "include", "only"),
        ({"model": "fake", "input": "x", "truncation": "auto"}, "truncation", "not supported"),
        ({"model": "fake", "input": "x", "temperature": 3}, "temperature", ""),
        ({"model": "fake", "input": "x", "max_output_tokens": 0}, "max_output_tokens", ""),
        (
            {"model": "fake", "input": "x", "text": {"format": {"type": "json_schema"}}},
            "text.format.schema",
            "",
        ),
        ({"model": "fake", "input": "x", "reasoning": {"effort": "extreme"}}, "reasoning.effort", ""),
        ({"model": "fake", "input": "x", "metadata": {"k": 1}}, "metadata.k", ""),
    ],
)
def test_bad_input_is_a_400_naming_the_field(
    http: TestClient, body: dict[str, Any], param: str, words: str
) -> None:
    response = http.post("/v1/responses", json=body)
    assert response.status_code == 400, response.text
    error = response.json()["error"]
    assert error["param"] == param
    assert words in error["message"]


def test_unknown_ids_and_models_are_404s(http: TestClient) -> None:
    sdk = _sdk(http)
    with pytest.raises(openai.NotFoundError, match="resp_nope"):
        sdk.responses.create(model="fake", input="x", previous_response_id="resp_nope")
    with pytest.raises(openai.NotFoundError, match="does not exist"):
        sdk.responses.create(model="nope", input="x")
    assert http.get("/v1/responses/resp_nope").status_code == 404
    assert http.get("/v1/responses/resp_nope/input_items?order=sideways").status_code == 400


def test_a_failure_mid_stream_ends_with_response_failed(tmp_path: Path) -> None:
    broken = FakeBackend(model_id="fake", tokens=("a", "b", "c"), fail_after=1)
    with gateway(fake_services(fake_settings(tmp_path), broken)) as http:
        events = list(_sdk(http).responses.create(model="fake", input="x", stream=True))
        failed = events[-1]
        assert failed.type == "response.failed"
        assert failed.response.status == "failed"
        assert failed.response.error is not None
        assert failed.response.error.code == "backend_error"
        assert any(e.type == "error" for e in events)
        assert http.get(f"/v1/responses/{failed.response.id}").status_code == 404  # nothing half-made kept


def test_no_store_configured_refuses_store_true(tmp_path: Path, fake: FakeBackend) -> None:
    with gateway(_services(tmp_path, fake, responses={"max_stored": 0})) as http:
        sdk = _sdk(http)
        with pytest.raises(openai.BadRequestError, match="store: false"):
            sdk.responses.create(model="fake", input="x")
        assert sdk.responses.create(model="fake", input="x", store=False).status == "completed"


def test_each_response_is_one_telemetry_record(http: TestClient) -> None:
    sdk = _sdk(http)
    sdk.responses.create(model="fake", input="x")
    list(sdk.responses.create(model="fake", input="y", stream=True))
    with pytest.raises(openai.NotFoundError):
        sdk.responses.create(model="nope", input="x")
    metrics = http.get("/v1/metrics").json()
    assert metrics["requests"] == 3
    assert metrics["errors"] == 1


def test_stream_and_store_null_are_their_defaults(http: TestClient) -> None:
    """``stream`` and ``store`` are ``Optional`` in the SDK's types, sent as JSON null: OpenAI's defaults
    (not streamed; stored)."""
    sdk = _sdk(http)
    response = sdk.responses.create(model="fake", input="Say hello", stream=None, store=None)
    assert response.output_text == "Hello, world!" and response.store is True
    assert sdk.responses.retrieve(response.id).output_text == "Hello, world!"


def test_an_input_over_the_context_names_the_input(tmp_path: Path) -> None:
    """``context_length_exceeded`` names this surface's fields (``input``, ``max_output_tokens``), not
    chat's ``messages`` and ``max_tokens``."""
    tiny = FakeBackend(model_id="tiny", n_ctx=16)
    with gateway(fake_services(fake_settings(tmp_path, ["tiny"]), tiny)) as http:
        for stream in (False, True):
            with pytest.raises(openai.BadRequestError) as err:
                _sdk(http).responses.create(model="tiny", input="word " * 20, stream=stream)
            assert err.value.code == "context_length_exceeded" and err.value.param == "input"
