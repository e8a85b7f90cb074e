"""The cache over ``/v1/ws``: a ``chat.create`` frame's ``headers`` are read as HTTP's cache headers. The
web UI's Regenerate sends ``cache-control: no-cache`` there: a regenerated answer means the cached one was
not wanted."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from starlette.testclient import WebSocketTestSession

from groupqwen.backends.fake import FakeBackend
from groupqwen.cache.embedders import MiniLMEmbedder

from .helpers import embedded_store
from .test_gateway import gateway

QUESTION = "What is the capital of France?"


@pytest.fixture
def client(tmp_path: Path, minilm: MiniLMEmbedder) -> Iterator[tuple[TestClient, dict[str, FakeBackend]]]:
    with gateway(tmp_path, embedded_store(minilm.dim), minilm) as pair:
        yield pair


def create(gid: str, headers: dict[str, Any] | None = None) -> dict[str, Any]:
    body = {"model": "fake", "messages": [{"role": "user", "content": QUESTION}], "temperature": 0}
    return {"type": "chat.create", "id": gid, "body": body, **({"headers": headers} if headers else {})}


def answer(ws: WebSocketTestSession, frame: dict[str, Any]) -> tuple[str, str]:
    """``frame`` sent: the answer's ``x-groupqwen-cache`` and its text."""
    ws.send_json(frame)
    cache, text = "", ""
    while (got := ws.receive_json())["type"] != "done":
        assert got["type"] in ("chunk", "ping"), got
        if got["type"] == "chunk":
            cache = got.get("headers", {}).get("x-groupqwen-cache", cache)
            text += "".join(c["delta"].get("content") or "" for c in got["data"]["choices"])
    return cache, text


def test_a_regenerate_with_no_cache_is_answered_anew(
    client: tuple[TestClient, dict[str, FakeBackend]],
) -> None:
    test_client, backends = client
    with test_client.websocket_connect("/v1/ws") as ws:
        assert ws.receive_json()["type"] == "hello"
        assert answer(ws, create("1"))[0] == "miss"
        assert answer(ws, create("2")) == ("hit", "Paris is the capital of France. ")
        assert len(backends["fake"].requests) == 1
        # the names as any case, as HTTP's
        assert answer(ws, create("3", {"Cache-Control": "no-cache"}))[0] == "bypass"
        assert len(backends["fake"].requests) == 2  # generated again, not read from the cache


@pytest.mark.parametrize(
    ("headers", "param"),
    [
        ({"authorization": "Bearer x"}, "headers"),  # the connection's, not a generation's
        ({"cache-control": 5}, "headers"),
        ({"x-groupqwen-cache-ttl": "soon"}, "x-groupqwen-cache-ttl"),
    ],
)
def test_bad_headers_are_an_error_for_that_id(
    client: tuple[TestClient, dict[str, FakeBackend]], headers: dict[str, Any], param: str
) -> None:
    test_client, backends = client
    with test_client.websocket_connect("/v1/ws") as ws:
        ws.receive_json()
        ws.send_json(create("bad", headers))
        error = ws.receive_json()
    assert (error["type"], error["id"], error["status"]) == ("error", "bad", 400)
    assert error["error"]["param"] == param
    assert backends["fake"].requests == []
