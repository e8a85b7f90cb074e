"""RedisStore on a server with vector search (RediSearch loaded into Valkey): ``FT.SEARCH`` KNN shared by
stores, filtered by scope, entries leaving the index with their TTL; and the local-index fallback."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Iterator
from typing import Any

import numpy as np
import pytest
import redis
from servers import ValkeyServer

from groupqwen.cache.index import Vectors
from groupqwen.cache.redis_store import RedisStore
from groupqwen.cache.stores import Answer, CacheEntry, Invalidation
from groupqwen.testing import FakeClock

from .helpers import redis_store

DIM = 8
PREFIX = "groupqwen:cache:"


@pytest.fixture(scope="module")
def search_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ValkeyServer]:
    server = ValkeyServer(tmp_path_factory.mktemp("valkey-search"), search=True)
    server.start()
    yield server
    server.stop()


@pytest.fixture
def search_url(search_server: ValkeyServer) -> str:
    client = redis.Redis.from_url(search_server.url)
    client.flushall()
    client.close()
    return search_server.url


@pytest.fixture
async def stores(search_url: str) -> AsyncIterator[list[RedisStore]]:
    made = [redis_store(search_url, DIM, timeout_s=5.0) for _ in range(2)]
    yield made
    for store in made:
        await store.close()


def unit(*values: float) -> Vectors:
    vec = np.zeros(DIM, dtype=np.float32)
    vec[: len(values)] = values
    return (vec / np.linalg.norm(vec)).astype(np.float32)


def entry(scope: str, name: str, vector: Vectors, ttl_s: float | None = None) -> CacheEntry:
    now = time.time()
    return CacheEntry(
        key=f"{scope}:{name}",
        scope=scope,
        model="m",
        text=name,
        vector=vector,
        answer=Answer(f"answer {name}", "", "stop", 1, 2),
        created=now,
        expires=now + ttl_s if ttl_s is not None else None,
    )


def server_indexes(url: str) -> set[str]:
    client = redis.Redis.from_url(url)
    try:
        return {name.decode() for name in client.execute_command("FT._LIST")}
    finally:
        client.close()


def events_exist(url: str) -> bool:
    client = redis.Redis.from_url(url)
    try:
        return bool(client.exists(f"{PREFIX}events"))
    finally:
        client.close()


async def test_two_stores_see_each_others_entries_through_ft_search(
    stores: list[RedisStore], search_url: str
) -> None:
    a, b = stores
    await a.put(entry("s", "x", unit(1, 0)))
    await a.put(entry("s", "y", unit(1, 1)))
    await b.put(entry("s", "z", unit(0, 1)))
    found = await b.search("s", unit(1, 0.1), 3)
    assert [e.key for e, _ in found] == ["s:x", "s:y", "s:z"]  # best first
    assert found[0][1] == pytest.approx(float(unit(1, 0) @ unit(1, 0.1)), abs=1e-5)
    assert found[0][0].answer.content == "answer x" and found[0][0].vector.shape == (DIM,)
    assert [e.key for e, _ in await a.search("s", unit(0, 1), 1)] == ["s:z"]
    # the server found them: neither store keeps a local index nor writes the event stream
    assert a.vector_search is True and b.vector_search is True
    assert len(a._local.index) == 0 and len(b._local.index) == 0 and not events_exist(search_url)
    assert server_indexes(search_url) == {f"{PREFIX}idx:{DIM}"}
    assert (await b.stats()).entries == 3


async def test_deletions_leave_the_index_for_every_store(stores: list[RedisStore]) -> None:
    a, b = stores
    await a.put(entry("s", "x", unit(1, 0)))
    await a.put(entry("s", "y", unit(1, 1)))
    await a.put(entry("s", "z", unit(1, 2)))
    assert len(await b.search("s", unit(1, 0), 4)) == 3
    assert await b.invalidate(Invalidation(pattern="x")) == 1
    assert [e.key for e, _ in await a.search("s", unit(1, 0), 4)] == ["s:y", "s:z"]
    assert await b.clear() == 2
    assert await a.search("s", unit(1, 0), 4) == []
    assert (await a.stats()).entries == 0


async def test_search_never_crosses_scopes(stores: list[RedisStore]) -> None:
    a, b = stores
    scopes = ["0f3a9c", "0F3A9C", "0f3a9c:x", "0f3a", "a b", "a-b", "a.b@c", "{a}", "a|b", "*"]
    for scope in scopes:
        await a.put(entry(scope, "q", unit(1, 0)))
    for i in range(40):  # a crowd closer to the query in another scope must not push the own entry out
        await a.put(entry("crowd", f"c{i}", unit(1, 0.001 * i)))
    await a.put(entry("mine", "far", unit(0, 1)))
    for scope in scopes:
        found = await b.search(scope, unit(1, 0), 4)
        assert [e.key for e, _ in found] == [f"{scope}:q"], scope
    found = await b.search("mine", unit(1, 0), 4)
    assert [e.key for e, _ in found] == ["mine:far"] and found[0][1] == pytest.approx(0.0, abs=1e-5)
    assert await b.search("nobody", unit(1, 0), 4) == []


async def test_entries_leave_the_index_when_their_ttl_ends(stores: list[RedisStore], search_url: str) -> None:
    """The server drops an expired entry from its index: the searching store's own clock stands still, so
    only the server can make the entry go."""
    a, _ = stores
    b = redis_store(search_url, DIM, timeout_s=5.0, clock=FakeClock(wall=time.time()))
    try:
        await a.put(entry("s", "brief", unit(1, 0), ttl_s=0.3))
        await a.put(entry("s", "kept", unit(0, 1)))
        assert [e.key for e, _ in await b.search("s", unit(1, 0), 1)] == ["s:brief"]
        deadline = time.monotonic() + 10  # Redis expires it 0.3 s after the write: wait for that, generously
        while (found := [e.key for e, _ in await b.search("s", unit(1, 0), 4)]) != ["s:kept"]:
            assert time.monotonic() < deadline, found
            await asyncio.sleep(0.02)
        assert await b.get("s:brief") is None
        assert (await b.stats()).entries == 1
    finally:
        await b.close()


async def test_a_vanished_index_is_created_again(stores: list[RedisStore], search_url: str) -> None:
    a, b = stores
    await a.put(entry("s", "x", unit(1, 0)))
    assert len(await b.search("s", unit(1, 0), 1)) == 1
    client = redis.Redis.from_url(search_url)
    client.flushall()  # drops the index too
    client.close()
    assert await b.search("s", unit(1, 0), 1) == []  # a miss, not an outage
    assert b.failures == 0 and not b.degraded
    await a.put(entry("s", "y", unit(1, 0)))
    assert [e.key for e, _ in await b.search("s", unit(1, 0), 1)] == ["s:y"]


async def test_an_outage_then_the_index_is_back(search_server: ValkeyServer, search_url: str) -> None:
    clock = FakeClock(wall=time.time())
    store = redis_store(search_url, DIM, timeout_s=5.0, retry_after_s=1.0, clock=clock)
    await store.put(entry("s", "x", unit(1, 0)))
    search_server.stop()
    try:
        with pytest.raises(Exception, match="unavailable"):
            await store.search("s", unit(1, 0), 1)
        assert store.vector_search is None  # probed again once the server is back
        assert store.degraded
    finally:
        search_server.start()  # empty: no entries, no index
    clock.advance(1.0)  # retry_after_s has passed: the store tries Redis again
    assert not store.degraded
    assert await store.search("s", unit(1, 0), 1) == []
    await store.put(entry("s", "y", unit(1, 0)))
    assert [e.key for e, _ in await store.search("s", unit(1, 0), 1)] == ["s:y"]
    assert store.vector_search is True
    await store.close()


async def test_an_index_per_dimension(stores: list[RedisStore], search_url: str) -> None:
    a, _ = stores
    wide = redis_store(search_url, 2 * DIM, timeout_s=5.0)
    try:
        await a.put(entry("s", "narrow", unit(1, 0)))
        vec = np.zeros(2 * DIM, dtype=np.float32)
        vec[0] = 1
        await wide.put(entry("s", "wide", vec))
        assert [e.key for e, _ in await wide.search("s", vec, 4)] == ["s:wide"]
        assert [e.key for e, _ in await a.search("s", unit(1, 0), 4)] == ["s:narrow"]
        assert server_indexes(search_url) == {f"{PREFIX}idx:{DIM}", f"{PREFIX}idx:{2 * DIM}"}
    finally:
        await wide.close()


async def test_without_the_module_the_local_index_is_used(redis_url: str) -> None:
    """The fallback: a plain server (no FT.* commands) → each store's local index, kept in sync by events."""
    a, b = redis_store(redis_url, DIM, timeout_s=5.0), redis_store(redis_url, DIM, timeout_s=5.0)
    await b.sync()
    await a.put(entry("s", "x", unit(1, 0)))
    assert [e.key for e, _ in await b.search("s", unit(1, 0), 1)] == ["s:x"]
    assert a.vector_search is False and b.vector_search is False
    assert len(b._local.index) == 1 and events_exist(redis_url)
    await a.close()
    await b.close()


async def test_vector_search_can_be_turned_off(search_url: str) -> None:
    a = redis_store(search_url, DIM, timeout_s=5.0, vector_search=False)
    b = redis_store(search_url, DIM, timeout_s=5.0, vector_search=False)
    await b.sync()
    await a.put(entry("s", "x", unit(1, 0)))
    assert [e.key for e, _ in await b.search("s", unit(1, 0), 1)] == ["s:x"]
    assert a.vector_search is False and server_indexes(search_url) == set() and events_exist(search_url)
    await a.close()
    await b.close()


@pytest.mark.parametrize("protocol", [2, 3])
async def test_replies_in_either_protocol(search_url: str, protocol: int) -> None:
    """FT.SEARCH and FT.INFO answer a flat array in RESP2 and a map in RESP3: both are read."""
    store = redis_store(f"{search_url}?protocol={protocol}", DIM, timeout_s=5.0)
    try:
        await store.put(entry("s", "x", unit(1, 0)))
        await store.put(entry("s", "y", unit(0, 1)))
        found = await store.search("s", unit(1, 0.2), 2)
        assert [e.key for e, _ in found] == ["s:x", "s:y"] and found[0][0].text == "x"
        assert (await store.stats()).entries == 2
    finally:
        await store.close()


@pytest.mark.parametrize("vector_search", [True, False])
async def test_clear_deletes_a_large_cache_in_bounded_batches(search_url: str, vector_search: bool) -> None:
    """More entries than one delete batch: every one goes, in batches, each its own bounded call. The
    timeouts are generous: filling the cache on a busy machine must not fail the test."""
    store = redis_store(search_url, DIM, timeout_s=30.0, vector_search=vector_search)
    calls = []
    call = store._call

    async def counted(make: Any, timeout_s: float | None = None) -> Any:
        calls.append(timeout_s)
        return await call(make, timeout_s)

    try:
        rng = np.random.default_rng(7)
        rows = rng.standard_normal((2500, DIM)).astype(np.float32)
        for start in range(0, len(rows), 100):
            batch = rows[start : start + 100]
            await asyncio.gather(
                *(store.put(entry("s", f"n{start + i}", unit(*r))) for i, r in enumerate(batch))
            )
        assert (await store.stats()).entries == 2500
        store._call = counted  # type: ignore[method-assign]
        assert await store.clear() == 2500
        assert len(calls) == 1 + 3  # one scan, then three batches of at most 1,000 deletions
        store._call = call  # type: ignore[method-assign]
        assert (await store.stats()).entries == 0
        assert await store.search("s", unit(*rows[0]), 4) == []
    finally:
        await store.close()
