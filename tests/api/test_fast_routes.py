"""The hot routes served ahead of FastAPI's router (``api/fast.py``) answer exactly as FastAPI's own routing
of the same endpoints does: successes, streams, the request's errors, the key's refusals and CORS.

FastAPI's path is reached with a ``root_path`` (which the fast path leaves to FastAPI); a counting wrapper
around ``FastRoutes._serve`` shows which path served each request."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.routing import APIRoute
from fastapi.testclient import TestClient

from groupqwen.api import auth, fast
from groupqwen.api.app import create_app
from groupqwen.api.services import Services
from groupqwen.testing import fake_services, fake_settings

UI = "http://localhost:5173"
CHAT = {"model": "fake", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 8}
TEXT = {"model": "fake", "prompt": "Once", "max_tokens": 8}
# headers whose values differ per request
VARYING = {"x-request-id", "content-length", "date"}


@pytest.fixture
def services(tmp_path: Path) -> Services:
    settings = fake_settings(
        tmp_path, auth={"mode": "keys"}, server={"cors_origins": [UI]}, max_body_bytes=4096
    )
    return fake_services(settings)


@pytest.fixture
def keys(services: Services) -> dict[str, str]:
    store = services.access.store
    assert store is not None
    made = {
        "chat": store.create("chat", now=time.time(), models=["fake"])[1],
        "embeddings only": store.create("emb", now=time.time(), scopes=["embeddings"])[1],
        "other model": store.create("other", now=time.time(), models=["auto"])[1],
    }
    return {name: f"Bearer {key}" for name, key in made.items()}


@pytest.fixture
def served(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The paths the fast path served, in order."""
    seen: list[str] = []
    serve = fast.FastRoutes._serve

    async def counting(route: fast.Route, scope: Any, receive: Any, send: Any) -> None:
        seen.append(scope["path"])
        await serve(route, scope, receive, send)

    monkeypatch.setattr(fast.FastRoutes, "_serve", staticmethod(counting))
    return seen


@pytest.fixture
def clients(services: Services) -> Iterator[tuple[TestClient, TestClient]]:
    """(the app as served, the same app reached through FastAPI's router)."""
    app = create_app(services.settings, services)
    with TestClient(app) as plain, TestClient(app, root_path="/gw") as rooted:
        yield plain, rooted


def _normal(value: Any) -> Any:
    """``value`` without what differs from one answer to the next (ids, clocks)."""
    if isinstance(value, dict):
        return {k: _normal(v) for k, v in value.items() if k not in ("id", "created", "latency_ms")}
    if isinstance(value, list):
        return [_normal(v) for v in value]
    return value


def _answer(response: Any) -> tuple[int, dict[str, str], Any]:  # TestClient's response
    headers = {k: v for k, v in response.headers.items() if k not in VARYING}
    if response.headers.get("content-type", "").startswith("text/event-stream"):
        events = [line.removeprefix("data: ") for line in response.text.splitlines() if line]
        body: Any = [e if e == "[DONE]" else _normal(json.loads(e)) for e in events]
    else:
        body = _normal(response.json())
    return response.status_code, headers, body


CASES: dict[str, tuple[str, Any, str | None, dict[str, str]]] = {
    # name: (path, JSON body or raw bytes, key, more headers)
    "chat": ("/v1/chat/completions", CHAT, "chat", {}),
    "chat, from a listed origin": ("/v1/chat/completions", CHAT, "chat", {"origin": UI}),
    "chat, streamed": ("/v1/chat/completions", {**CHAT, "stream": True}, "chat", {}),
    "text completion": ("/v1/completions", TEXT, "chat", {}),
    "text completion, streamed": ("/v1/completions", {**TEXT, "stream": True}, "chat", {}),
    "no key": ("/v1/chat/completions", CHAT, None, {"origin": UI}),
    "a wrong key": ("/v1/completions", TEXT, "wrong", {}),
    "a key without the chat scope": ("/v1/chat/completions", CHAT, "embeddings only", {}),
    "a model the key may not use": ("/v1/chat/completions", CHAT, "other model", {}),
    "an unknown model": ("/v1/chat/completions", {**CHAT, "model": "nope"}, "chat", {}),
    "a bad field": ("/v1/chat/completions", {**CHAT, "temperature": "hot"}, "chat", {}),
    "not JSON": ("/v1/completions", b"{", "chat", {}),
    "too large": ("/v1/chat/completions", {**CHAT, "user": "x" * 5000}, "chat", {"origin": UI}),
    "a bad cache header": ("/v1/chat/completions", CHAT, "chat", {"x-groupqwen-cache-ttl": "-1"}),
}


@pytest.mark.parametrize("case", list(CASES))
def test_the_fast_path_answers_as_fastapis_router_does(
    case: str, clients: tuple[TestClient, TestClient], keys: dict[str, str], served: list[str]
) -> None:
    path, body, key, headers = CASES[case]
    if key is not None:
        headers = {**headers, "authorization": keys.get(key, "Bearer gq-wrong.key")}
    content = body if isinstance(body, bytes) else json.dumps(body).encode()
    headers = {**headers, "content-type": "application/json"}
    plain, rooted = clients
    fast_answer = _answer(plain.post(path, content=content, headers=headers))
    expected = [] if case == "too large" else [path]  # the middleware in front of both refuses it
    assert served == expected
    router_answer = _answer(rooted.post("/gw" + path, content=content, headers=headers))
    assert served == expected  # the rooted request went to FastAPI's router
    assert fast_answer == router_answer
    assert (fast_answer[0] == 200) == (case.startswith(("chat", "text")))


def test_what_is_not_exactly_a_hot_route_goes_to_fastapi(
    clients: tuple[TestClient, TestClient], keys: dict[str, str], served: list[str]
) -> None:
    plain, _ = clients
    preflight = plain.options(
        "/v1/chat/completions",
        headers={"origin": UI, "access-control-request-method": "POST"},
    )
    assert preflight.status_code == 200 and preflight.headers["access-control-allow-origin"] == UI
    assert plain.get("/v1/chat/completions", headers={"authorization": keys["chat"]}).status_code == 405
    slashed = plain.post(
        "/v1/chat/completions/", json=CHAT, headers={"authorization": keys["chat"]}, follow_redirects=False
    )
    assert slashed.status_code == 307  # FastAPI's redirect to the route without the slash
    assert served == []


def test_the_hot_routes_are_fastapis_own_and_in_the_schema(services: Services) -> None:
    app = create_app(services.settings, services)
    hot = fast.hot_routes(app)
    assert set(hot) == set(fast.HOT)
    routes = {(m, p): r for m, p, r in auth.api_routes(app.routes)}
    for (method, path), route in hot.items():
        fastapi_route = routes[(method, path)]
        assert isinstance(fastapi_route, APIRoute) and route.endpoint is fastapi_route.endpoint
        assert route.rule == auth.RULES[(method, path)] == "chat"
    schema = TestClient(app).get("/openapi.json").json()
    for method, path in fast.HOT:
        assert method.lower() in schema["paths"][path]
    with pytest.raises(RuntimeError, match="no route GET /nowhere"):
        fast.hot_routes(app, (("GET", "/nowhere"),))
