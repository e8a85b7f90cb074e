"""A slow Redis is not a down Redis: against a real Valkey server frozen (``SIGSTOP``: connections up, no
answers) or stopped, with the store's breaker on a clock the test moves. A timeout costs that request its
lookup and nothing else; timeouts that persist, or a refused connection, open the breaker. Every bypass
is counted by its reason, in the cache's stats and in Prometheus."""

from __future__ import annotations

import re
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from servers import ValkeyServer

from groupqwen.cache import HashingEmbedder, SemanticCache
from groupqwen.cache.policy import BYPASS_REASONS
from groupqwen.cache.redis_store import RedisStore
from groupqwen.errors import CacheSlow, CacheUnavailable
from groupqwen.testing import FakeClock

from .helpers import policy, redis_store
from .test_gateway import chat, gateway_app
from .test_semantic import answer, ask

SLOW_S = 1.0  # the store's timeout: generous, so that no call to a thawed server reaches it
DOWN_AFTER_S = 3.0  # on the FakeClock: timeouts persisting this long mean down


def slow_store(url: str, clock: FakeClock) -> RedisStore:
    return redis_store(
        url,
        HashingEmbedder().dim,
        timeout_s=SLOW_S,
        retry_after_s=1.0,
        down_after_s=DOWN_AFTER_S,
        clock=clock,
    )


def slow_cache(url: str) -> SemanticCache:
    """A cache over a ``slow_store``, both on one clock that stands still."""
    clock = FakeClock(wall=time.time())
    return SemanticCache(slow_store(url, clock), HashingEmbedder(), policy(timeout_s=10.0), clock=clock)


async def test_a_timeout_is_slow_and_nothing_else(redis_url: str, valkey: ValkeyServer) -> None:
    store = slow_store(redis_url, FakeClock(wall=time.time()))
    assert await store.get("nothing") is None  # connected
    with valkey.frozen():
        with pytest.raises(CacheSlow):
            await store.get("nothing")
        assert not store.degraded and store.failures == 0 and store.slow_calls == 1
        assert await store.ping()  # alive, only slow: the health check does not flap
    assert await store.get("nothing") is None
    assert not store.degraded and store.failures == 0
    await store.close()


async def test_timeouts_that_persist_are_down_until_redis_answers(
    redis_url: str, valkey: ValkeyServer
) -> None:
    clock = FakeClock(wall=time.time())
    store = slow_store(redis_url, clock)
    assert await store.get("nothing") is None
    with valkey.frozen():
        with pytest.raises(CacheSlow):
            await store.get("nothing")
        clock.advance(DOWN_AFTER_S / 2)
        with pytest.raises(CacheSlow):
            await store.get("nothing")
        clock.advance(DOWN_AFTER_S / 2)  # every call timing out, none answered, for DOWN_AFTER_S: down
        with pytest.raises(CacheUnavailable) as down:
            await store.get("nothing")
        assert not isinstance(down.value, CacheSlow)
        assert store.degraded and store.failures == 1 and store.slow_calls == 3
        with pytest.raises(CacheUnavailable):
            await store.get("nothing")  # the breaker answers: Redis is not asked
        assert store.slow_calls == 3 and not await store.ping()
        clock.advance(1.0)  # retry_after_s: Redis is asked again, and still times out: down at once
        with pytest.raises(CacheUnavailable) as again:
            await store.get("nothing")
        assert not isinstance(again.value, CacheSlow) and store.failures == 2
    clock.advance(1.0)
    assert await store.get("nothing") is None and not store.degraded
    with valkey.frozen(), pytest.raises(CacheSlow):  # an answer ended the run: slow again
        await store.get("nothing")
    await store.close()


async def test_a_lone_timeout_long_ago_does_not_count(redis_url: str, valkey: ValkeyServer) -> None:
    clock = FakeClock(wall=time.time())
    store = slow_store(redis_url, clock)
    with valkey.frozen():
        with pytest.raises(CacheSlow):
            await store.get("nothing")
        clock.advance(10 * DOWN_AFTER_S)  # no call at all meanwhile: nothing says Redis stayed slow
        with pytest.raises(CacheSlow):
            await store.get("nothing")
    assert not store.degraded and store.failures == 0
    await store.close()


async def test_a_slow_store_bypasses_the_request_and_the_cache_stays_ok(
    redis_url: str, valkey: ValkeyServer
) -> None:
    cache = slow_cache(redis_url)
    question = ask("How far is the Moon?")
    first = await cache.lookup(question, "t", "m")
    cache.store(first, "m", answer("384,400 km"), None)
    assert await cache.drain()
    with valkey.frozen():
        slow = await cache.lookup(question, "t", "m")
        assert (slow.status, slow.bypass) == ("bypass", "store_slow")
        assert cache.health() == "ok" and await cache.probe() == ("ok", None)
        write = cache.store(first, "m", answer("about 384,000 km"), None)
        assert write is not None
        await write  # timed out: this answer is not kept, nothing is marked down
        assert cache.health() == "ok"
    assert (await cache.lookup(question, "t", "m")).status == "hit"
    stats = await cache.stats()
    assert stats.status == "ok" and stats.bypasses == 1 and stats.errors == 2
    assert stats.bypass_reasons == {**dict.fromkeys(BYPASS_REASONS, 0), "store_slow": 1}
    await cache.close()


@pytest.fixture
def redis_gateway(tmp_path: Path, redis_url: str) -> Iterator[TestClient]:
    cache = slow_cache(redis_url)
    app, _ = gateway_app(tmp_path, cache)
    with TestClient(app) as client:
        yield client


def bypasses(client: TestClient) -> dict[str, float]:
    text = client.get("/metrics").text
    return {
        m[1]: float(m[2])
        for m in re.finditer(r'^groupqwen_cache_bypasses_total\{reason="(\w+)"\} (\S+)$', text, re.M)
    }


def test_the_gateway_counts_bypasses_by_reason(redis_gateway: TestClient, valkey: ValkeyServer) -> None:
    client = redis_gateway
    assert chat(client, "What is the capital of France?").headers["x-groupqwen-cache"] == "miss"
    assert chat(client, "What is the capital of France?").headers["x-groupqwen-cache"] == "hit"
    hot = chat(client, "What is the capital of France?", temperature=1.5)
    fresh = chat(client, "What is the capital of France?", headers={"cache-control": "no-cache"})
    with valkey.frozen():
        slow = chat(client, "What is the capital of France?")
        health = client.get("/v1/health").json()
    assert [r.headers["x-groupqwen-cache"] for r in (hot, fresh, slow)] == ["bypass"] * 3
    assert all(r.status_code == 200 for r in (hot, fresh, slow))
    assert health["checks"]["cache"]["status"] == "ok"  # slow, not down
    assert bypasses(client) == {"policy": 1.0, "no_cache": 1.0, "store_slow": 1.0}
    stats = client.get("/v1/cache/stats").json()
    assert stats["status"] == "ok" and stats["bypasses"] == 3
    assert {k: v for k, v in stats["bypass_reasons"].items() if v} == {
        "policy": 1,
        "no_cache": 1,
        "store_slow": 1,
    }
    assert chat(client, "What is the capital of France?").headers["x-groupqwen-cache"] == "hit"
