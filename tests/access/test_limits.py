"""Rate limits through the gateway: 429s with ``Retry-After`` and OpenAI's ``x-ratelimit-*`` headers, the
headers on answers too, tokens reserved then settled with the real usage, concurrent requests, keys and
tenants (a ``Principal`` on ``request.state``), requests without a key. The clock is a ``FakeClock``."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi.testclient import TestClient

from groupqwen.access.principal import Limits
from groupqwen.api.app import create_app
from groupqwen.api.services import Services
from groupqwen.backends.fake import FakeBackend
from groupqwen.messages import Chunk, GenerationRequest
from groupqwen.testing import FakeClock, fake_services, fake_settings, gateway

CHAT = {"model": "fake", "messages": [{"role": "user", "content": "hi"}]}
LIMIT_HEADERS = ("limit", "remaining", "reset")


def services_with(tmp_path: Path, clock: FakeClock, backend: Any = None, **limits: Any) -> Services:
    return fake_services(fake_settings(tmp_path, limits=limits), backend, clock=clock)


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def limited(tmp_path: Path, clock: FakeClock) -> Iterator[TestClient]:
    """Requests without a key limited to 3 a minute and 100 tokens a minute."""
    limits = {"anonymous": True, "key": {"requests_per_minute": 3, "tokens_per_minute": 100}}
    with gateway(services_with(tmp_path, clock, **limits)) as client:
        yield client


def test_the_fourth_request_in_a_minute_is_a_429_with_the_headers_openai_sends(
    limited: TestClient, clock: FakeClock
) -> None:
    remaining = []
    for _ in range(3):
        response = limited.post("/v1/chat/completions", json=CHAT)
        assert response.status_code == 200, response.text
        remaining.append(response.headers["x-ratelimit-remaining-requests"])
        assert response.headers["x-ratelimit-limit-requests"] == "3"
        assert response.headers["x-ratelimit-limit-tokens"] == "100"
    assert remaining == ["2", "1", "0"]
    assert response.headers["x-ratelimit-reset-requests"] == "1m0s"  # until the bucket is full again
    refused = limited.post("/v1/chat/completions", json=CHAT)
    assert refused.status_code == 429, refused.text
    error = refused.json()["error"]
    assert (error["type"], error["code"]) == ("requests", "rate_limit_exceeded")
    assert error["message"] == (
        "Rate limit reached for requests per minute (RPM) of requests without a key: limit 3, used 3, "
        "requested 1. Please try again in 20s."
    )
    assert refused.headers["retry-after"] == "20" and refused.headers["retry-after-ms"] == "20000"
    assert refused.headers["x-ratelimit-remaining-requests"] == "0"
    assert all(f"x-ratelimit-{h}-tokens" in refused.headers for h in LIMIT_HEADERS)
    clock.advance(19.9)
    assert limited.post("/v1/chat/completions", json=CHAT).status_code == 429
    clock.advance(0.1)
    assert limited.post("/v1/chat/completions", json=CHAT).status_code == 200


def test_streams_carry_the_headers_and_are_counted(limited: TestClient) -> None:
    with limited.stream("POST", "/v1/chat/completions", json={**CHAT, "stream": True}) as response:
        assert response.status_code == 200
        assert response.headers["x-ratelimit-remaining-requests"] == "2"
        assert "[DONE]" in response.read().decode()


def test_tokens_are_reserved_up_front_and_settled_with_the_real_usage(
    limited: TestClient, clock: FakeClock
) -> None:
    """``max_tokens`` 90 reserves ~91 of the 100 tokens; the fake answers 4 tokens (prompt 5): the next
    request sees what the first really used."""
    first = limited.post("/v1/chat/completions", json={**CHAT, "max_tokens": 90})
    assert first.status_code == 200
    assert int(first.headers["x-ratelimit-remaining-tokens"]) < 10  # the reservation
    used = first.json()["usage"]["total_tokens"]
    second = limited.post("/v1/chat/completions", json=CHAT)
    assert second.status_code == 200
    estimate = 1 + 4  # "hi" at 4 characters a token, 4 for its message
    assert int(second.headers["x-ratelimit-remaining-tokens"]) == 100 - used - estimate
    third = limited.post("/v1/chat/completions", json={**CHAT, "max_tokens": 95})
    assert third.status_code == 429
    assert third.json()["error"]["type"] == "tokens"
    assert "tokens per minute (TPM)" in third.json()["error"]["message"]


def test_a_request_larger_than_the_bucket_takes_a_full_one(limited: TestClient) -> None:
    """It could never fit: with a full bucket it takes the whole of it instead of waiting forever, then
    settles with its real usage like any other."""
    first = limited.post("/v1/chat/completions", json={**CHAT, "max_tokens": 500})
    assert first.status_code == 200 and first.headers["x-ratelimit-remaining-tokens"] == "0"
    second = limited.post("/v1/chat/completions", json=CHAT)
    assert second.status_code == 200
    assert (
        int(second.headers["x-ratelimit-remaining-tokens"]) == 100 - first.json()["usage"]["total_tokens"] - 5
    )


def test_requests_without_a_key_are_not_limited_by_default(tmp_path: Path, clock: FakeClock) -> None:
    limits = {"key": {"requests_per_minute": 1}}
    with gateway(services_with(tmp_path, clock, **limits)) as client:
        for _ in range(3):
            response = client.post("/v1/chat/completions", json=CHAT)
            assert response.status_code == 200
            assert not any(h.startswith("x-ratelimit-") for h in response.headers)


def test_keys_have_their_own_buckets_and_a_tenant_shares_one(tmp_path: Path, clock: FakeClock) -> None:
    """Real keys (``auth: keys``): each key its own bucket, a tenant's keys one more together, a key's own
    limits over the default."""
    limits = {"key": {"requests_per_minute": 2}, "tenants": {"acme": {"requests_per_minute": 3}}}
    services = fake_services(fake_settings(tmp_path, auth={"mode": "keys"}, limits=limits), clock=clock)
    store = services.access.store
    assert store is not None
    now = clock.time()
    _, a = store.create("a", now=now, tenant="acme")
    _, b = store.create("b", now=now, tenant="acme")
    _, vip = store.create("vip", now=now, tenant="solo", limits=Limits(requests_per_minute=5))
    with gateway(services) as client:

        def post(key: str) -> Any:
            return client.post("/v1/chat/completions", json=CHAT, headers={"authorization": f"Bearer {key}"})

        assert [post(a).status_code for _ in range(3)] == [200, 200, 429]  # the key's 2
        third = post(b)
        assert third.status_code == 200  # b's own bucket; acme's 3rd
        assert third.headers["x-ratelimit-remaining-requests"] == "0"  # the tighter: acme's
        refused = post(b)
        assert refused.status_code == 429
        assert "of tenant 'acme': limit 3" in refused.json()["error"]["message"]
        assert [post(vip).status_code for _ in range(6)] == [200] * 5 + [429]  # its own limit wins


class GatedBackend(FakeBackend):
    """Waits for ``gate`` before it answers."""

    def __init__(self) -> None:
        super().__init__(model_id="fake")
        self.gate = asyncio.Event()
        self.waiting = asyncio.Event()

    async def stream(self, request: GenerationRequest) -> AsyncGenerator[Chunk, None]:
        self.waiting.set()
        await self.gate.wait()
        async for chunk in super().stream(request):
            yield chunk


async def test_concurrent_requests_beyond_the_limit_are_429_until_one_ends(
    tmp_path: Path, clock: FakeClock
) -> None:
    backend = GatedBackend()
    limits = {"anonymous": True, "key": {"concurrent_requests": 1}}
    services = services_with(tmp_path, clock, backend, **limits)
    transport = httpx.ASGITransport(app=create_app(services.settings, services))
    async with httpx.AsyncClient(transport=transport, base_url="http://gateway") as client:
        first = asyncio.create_task(client.post("/v1/chat/completions", json=CHAT))
        await backend.waiting.wait()
        refused = await client.post("/v1/chat/completions", json=CHAT)
        assert refused.status_code == 429, refused.text
        assert refused.headers["retry-after"] == "1"
        assert "Too many concurrent requests for requests without a key: limit 1" in refused.text
        backend.gate.set()
        assert (await first).status_code == 200
        assert (await client.post("/v1/chat/completions", json=CHAT)).status_code == 200
        # a request that fails frees its slot too
        bad = await client.post("/v1/chat/completions", json={**CHAT, "max_tokens": 10_000})
        assert bad.status_code == 400
        assert (await client.post("/v1/chat/completions", json=CHAT)).status_code == 200


def test_embeddings_are_limited_and_settled_with_their_usage(tmp_path: Path, clock: FakeClock) -> None:
    from groupqwen.cache.embedders import HashingEmbedder

    limits = {"anonymous": True, "key": {"requests_per_minute": 2, "tokens_per_minute": 1000}}
    services = fake_services(fake_settings(tmp_path, limits=limits), clock=clock, embedder=HashingEmbedder())
    with gateway(services) as client:
        body = {"model": "hashing", "input": ["one two three", "four"]}
        first = client.post("/v1/embeddings", json=body)
        assert first.status_code == 200, first.text
        assert first.headers["x-ratelimit-remaining-requests"] == "1"
        assert client.post("/v1/embeddings", json=body).status_code == 200
        assert client.post("/v1/embeddings", json=body).status_code == 429


@pytest.mark.parametrize(
    ("url", "body"),
    [
        ("/v1/chat/completions", CHAT),
        ("/v1/completions", {"model": "fake", "prompt": "Once upon a time"}),
        ("/v1/responses", {"model": "fake", "input": "hi", "store": False}),
    ],
)
@pytest.mark.parametrize("stream", [False, True])
def test_every_generating_route_is_limited(
    tmp_path: Path, clock: FakeClock, url: str, body: dict[str, Any], stream: bool
) -> None:
    limits = {"anonymous": True, "key": {"requests_per_minute": 1, "tokens_per_minute": 1000}}
    with gateway(services_with(tmp_path, clock, **limits)) as client:
        first = client.post(url, json={**body, "stream": stream})
        assert first.status_code == 200, first.text
        assert first.headers["x-ratelimit-remaining-requests"] == "0"
        refused = client.post(url, json={**body, "stream": stream})
        assert refused.status_code == 429 and refused.headers["retry-after"] == "60"
        clock.advance(60)
        assert client.post(url, json={**body, "stream": stream}).status_code == 200


def test_websocket_generations_take_the_same_limits(limited: TestClient) -> None:
    """A ``chat.create`` over /v1/ws takes from the same buckets as HTTP: the fourth answer in a minute is a
    429 ``error`` frame for that id, and the socket goes on."""
    assert limited.post("/v1/chat/completions", json=CHAT).status_code == 200
    with limited.websocket_connect("/v1/ws") as ws:
        assert ws.receive_json()["type"] == "hello"
        ends = {}
        for gid in ("a", "b", "c"):
            ws.send_json({"type": "chat.create", "id": gid, "body": CHAT})
            while (frame := ws.receive_json())["type"] not in ("done", "error"):
                pass
            ends[gid] = frame
        assert [ends[g]["type"] for g in ("a", "b")] == ["done", "done"]
        refused = ends["c"]
        assert (refused["type"], refused["id"], refused["status"]) == ("error", "c", 429)
        assert refused["error"]["code"] == "rate_limit_exceeded"
        ws.send_json({"type": "ping", "data": "still open"})
        assert ws.receive_json() == {"type": "pong", "data": "still open"}
