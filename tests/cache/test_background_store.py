"""A miss's answer is written in the background: the response does not wait for the store, the same
process reads its own writes back at once, failures are counted and logged, and close, clear and
invalidate let the writes in flight land first (or cancel those that outlast the drain)."""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import AsyncIterator, Iterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import replace
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi.testclient import TestClient
from waiting import until

from groupqwen.backends.fake import FakeBackend
from groupqwen.cache.embedders import Embedder, MiniLMEmbedder, Vectors
from groupqwen.cache.semantic import SemanticCache
from groupqwen.cache.stores import CacheEntry, EmbeddedStore, Invalidation
from groupqwen.errors import CacheUnavailable
from groupqwen.messages import Delta
from groupqwen.orchestrator.answer import RequestContext
from groupqwen.orchestrator.pipeline import Pipeline
from groupqwen.testing import fake_services, fake_settings

from .helpers import DEFAULTS, embedded_store, policy
from .test_gateway import chat, gateway_app, sse
from .test_semantic import answer, ask

REPLY = "The Nile is the longest river."


class GatedStore(EmbeddedStore):
    """An embedded store whose ``put`` waits for ``gate`` (an asyncio event of the test's loop)."""

    def __init__(self, dim: int, path: Path | None = None) -> None:
        super().__init__(path, dim, max_entries=DEFAULTS.max_entries)
        self.gate = asyncio.Event()
        self.entered = 0
        self.landed = 0

    async def put(self, entry: CacheEntry) -> None:
        self.entered += 1
        await self.gate.wait()
        await super().put(entry)
        self.landed += 1


async def turns(n: int = 20) -> None:
    """Let the event loop run other tasks ``n`` times (what is blocked on the gate stays blocked)."""
    for _ in range(n):
        await asyncio.sleep(0)


class Signalling:
    """The real embedder, telling (``embedded``) when an embedding has been computed."""

    def __init__(self, inner: MiniLMEmbedder) -> None:
        self.inner, self.name, self.dim = inner, inner.name, inner.dim
        self.embedded = threading.Event()

    def embed(self, texts: Sequence[str]) -> Vectors:
        out = self.inner.embed(texts)
        self.embedded.set()
        return out

    def count_tokens(self, texts: Sequence[str]) -> int | None:
        return self.inner.count_tokens(texts)

    def close(self) -> None:
        self.inner.close()


def cache_over(store: EmbeddedStore, embedder: Embedder, timeout_s: float = 30.0) -> SemanticCache:
    return SemanticCache(store, embedder, policy(timeout_s=timeout_s))


@asynccontextmanager
async def pipeline(tmp_path: Path, cache: SemanticCache) -> AsyncIterator[Pipeline]:
    backend = FakeBackend(model_id="fake", tokens=[f"{w} " for w in REPLY.split()])
    settings = fake_settings(tmp_path, data_dir=tmp_path)
    services = fake_services(settings, backend, cache=cache)
    try:
        yield services.pipeline
    finally:
        await services.pool.close()


@pytest.mark.parametrize("streamed", [False, True], ids=["complete", "stream"])
async def test_a_miss_completes_while_its_store_is_blocked_and_is_read_back(
    tmp_path: Path, minilm: MiniLMEmbedder, streamed: bool
) -> None:
    store = GatedStore(minilm.dim)
    embedder = Signalling(minilm)
    cache = cache_over(store, embedder)
    async with pipeline(tmp_path, cache) as pipe:
        request = replace(ask("Which is the longest river in the world?"), model="fake")
        answered = await pipe.run(request, RequestContext(tenant="t"))
        cached = answered.cache
        assert cached is not None and cached.status == "miss"
        if streamed:
            deltas: list[Delta] = [d async for d in answered]
            assert deltas[-1].finish_reason == "stop" and deltas[-1].usage is not None
            content = "".join(d.content for d in deltas)
        else:
            content = (await answered.collect()).content
        assert content == REPLY + " "
        # the answer is out; its write (which embeds the question: the lookup skipped that, its scope
        # being empty) is still waiting for the store
        await until(lambda: store.entered == 1)
        assert store.landed == 0
        assert await store.get(cached.key.entry_key) is None  # type: ignore[union-attr]

        # the same process reads its own write: the exact layer waits for the write to its key ...
        same = ask("which is the longest river in the world?")
        exact = asyncio.create_task(cache.lookup(same, "t", "fake"))
        await turns()
        assert not exact.done()
        # ... and the semantic layer, once it has its embedding, for the writes to its scope
        embedder.embedded.clear()
        near = asyncio.create_task(cache.lookup(ask("What is the world's longest river?"), "t", "fake"))
        assert await asyncio.to_thread(embedder.embedded.wait, 10)
        await turns()
        assert not near.done()
        # another scope has nothing of its own in flight: its lookup does not wait
        elsewhere = await cache.lookup(ask("What is the world's longest river?"), "other-tenant", "fake")
        assert elsewhere.status == "miss" and not near.done()
        store.gate.set()
        hit, similar = await exact, await near
        assert hit.status == "hit" and hit.reason == "exact match"
        assert hit.completion().content == REPLY + " "
        assert similar.status == "hit" and similar.reason == "semantic match"
        stats = await cache.stats()
        assert (stats.stores, stats.entries, stats.errors) == (1, 1, 0)
    await cache.close()


async def test_nothing_in_flight_means_no_waiting(minilm: MiniLMEmbedder) -> None:
    """With no write in flight a lookup goes straight to the store; a finished write is forgotten."""
    store = GatedStore(minilm.dim)
    store.gate.set()
    cache = cache_over(store, minilm)
    lookup = await cache.lookup(ask("How high is Mount Kilimanjaro?"), "t", "m")
    write = cache.store(lookup, "m", answer("5,895 m"), None)
    assert write is not None
    await write
    await turns(2)
    assert not cache._writes.tasks and not cache._writes.by_key and not cache._writes.by_scope
    assert (await cache.lookup(ask("How high is Mount Kilimanjaro?"), "t", "m")).status == "hit"
    await cache.close()


class FailingStore(EmbeddedStore):
    def __init__(self, dim: int, error: Exception) -> None:
        super().__init__(None, dim, max_entries=DEFAULTS.max_entries)
        self.error = error

    async def put(self, entry: CacheEntry) -> None:
        raise self.error


@pytest.mark.parametrize(
    ("error", "level"),
    [(CacheUnavailable("down"), logging.WARNING), (RuntimeError("a bug in a store"), logging.ERROR)],
    ids=["unavailable", "unexpected"],
)
async def test_a_failing_background_store_is_counted_and_logged_never_raised(
    minilm: MiniLMEmbedder, caplog: pytest.LogCaptureFixture, error: Exception, level: int
) -> None:
    cache = cache_over(FailingStore(minilm.dim, error), minilm)
    lookup = await cache.lookup(ask("What is the boiling point of water?"), "t", "m")
    assert lookup.status == "miss" and cache.health() == "ok"
    with caplog.at_level(logging.WARNING, logger="groupqwen.cache.semantic"):
        write = cache.store(lookup, "m", answer("100 °C at sea level"), None)
        assert write is not None
        await write  # the task itself ends normally: the failure is not raised to anyone
    assert write.exception() is None
    failed = [r for r in caplog.records if r.getMessage() == "cache store failed"]
    assert len(failed) == 1 and failed[0].levelno == level
    assert failed[0].kv["error"] == type(error).__name__  # type: ignore[attr-defined]
    assert "100 °C" not in caplog.text  # never the answer's text
    stats = await cache.stats()
    assert (stats.errors, stats.stores, stats.status) == (1, 0, "degraded")
    assert (await cache.lookup(ask("What is the boiling point of water?"), "t", "m")).status == "miss"
    await cache.close()


async def test_a_slow_background_store_times_out(minilm: MiniLMEmbedder) -> None:
    """The policy's ``timeout_s`` still bounds a write; a timed-out write is counted (slow, not a failure:
    the cache stays ``ok``), and a lookup waiting for it goes on to the store (a miss)."""
    store = GatedStore(minilm.dim)  # never opened
    cache = cache_over(store, minilm, timeout_s=0.2)
    lookup = await cache.lookup(ask("Who wrote Don Quixote?"), "t", "m")
    cache.store(lookup, "m", answer("Cervantes"), None)
    assert await cache.drain()
    store.gate.set()
    await turns()
    assert store.entered == 1 and store.landed == 0  # cancelled by the timeout: it never lands
    stats = await cache.stats()
    assert (stats.errors, stats.stores, stats.status) == (1, 0, "ok")
    await cache.close()


async def test_close_drains_the_writes_in_flight(minilm: MiniLMEmbedder, tmp_path: Path) -> None:
    path = tmp_path / "cache.sqlite"
    store = GatedStore(minilm.dim, path)
    cache = cache_over(store, minilm)
    lookup = await cache.lookup(ask("What is the capital of Australia?"), "t", "m")
    cache.store(lookup, "m", answer("Canberra"), None)
    closing = asyncio.create_task(cache.close())
    await turns()
    assert not closing.done()  # waiting for the write, the store still open
    store.gate.set()
    await closing
    assert store.landed == 1
    reopened = cache_over(embedded_store(minilm.dim, path), minilm)  # the answer survived the shutdown
    hit = await reopened.lookup(ask("What is the capital of Australia?"), "t", "m")
    assert hit.status == "hit" and hit.completion().content == "Canberra"
    await reopened.close()


async def test_a_drain_that_outlasts_its_bound_is_logged_and_cancels(
    minilm: MiniLMEmbedder, caplog: pytest.LogCaptureFixture
) -> None:
    store = GatedStore(minilm.dim)
    cache = cache_over(store, minilm)
    lookup = await cache.lookup(ask("How many moons does Mars have?"), "t", "m")
    write = cache.store(lookup, "m", answer("two"), None)
    assert write is not None
    with caplog.at_level(logging.WARNING, logger="groupqwen.cache.semantic"):
        assert not await cache.drain(0.05)  # without cancel the write goes on
        assert not write.done()
        assert not await cache.drain(0.05, cancel=True)
    assert write.cancelled()
    late = [r for r in caplog.records if r.getMessage() == "cache writes outlasted the drain"]
    assert len(late) == 2 and late[0].kv["writes"] == 1  # type: ignore[attr-defined]
    store.gate.set()
    await turns()
    assert store.landed == 0
    stats = await cache.stats()
    assert (stats.errors, stats.stores, stats.entries) == (1, 0, 0)
    assert (await cache.lookup(ask("How many moons does Mars have?"), "t", "m")).status == "miss"
    await cache.close()


@pytest.mark.parametrize("how", ["clear", "invalidate"])
async def test_clear_and_invalidate_never_race_a_write_in_flight(minilm: MiniLMEmbedder, how: str) -> None:
    """A write scheduled before ``DELETE /v1/cache`` (or an invalidation) lands first and is dropped with
    the rest: it never brings its entry back after the clear."""
    store = GatedStore(minilm.dim)
    cache = cache_over(store, minilm)
    lookup = await cache.lookup(ask("What is the climate like in Lima?"), "t", "m")
    cache.store(lookup, "m", answer("mild"), None)
    dropping = asyncio.create_task(
        cache.clear() if how == "clear" else cache.invalidate(Invalidation(pattern="*climate*"))
    )
    await turns()
    assert not dropping.done()  # waits for the write in flight
    store.gate.set()
    assert await dropping == 1
    await turns()
    assert (await cache.lookup(ask("What is the climate like in Lima?"), "t", "m")).status == "miss"
    assert (await cache.stats()).entries == 0
    await cache.close()


async def test_writes_to_one_key_land_in_the_order_scheduled(minilm: MiniLMEmbedder) -> None:
    store = GatedStore(minilm.dim)
    cache = cache_over(store, minilm)
    lookup = await cache.lookup(ask("Name a primary colour."), "t", "m")
    first = cache.store(lookup, "m", answer("red"), None)
    second = cache.store(lookup, "m", answer("blue"), None)
    assert first is not None and second is not None
    await until(lambda: store.entered == 1)  # the first embeds (its scope was empty), then reaches the store
    await asyncio.sleep(0.05)
    assert store.entered == 1  # the second waits for the first
    store.gate.set()
    await second
    assert first.done() and store.landed == 2
    hit = await cache.lookup(ask("Name a primary colour."), "t", "m")
    assert hit.completion().content == "blue"
    await cache.close()


# -- the gateway ---------------------------------------------------------------------------------------


class ThreadGatedStore(EmbeddedStore):
    """``put`` waits for a ``threading.Event``: the test's thread opens it, the app's loop waits."""

    def __init__(self, dim: int) -> None:
        super().__init__(None, dim, max_entries=DEFAULTS.max_entries)
        self.gate = threading.Event()
        self.landed = 0

    async def put(self, entry: CacheEntry) -> None:
        await asyncio.to_thread(self.gate.wait)
        await super().put(entry)
        self.landed += 1


@pytest.fixture
def blocked(tmp_path: Path, minilm: MiniLMEmbedder) -> Iterator[tuple[TestClient, ThreadGatedStore]]:
    store = ThreadGatedStore(minilm.dim)
    app, _ = gateway_app(tmp_path, cache_over(store, minilm), REPLY)
    with TestClient(app) as client:
        try:
            yield client, store
        finally:
            store.gate.set()  # the lifespan's close drains the writes


def test_the_gateway_answers_a_miss_before_its_store_lands(
    blocked: tuple[TestClient, ThreadGatedStore],
) -> None:
    client, store = blocked
    plain = chat(client, "Which river is the longest?")
    assert plain.status_code == 200 and plain.headers["x-groupqwen-cache"] == "miss"
    assert plain.json()["choices"][0]["message"]["content"] == REPLY + " "
    # another tenant: another scope, whose semantic layer has no write of its own to wait for
    streamed = chat(client, "Which mountain is the highest?", key="k2", stream=True)
    assert streamed.status_code == 200 and streamed.headers["x-groupqwen-cache"] == "miss"
    chunks: list[dict[str, Any]] = sse(streamed)
    assert "".join(c["choices"][0]["delta"].get("content", "") for c in chunks) == REPLY + " "
    assert store.landed == 0  # both answers went out; neither write has reached the store
    store.gate.set()
    assert chat(client, "which river is the longest?").headers["x-groupqwen-cache"] == "hit"
    assert chat(client, "which mountain is the highest?", key="k2").headers["x-groupqwen-cache"] == "hit"
    stats = client.get("/v1/cache/stats").json()
    assert (stats["stores"], stats["entries"], stats["errors"]) == (2, 2, 0)


class Recording(EmbeddedStore):
    def __init__(self, dim: int, events: list[str]) -> None:
        super().__init__(None, dim, max_entries=DEFAULTS.max_entries)
        self.events = events

    async def put(self, entry: CacheEntry) -> None:
        self.events.append("put")
        await super().put(entry)


async def test_the_answer_is_sent_before_the_write_starts(tmp_path: Path, minilm: MiniLMEmbedder) -> None:
    """In one event loop, the end of a miss's response (JSON or SSE) is handed to the server before the
    write's first step runs: an embedded store's SQLite write, or the building of a Redis pipeline, costs
    the response nothing."""
    events: list[str] = []
    cache = cache_over(Recording(minilm.dim, events), minilm)
    app, _ = gateway_app(tmp_path, cache, REPLY)

    async def server(scope: Any, receive: Any, send: Any) -> None:
        async def sending(message: Any) -> None:
            if message["type"] == "http.response.body" and not message.get("more_body", False):
                events.append("sent")
            await send(message)

        await app(scope, receive, sending)

    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=server)
        async with httpx.AsyncClient(transport=transport, base_url="http://gateway") as client:
            for i, stream in enumerate([False, True, False, True]):
                body = {
                    "model": "fake",
                    "temperature": 0,
                    "stream": stream,
                    "messages": [{"role": "user", "content": f"Question {i}: which river is the longest?"}],
                }
                response = await client.post("/v1/chat/completions", json=body)
                assert response.headers["x-groupqwen-cache"] == "miss"
                await cache.drain()
    assert events == ["sent", "put"] * 4
