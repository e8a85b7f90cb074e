"""What a client gets through the gateway from a real OpenAI-compatible server (llama-cpp-python's) is
what the server says: the same content bytes, finish reasons, completion tokens and logprobs (tokens,
values, bytes, alternatives), streamed or not. The gateway asks the server for a stream (aiohttp, bytes
parsed once with orjson) whatever the client asked."""

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

QUESTIONS = ["Name a colour.", "Write the word café twice, with its accent.", "Count from 1 to 5."]


@pytest.fixture(scope="module")
def server() -> Iterator[LlamaServer]:
    from groupqwen.pool.bundled import ensure_bundled

    model = ensure_bundled(builtin_catalog()["smollm2-135m"], load_settings().models_dir)
    with LlamaServer(model).serving() as one:
        yield one


@pytest.fixture
def gateway(server: LlamaServer, tmp_path: Path) -> Iterator[TestClient]:
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
        "logprobs": True,
        "top_logprobs": 2,
        **extra,
    }


def direct(server: LlamaServer, question: str) -> dict[str, Any]:
    answer = httpx.post(f"{server.url}/chat/completions", json=body(question, model=ALIAS), timeout=120)
    assert answer.status_code == 200, answer.text
    result: dict[str, Any] = answer.json()
    return result


def entries(logprobs: dict[str, Any]) -> list[tuple[Any, ...]]:
    """Each token's text, logprob, bytes and alternatives: what a client reads of ``logprobs.content``
    (bytes the server leaves out, as llama-cpp-python's does without a stream, are the token's UTF-8)."""

    def one(entry: dict[str, Any]) -> tuple[Any, ...]:
        return entry["token"], entry["logprob"], entry.get("bytes") or list(entry["token"].encode())

    return [(*one(e), [one(t) for t in e["top_logprobs"]]) for e in logprobs["content"]]


def test_a_json_answer_is_the_servers(server: LlamaServer, gateway: TestClient) -> None:
    for question in QUESTIONS:
        upstream = direct(server, question)["choices"][0]
        response = gateway.post("/v1/chat/completions", json=body(question, model="smol"))
        assert response.status_code == 200, response.text
        ours = response.json()
        choice = ours["choices"][0]
        assert choice["message"]["content"].encode() == upstream["message"]["content"].encode()
        assert choice["finish_reason"] == upstream["finish_reason"]
        assert entries(choice["logprobs"]) == entries(upstream["logprobs"])
        assert ours["usage"]["completion_tokens"] == len(upstream["logprobs"]["content"])


def test_a_stream_is_the_servers(server: LlamaServer, gateway: TestClient) -> None:
    for question in QUESTIONS:
        upstream = direct(server, question)["choices"][0]
        with gateway.stream(
            "POST", "/v1/chat/completions", json=body(question, model="smol", stream=True)
        ) as r:
            assert r.status_code == 200 and r.headers["content-type"].startswith("text/event-stream")
            events = [json.loads(line[6:]) for line in r.iter_lines() if line.startswith("data: {")]
        choices = [e["choices"][0] for e in events if e["choices"]]
        content = "".join(c["delta"].get("content") or "" for c in choices)
        assert content.encode() == upstream["message"]["content"].encode()
        assert [c["finish_reason"] for c in choices if c["finish_reason"]] == [upstream["finish_reason"]]
        streamed = [e for c in choices if c.get("logprobs") for e in c["logprobs"]["content"]]
        assert entries({"content": streamed}) == entries(upstream["logprobs"])
