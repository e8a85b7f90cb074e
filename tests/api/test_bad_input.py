"""Hostile and broken requests over raw HTTP: each is a 4xx in OpenAI's error shape; the server lives on."""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import AbstractContextManager
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from pydantic import TypeAdapter

from groupqwen.api.services import Services
from groupqwen.backends.fake import FakeBackend
from groupqwen.messages import Delta
from groupqwen.orchestrator.answer import Answer
from groupqwen.testing import fake_services, fake_settings, gateway

URL = "/v1/chat/completions"
GOOD: dict[str, Any] = {"model": "fake", "messages": [{"role": "user", "content": "hi"}]}


@pytest.fixture(scope="module")
def fake() -> FakeBackend:
    return FakeBackend(model_id="fake")


@pytest.fixture(scope="module")
def services(tmp_path_factory: pytest.TempPathFactory, fake: FakeBackend) -> Services:
    return fake_services(fake_settings(tmp_path_factory.mktemp("m")), fake)


@pytest.fixture(scope="module")
def http(services: Services) -> Iterator[TestClient]:
    """One server for the whole module: every bad request hits the same process, then a good one must work."""
    with gateway(services) as client:
        yield client


def _with(**changes: Any) -> dict[str, Any]:
    body = json.loads(json.dumps(GOOD))
    for key, value in changes.items():
        if value is _DROP:
            body.pop(key)
        else:
            body[key] = value
    return body


_DROP = object()
# a 1×1 transparent PNG
PNG = (
    "data:image/png;base64,"
    "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAQAAAC1HAwCAAAAC0lEQVR42mNkYAAAAAYAAjCB0C8AAAAASUVORK5CYII="
)
_PNG_PART = {"type": "image_url", "image_url": {"url": PNG}}
_IMAGE_URL = "messages[0].content[1].image_url.url"


def _image(image_url: Any) -> dict[str, Any]:
    """A user message of a text part and an image part whose ``image_url`` is ``image_url``."""
    part = {"type": "image_url", "image_url": image_url}
    return _with(messages=[{"role": "user", "content": [{"type": "text", "text": "What is it?"}, part]}])


def _error(response: Any, status: int) -> dict[str, Any]:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/json")
    assert response.headers["x-request-id"]
    payload = response.json()
    assert set(payload) == {"error"}
    error = payload["error"]
    assert set(error) == {"message", "type", "param", "code"}
    assert isinstance(error["message"], str) and error["message"]
    assert error["type"] == "invalid_request_error"
    return error  # type: ignore[no-any-return]


RAW_CASES: list[tuple[str, bytes, int, str | None]] = [
    ("malformed JSON", b'{"model": "fake", "messages": [', 400, None),
    ("not JSON at all", b"hello", 400, None),
    ("empty body", b"", 400, None),
    ("JSON list", b'[{"model": "fake"}]', 400, None),
    ("JSON string", b'"hello"', 400, None),
    ("JSON null", b"null", 400, None),
    ("invalid UTF-8", b'{"model": "fake", "messages": [{"role": "user", "content": "\xff\xfe"}]}', 400, None),
    (
        "NaN temperature",
        b'{"model": "fake", "messages": [{"role": "user", "content": "x"}], "temperature": NaN}',
        400,
        "temperature",
    ),
]


@pytest.mark.parametrize(("name", "body", "status", "param"), RAW_CASES, ids=[c[0] for c in RAW_CASES])
def test_raw_body(http: TestClient, name: str, body: bytes, status: int, param: str | None) -> None:
    response = http.post(URL, content=body, headers={"content-type": "application/json"})
    error = _error(response, status)
    assert error["param"] == param


def _tool(name: str) -> dict[str, Any]:
    return {"type": "function", "function": {"name": name, "parameters": {"type": "object"}}}


def _call(call_id: str) -> dict[str, Any]:
    return {"id": call_id, "type": "function", "function": {"name": "f", "arguments": "{}"}}


JSON_CASES: list[tuple[str, dict[str, Any], str]] = [
    ("messages as a string", _with(messages="hello"), "messages"),
    ("messages empty", _with(messages=[]), "messages"),
    ("messages missing", _with(messages=_DROP), "messages"),
    ("message not an object", _with(messages=["hi"]), "messages[0]"),
    ("role wizard", _with(messages=[{"role": "wizard", "content": "x"}]), "messages[0].role"),
    ("role missing", _with(messages=[{"content": "x"}]), "messages[0].role"),
    ("content null", _with(messages=[{"role": "user", "content": None}]), "messages[0].content"),
    ("content missing", _with(messages=[{"role": "user"}]), "messages[0].content"),
    ("content a number", _with(messages=[{"role": "user", "content": 5}]), "messages[0].content"),
    (
        "content part text a number",
        _with(messages=[{"role": "user", "content": [{"type": "text", "text": 5}]}]),
        "messages[0].content",
    ),
    (
        "second message bad",
        _with(messages=[{"role": "user", "content": "a"}, {"role": "user", "content": None}]),
        "messages[1].content",
    ),
    ("max_tokens ten", _with(max_tokens="ten"), "max_tokens"),
    ("max_tokens negative", _with(max_tokens=-1), "max_tokens"),
    ("max_tokens float", _with(max_tokens=1.5), "max_tokens"),
    ("temperature 5", _with(temperature=5), "temperature"),
    ("temperature string", _with(temperature="hot"), "temperature"),
    ("top_p 0", _with(top_p=0), "top_p"),
    ("stream a string", _with(stream="yes"), "stream"),
    ("stop a number", _with(stop=5), "stop"),
    ("stop 100 strings", _with(stop=[f"s{i}" for i in range(100)]), "stop"),
    ("n 0", _with(n=0), "n"),
    ("n 9", _with(n=9), "n"),
    ("top_logprobs 50", _with(logprobs=True, top_logprobs=50), "top_logprobs"),
    ("top_logprobs without logprobs", _with(top_logprobs=3), "top_logprobs"),
    ("logprobs a string", _with(logprobs="true"), "logprobs"),
    ("model missing", _with(model=_DROP), "model"),
    ("model empty", _with(model=""), "model"),
    ("model a number", _with(model=7), "model"),
    ("tools a dict", _with(tools={"type": "function"}), "tools"),
    ("tool type custom", _with(tools=[{"type": "custom", "custom": {"name": "f"}}]), "tools[0].type"),
    ("tool without function", _with(tools=[{"type": "function"}]), "tools[0].function"),
    ("tool name with spaces", _with(tools=[_tool("get weather")]), "tools[0].function.name"),
    ("tool name twice", _with(tools=[_tool("f"), _tool("f")]), "tools[1].function.name"),
    (
        "tool parameters a list",
        _with(tools=[{"type": "function", "function": {"name": "f", "parameters": []}}]),
        "tools[0].function.parameters",
    ),
    ("tool_choice without tools", _with(tool_choice="required"), "tool_choice"),
    ("tool_choice unknown", _with(tools=[_tool("f")], tool_choice="always"), "tool_choice"),
    (
        "tool_choice names another",
        _with(tools=[_tool("f")], tool_choice={"type": "function", "function": {"name": "g"}}),
        "tool_choice.function.name",
    ),
    (
        "parallel_tool_calls a string",
        _with(tools=[_tool("f")], parallel_tool_calls="yes"),
        "parallel_tool_calls",
    ),
    ("legacy functions", _with(functions=[{"name": "f"}]), "functions"),
    ("legacy function_call", _with(function_call="auto"), "function_call"),
    (
        "legacy function role",
        _with(messages=[{"role": "function", "name": "f", "content": "1"}]),
        "messages[0].role",
    ),
    (
        "tool message without id",
        _with(messages=[{"role": "tool", "content": "42"}]),
        "messages[0].tool_call_id",
    ),
    (
        "tool message answering nothing",
        _with(messages=[{"role": "tool", "content": "42", "tool_call_id": "c1"}]),
        "messages[0].tool_call_id",
    ),
    (
        "tool_calls on a user message",
        _with(messages=[{"role": "user", "content": "x", "tool_calls": [_call("c1")]}]),
        "messages[0].tool_calls",
    ),
    (
        "tool call without id",
        _with(
            messages=[
                {
                    "role": "assistant",
                    "tool_calls": [{"type": "function", "function": {"name": "f", "arguments": "{}"}}],
                }
            ]
        ),
        "messages[0].tool_calls[0].id",
    ),
    (
        "tool call arguments an object",
        _with(
            messages=[
                {
                    "role": "assistant",
                    "tool_calls": [
                        {"id": "c", "type": "function", "function": {"name": "f", "arguments": {}}}
                    ],
                }
            ]
        ),
        "messages[0].tool_calls[0].function.arguments",
    ),
    ("presence_penalty 3", _with(presence_penalty=3), "presence_penalty"),
    ("frequency_penalty a string", _with(frequency_penalty="high"), "frequency_penalty"),
    ("logit_bias key a word", _with(logit_bias={"hello": 5}), "logit_bias"),
    ("logit_bias key negative", _with(logit_bias={"-1": 5}), "logit_bias"),
    ("logit_bias value 101", _with(logit_bias={"42": 101}), "logit_bias"),
    ("logit_bias value a string", _with(logit_bias={"42": "up"}), "logit_bias.42"),
    ("logit_bias too many", _with(logit_bias={str(i): 1 for i in range(301)}), "logit_bias"),
    ("response_format unknown", _with(response_format={"type": "xml"}), "response_format.type"),
    ("stream_options a list", _with(stream=True, stream_options=[1]), "stream_options"),
    ("image URL without a scheme", _image({"url": "x"}), "messages[0].content[1].image_url.url"),
    ("image URL ftp", _image({"url": "ftp://host/a.png"}), "messages[0].content[1].image_url.url"),
    ("image URL file", _image({"url": "file:///etc/passwd"}), "messages[0].content[1].image_url.url"),
    ("image URL without host", _image({"url": "https:///a.png"}), "messages[0].content[1].image_url.url"),
    ("image data URL broken base64", _image({"url": "data:image/png;base64,iVBOR%%w0KGgo="}), _IMAGE_URL),
    ("image data URL bad padding", _image({"url": "data:image/png;base64,iVBORw0KGgo"}), _IMAGE_URL),
    ("image data URL empty", _image({"url": "data:image/png;base64,"}), _IMAGE_URL),
    ("image data URL not an image", _image({"url": "data:text/html;base64,PGI+aGk8L2I+"}), _IMAGE_URL),
    ("image data URL not base64", _image({"url": "data:image/svg+xml,<svg/>"}), _IMAGE_URL),
    (
        "image detail unknown",
        _image({"url": "https://a.example/x.png", "detail": "max"}),
        _IMAGE_URL[:-4] + ".detail",
    ),
    ("image_url a string", _image("https://a.example/x.png"), "messages[0].content[1].image_url"),
    ("image_url missing", _image(None), "messages[0].content[1].image_url"),
    (
        "text part without text",
        _with(messages=[{"role": "user", "content": [{"type": "text"}]}]),
        "messages[0].content[0].text",
    ),
    (
        "audio part",
        _with(messages=[{"role": "user", "content": [{"type": "input_audio"}]}]),
        "messages[0].content[0].type",
    ),
    (
        "image in a system message",
        _with(messages=[{"role": "system", "content": [_PNG_PART]}, {"role": "user", "content": "hi"}]),
        "messages[0].content[0].type",
    ),
    (
        "image in an assistant message",
        _with(messages=[{"role": "user", "content": "hi"}, {"role": "assistant", "content": [_PNG_PART]}]),
        "messages[1].content[0].type",
    ),
    (
        "more images than max_images (8)",
        _with(
            messages=[
                {"role": "user", "content": [_PNG_PART] * 5},
                {"role": "user", "content": [_PNG_PART] * 5},
            ]
        ),
        "messages[1].content[3]",
    ),
]


LIMIT_CASES: list[tuple[str, dict[str, Any], str, str]] = [
    (
        "1001 messages",
        _with(messages=[{"role": "user", "content": "hi"}] * 1001),
        "messages",
        "'messages' has 1001 messages; at most 1000 are accepted (max_messages)",
    ),
    (
        "a text too long",
        _with(messages=[{"role": "user", "content": "x" * 400_001}]),
        "messages[0].content",
        "messages[0].content has 400001 characters; at most 400000 are accepted (max_text_chars)",
    ),
    (
        "a text part too long",
        _with(messages=[{"role": "user", "content": [{"type": "text", "text": "x" * 400_001}]}]),
        "messages[0].content[0].text",
        "at most 400000 are accepted (max_text_chars)",
    ),
    (
        "max_tokens above max_output_tokens",
        _with(max_tokens=32769),
        "max_tokens",
        "'max_tokens' is 32769; at most 32768 are accepted (max_output_tokens)",
    ),
    (
        "max_completion_tokens above max_output_tokens",
        _with(max_completion_tokens=10**9),
        "max_completion_tokens",
        "(max_output_tokens)",
    ),
    ("a model name of 257 characters", _with(model="m" * 257), "model", "at most 256 characters"),
    ("a user of 257 characters", _with(user="u" * 257), "user", "at most 256 characters"),
    (
        "a stop string of 257 characters",
        _with(stop=["s" * 257]),
        "stop[0]",
        "has 257 characters; at most 256",
    ),
    (
        "a message name of 257 characters",
        _with(messages=[{"role": "user", "content": "hi", "name": "n" * 257}]),
        "messages[0].name",
        "at most 256 characters",
    ),
]


@pytest.mark.parametrize(("name", "body", "param", "says"), LIMIT_CASES, ids=[c[0] for c in LIMIT_CASES])
def test_request_limits_are_400s_that_name_the_field_and_the_setting(
    http: TestClient, name: str, body: dict[str, Any], param: str, says: str
) -> None:
    error = _error(http.post(URL, json=body), 400)
    assert error["param"] == param
    assert says in error["message"]


def test_request_limits_are_settings(tmp_path: Path) -> None:
    settings = fake_settings(tmp_path, max_messages=2, max_text_chars=3, max_output_tokens=None)
    with gateway(fake_services(settings)) as client:
        assert client.post(URL, json=_with(max_tokens=3000)).status_code == 200
        assert (
            client.post(URL, json=_with(messages=[{"role": "user", "content": "abc"}] * 2)).status_code == 200
        )
        assert (
            _error(client.post(URL, json=_with(messages=[GOOD["messages"][0]] * 3)), 400)["param"]
            == "messages"
        )
        too_long = _with(messages=[{"role": "user", "content": "abcd"}])
        assert _error(client.post(URL, json=too_long), 400)["param"] == "messages[0].content"


@pytest.mark.parametrize(("name", "body", "param"), JSON_CASES, ids=[c[0] for c in JSON_CASES])
def test_bad_field_names_the_param(http: TestClient, name: str, body: dict[str, Any], param: str) -> None:
    error = _error(http.post(URL, json=body), 400)
    assert error["param"] == param
    assert error["code"] in ("invalid_request", "unsupported_parameter")


def test_unknown_model_is_404(http: TestClient) -> None:
    error = _error(http.post(URL, json=_with(model="gpt-17")), 404)
    assert (error["param"], error["code"]) == ("model", "model_not_found")


def test_ten_megabyte_body_is_413(http: TestClient) -> None:
    body = json.dumps(_with(messages=[{"role": "user", "content": "x" * 10_000_000}])).encode()
    error = _error(http.post(URL, content=body, headers={"content-type": "application/json"}), 413)
    assert error["code"] == "payload_too_large"
    assert error["param"] is None


def test_large_body_without_content_length_is_413(http: TestClient, services: Services) -> None:
    def chunks() -> Iterator[bytes]:
        yield b'{"model": "fake", "messages": [{"role": "user", "content": "'
        for _ in range(200):
            yield b"x" * 10_000
        yield b'"}]}'

    before = services.telemetry.summary(3600)["status"].get("413", 0)
    error = _error(http.post(URL, content=chunks(), headers={"content-type": "application/json"}), 413)
    assert error["code"] == "payload_too_large"
    # the route's record says what the client got (the refusal came from inside the body's reading)
    assert services.telemetry.summary(3600)["status"].get("413", 0) == before + 1


def test_lying_content_length_is_handled(http: TestClient) -> None:
    response = http.post(
        URL, content=b"{}", headers={"content-type": "application/json", "content-length": "abc"}
    )
    assert 400 <= response.status_code < 500


def test_unknown_fields_are_ignored(http: TestClient) -> None:
    response = http.post(URL, json=_with(frequency_penalty=0.5, metadata={"a": "b"}, store=False))
    assert response.status_code == 200, response.text


def test_integer_temperature_is_accepted(http: TestClient) -> None:
    assert http.post(URL, json=_with(temperature=1)).status_code == 200


def test_unknown_route_and_method_are_openai_shaped(http: TestClient) -> None:
    error = _error(http.get("/v1/nothing-here"), 404)
    assert error["code"] == "not_found"
    error = _error(http.get(URL), 405)
    assert error["code"] == "method_not_allowed"


def test_server_still_answers_after_all_of_that(http: TestClient, fake: FakeBackend) -> None:
    # a few more in a row, then a good one
    for body in (b"{", b"[]", b"\xff", json.dumps(_with(messages=[])).encode()):
        assert 400 <= http.post(URL, content=body).status_code < 500
    response = http.post(URL, json=GOOD)
    assert response.status_code == 200, response.text
    assert response.json()["choices"][0]["message"]["content"] == "Hello, world!"
    response = http.post(URL, json={**GOOD, "stream": True})
    assert response.status_code == 200
    assert response.text.rstrip().endswith("data: [DONE]")
    assert fake.active == 0


# --------------------------------------------------------------------------------------------------------
# Unexpected exceptions


def _app_with_broken(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, where: str
) -> AbstractContextManager[TestClient]:
    services = fake_services(fake_settings(tmp_path), FakeBackend(model_id="fake"))

    def boom(*args: Any, **kwargs: Any) -> Any:
        raise ValueError("a bug, with a secret prompt in it")

    if where == "run":  # before the answer starts
        monkeypatch.setattr(services.pipeline, "run", boom)
    else:  # while a JSON answer is collected
        monkeypatch.setattr(Answer, "collect", boom)
    return gateway(services)


@pytest.mark.parametrize("where", ["run", "collect"])
def test_unexpected_exception_is_an_openai_shaped_500(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, where: str
) -> None:
    with _app_with_broken(tmp_path, monkeypatch, where) as http:
        response = http.post(URL, json=GOOD, headers={"x-request-id": "trace-me"})
        assert response.status_code == 500
        assert response.headers["x-request-id"] == "trace-me"
        error = response.json()["error"]
        assert set(error) == {"message", "type", "param", "code"}
        assert error["type"] == "api_error"
        assert "secret" not in error["message"]  # internals do not leak
        assert "request id" in error["message"]
        # the app still serves
        assert http.get("/health").status_code == 200


def test_an_internal_validation_error_is_a_500_not_the_clients_fault(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """Only the client's input is the client's fault: the adapters convert the wire models' validation
    errors (400), and a pydantic ``ValidationError`` from anywhere else is a bug."""
    services = fake_services(fake_settings(tmp_path), FakeBackend(model_id="fake"))

    def states() -> Any:
        return TypeAdapter(int).validate_python("not a number")  # a bug inside: raises ValidationError

    monkeypatch.setattr(services.pool, "states", states)
    with gateway(services) as http:
        response = http.get("/v1/models", headers={"x-request-id": "trace-me"})
        assert response.status_code == 500, response.text
        assert response.headers["x-request-id"] == "trace-me"
        error = response.json()["error"]
        assert set(error) == {"message", "type", "param", "code"}
        assert error["type"] == "api_error" and error["param"] is None
        assert "request id" in error["message"]
        bad = http.post(URL, json=_with(temperature="hot"))  # the client's own mistake is still a 400
        assert _error(bad, 400)["param"] == "temperature"
    [logged] = [r for r in caplog.records if r.getMessage() == "unexpected error"]
    assert logged.levelname == "ERROR" and logged.exc_info is not None


def test_unexpected_exception_mid_stream_ends_the_stream_with_an_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    backend = FakeBackend(model_id="fake")
    services = fake_services(fake_settings(tmp_path), backend)
    real_next = Answer.__anext__
    read: list[Delta] = []

    async def broken_next(answer: Answer) -> Delta:
        if read:  # after the first delta
            raise KeyError("oops")
        read.append(await real_next(answer))
        return read[-1]

    monkeypatch.setattr(Answer, "__anext__", broken_next)
    with gateway(services) as http:
        response = http.post(URL, json={**GOOD, "stream": True})
    assert response.status_code == 200
    frames = [line[6:] for line in response.text.splitlines() if line.startswith("data: ")]
    assert frames[-1] == "[DONE]"
    error = json.loads(frames[-2])["error"]
    assert error["type"] == "api_error"
    assert "oops" not in error["message"]
    assert backend.active == 0


@pytest.mark.parametrize(
    ("url", "body", "param"),
    [
        ("/v1/completions", {"model": "fake", "prompt": "x" * 400_001}, "prompt"),
        ("/v1/completions", {"model": "fake", "prompt": "x", "max_tokens": 32769}, "max_tokens"),
        ("/v1/responses", {"model": "fake", "input": "x" * 400_001}, "input"),
        ("/v1/responses", {"model": "fake", "input": "x", "max_output_tokens": 32769}, "max_output_tokens"),
        (
            "/v1/responses",
            {"model": "fake", "input": [{"role": "user", "content": "x"}] * 1001, "store": False},
            "input",
        ),
    ],
)
def test_the_other_surfaces_keep_the_same_request_limits(
    http: TestClient, url: str, body: dict[str, Any], param: str
) -> None:
    error = _error(http.post(url, json=body), 400)
    assert error["param"] == param and "(max_" in error["message"]


def test_each_upload_route_has_its_own_limit(tmp_path: Path) -> None:
    """``POST /v1/files`` may exceed ``max_body_bytes`` up to ``finetune.max_upload_mb`` (and the review
    import up to ``ui.max_upload_mb``); over it, a 413 naming that setting. Other routes keep
    ``max_body_bytes``."""
    settings = fake_settings(tmp_path, max_body_bytes=1024 * 1024, finetune={"max_upload_mb": 2})
    big = b"x" * (3 * 2**20)
    with gateway(fake_services(settings)) as client:
        refused = client.post("/v1/files", content=big, headers={"content-type": "application/octet-stream"})
        assert refused.status_code == 413, refused.text
        assert "finetune.max_upload_mb" in refused.json()["error"]["message"]
        middling = b"x" * (int(1.5 * 2**20))
        let_in = client.post(
            "/v1/files", content=middling, headers={"content-type": "application/octet-stream"}
        )
        assert let_in.status_code == 400, let_in.text  # past the size check: not a multipart upload
        chat = client.post(
            "/v1/chat/completions", content=middling, headers={"content-type": "application/json"}
        )
        assert chat.status_code == 413 and "max_body_bytes" in chat.json()["error"]["message"]
