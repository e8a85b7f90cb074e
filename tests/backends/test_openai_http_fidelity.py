"""What a client gets through the gateway from a real OpenAI-compatible server (llama-cpp-python's) is
what the server says: the same requests sent to the server directly and through a gateway with
``backend: openai_http`` (cache off) give the same content bytes, finish reasons, usage, logprobs (tokens,
values, bytes, alternatives) and error statuses and messages, streamed or not. A client that does not
stream gets the server's own JSON answer (asked for whole: its usage is the server's); one that streams,
the server's stream. Tools are covered by test_openai_http_tools.py (they need another chat format)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi.testclient import TestClient
from servers import ALIAS, LlamaServer

from groupqwen.api.app import create_app
from groupqwen.catalog import builtin_catalog
from groupqwen.config import load_settings

pytestmark = pytest.mark.integration

QUESTIONS = ["Name a colour.", "Write the word café twice, with its accent."]


@pytest.fixture(scope="module")
def server() -> Iterator[LlamaServer]:
    from groupqwen.pool.bundled import ensure_bundled

    model = ensure_bundled(builtin_catalog()["smollm2-135m"], load_settings().models_dir)
    with LlamaServer(model).serving() as one:
        yield one


@pytest.fixture(scope="module")
def gateway(server: LlamaServer, tmp_path_factory: pytest.TempPathFactory) -> Iterator[TestClient]:
    tmp_path: Path = tmp_path_factory.mktemp("gateway")
    remote = {"backend": "openai_http", "urls": [server.url], "remote_model": ALIAS}
    settings = load_settings(
        models={"smol": remote},
        models_dir=tmp_path,
        data_dir=tmp_path,
        default_model="smol",
        cache={"backend": "off"},
    )
    with TestClient(create_app(settings)) as client:
        yield client


def body(question: str, **extra: Any) -> dict[str, Any]:
    return {
        "messages": [{"role": "user", "content": question}],
        "max_tokens": 12,
        "temperature": 0,
        "seed": 7,
        "logprobs": True,
        "top_logprobs": 2,
        **extra,
    }


def direct(server: LlamaServer, request: dict[str, Any], *, warm: bool = True) -> httpx.Response:
    """The server's answer. ``warm``: asked twice, the second answer: llama-cpp-python reuses the KV cache
    of the prompt it has just seen, and its logprobs then differ in the third decimal from a cold run's, so
    every run compared here is a warm one."""
    for _ in range(2 if warm else 1):
        answer = httpx.post(f"{server.url}/chat/completions", json={**request, "model": ALIAS}, timeout=300)
    return answer


def entries(logprobs: dict[str, Any] | None) -> list[tuple[Any, ...]]:
    """Each token's text, logprob, bytes and alternatives: what a client reads of ``logprobs.content``
    (bytes the server leaves out, as llama-cpp-python's does without a stream, are the token's UTF-8)."""

    def one(entry: dict[str, Any]) -> tuple[Any, ...]:
        return entry["token"], entry["logprob"], entry.get("bytes") or list(entry["token"].encode())

    return [(*one(e), [one(t) for t in e["top_logprobs"]]) for e in (logprobs or {}).get("content") or ()]


def same_json(server: LlamaServer, gateway: TestClient, request: dict[str, Any]) -> dict[str, Any]:
    """The request sent both ways without streaming: the same choices (content bytes, finish reason,
    logprobs) and usage; the gateway's answer."""
    upstream = direct(server, request)
    assert upstream.status_code == 200, upstream.text
    theirs = upstream.json()
    response = gateway.post("/v1/chat/completions", json={**request, "model": "smol"})
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == upstream.headers["content-type"] == "application/json"
    ours = response.json()
    [expected] = theirs["choices"]
    choice = ours["choices"][0]
    assert choice["message"]["content"].encode() == expected["message"]["content"].encode()
    assert choice["finish_reason"] == expected["finish_reason"]
    assert entries(choice["logprobs"]) == entries(expected["logprobs"])
    assert ours["usage"] == theirs["usage"]
    return dict(ours)


def streamed(gateway: TestClient, request: dict[str, Any]) -> list[dict[str, Any]]:
    with gateway.stream("POST", "/v1/chat/completions", json={**request, "model": "smol"}) as r:
        assert r.status_code == 200 and r.headers["content-type"].startswith("text/event-stream")
        lines = [line for line in r.iter_lines() if line]
    assert lines[-1] == "data: [DONE]"
    return [json.loads(line[6:]) for line in lines if line.startswith("data: {")]


def test_json_answers_are_the_servers(server: LlamaServer, gateway: TestClient) -> None:
    for question in QUESTIONS:
        same_json(server, gateway, body(question))


def test_a_max_tokens_cut_a_stop_sequence_and_sampling_with_a_seed(
    server: LlamaServer, gateway: TestClient
) -> None:
    cut = same_json(server, gateway, body("Count from 1 to 20.", max_tokens=5))
    assert cut["choices"][0]["finish_reason"] == "length" and cut["usage"]["completion_tokens"] == 5
    stopped = same_json(server, gateway, body("Count from 1 to 20.", max_tokens=40, stop=["5"]))
    assert stopped["choices"][0]["finish_reason"] == "stop"
    assert "5" not in stopped["choices"][0]["message"]["content"]
    same_json(server, gateway, body("Tell me a story.", temperature=0.9, seed=11, max_tokens=8))
    # no temperature, no top_p: the server's defaults (the gateway's own would be 0.7 and 1.0)
    unset = {k: v for k, v in body("Tell me a story.", seed=11, max_tokens=8).items() if k != "temperature"}
    same_json(server, gateway, unset)


def test_n_choices_are_the_servers_answers_for_seed_and_seed_plus_one(
    server: LlamaServer, gateway: TestClient
) -> None:
    """The gateway runs choice ``i`` with ``seed + i`` (llama-cpp-python's server gives one choice)."""
    request = body("Tell me a story.", temperature=0.9, seed=11, max_tokens=8, n=2)
    direct(server, {**request, "n": 1}, warm=False)  # the prompt in the server's cache for both choices
    response = gateway.post("/v1/chat/completions", json={**request, "model": "smol"})
    assert response.status_code == 200, response.text
    choices = response.json()["choices"]
    for index, choice in enumerate(choices):
        expected = direct(server, {**request, "n": 1, "seed": 11 + index}, warm=False).json()["choices"][0]
        assert choice["index"] == index
        assert choice["message"]["content"].encode() == expected["message"]["content"].encode()
        assert entries(choice["logprobs"]) == entries(expected["logprobs"])


def test_a_stream_is_the_servers(server: LlamaServer, gateway: TestClient) -> None:
    for question in QUESTIONS:
        request = body(question, stream=True, stream_options={"include_usage": True})
        upstream = direct(server, {**request, "stream": False, "stream_options": None}).json()
        expected = upstream["choices"][0]
        events = streamed(gateway, request)
        choices = [e["choices"][0] for e in events if e["choices"]]
        content = "".join(c["delta"].get("content") or "" for c in choices)
        assert content.encode() == expected["message"]["content"].encode()
        assert [c["finish_reason"] for c in choices if c["finish_reason"]] == [expected["finish_reason"]]
        tokens = [e for c in choices if c.get("logprobs") for e in c["logprobs"]["content"]]
        assert entries({"content": tokens}) == entries(expected["logprobs"])
        # llama-cpp-python streams no usage: the completion's tokens are counted, the prompt's unknown
        [usage] = [e["usage"] for e in events if e.get("usage")]
        assert usage["completion_tokens"] == upstream["usage"]["completion_tokens"]


def test_a_prompt_too_long_is_the_servers_400(server: LlamaServer, gateway: TestClient) -> None:
    request = body("hello " * 1500)
    upstream = direct(server, request)
    response = gateway.post("/v1/chat/completions", json={**request, "model": "smol"})
    assert upstream.status_code == response.status_code == 400
    theirs, ours = upstream.json()["error"], response.json()["error"]
    assert {k: ours[k] for k in ("message", "type", "param", "code")} == theirs


def test_a_request_the_server_refuses_is_its_error(server: LlamaServer, gateway: TestClient) -> None:
    """llama-cpp-python's server refuses ``response_format: json_schema`` (which the gateway accepts) with
    a 500 of its own: the client gets that status, type and message."""
    schema = {"type": "object", "properties": {"colour": {"type": "string"}}}
    request = body(
        "Name a colour.", response_format={"type": "json_schema", "json_schema": {"schema": schema}}
    )
    upstream = direct(server, {**request, "response_format": {"type": "json_schema", "json_schema": {
        "name": "response", "schema": schema, "strict": True}}})  # fmt: skip
    response = gateway.post("/v1/chat/completions", json={**request, "model": "smol"})
    assert upstream.status_code == response.status_code == 500, response.text
    theirs, ours = upstream.json()["error"], response.json()["error"]
    assert (ours["message"], ours["type"]) == (theirs["message"], theirs["type"]) != (None, None)
