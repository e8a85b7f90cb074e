"""RedisStore against a real Valkey server: sharing between gateways (entries and learned bars), restarts,
TTL, outages. Every test
runs twice: on a plain server (neighbours in each store's local index) and on one with the search module
(neighbours found by ``FT.SEARCH``)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator

import pytest
import redis
from servers import ValkeyServer

from groupqwen.cache.bars import raised
from groupqwen.cache.embedders import MiniLMEmbedder
from groupqwen.cache.policy import Lookup
from groupqwen.cache.redis_store import RedisStore
from groupqwen.cache.semantic import SemanticCache
from groupqwen.cache.stores import Answer, CacheEntry, Invalidation
from groupqwen.clock import SYSTEM_CLOCK, Clock
from groupqwen.errors import CacheUnavailable
from groupqwen.messages import ChatRequest
from groupqwen.testing import FakeClock

from .helpers import policy, redis_store
from .test_semantic import answer, ask


@pytest.fixture(scope="module", params=["local-index", "vector-search"])
def valkey(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ValkeyServer]:
    server = ValkeyServer(tmp_path_factory.mktemp("valkey"), search=request.param == "vector-search")
    server.start()
    yield server
    server.stop()


def gateway(url: str, embedder: MiniLMEmbedder, *, clock: Clock = SYSTEM_CLOCK) -> SemanticCache:
    """A gateway's cache over Redis, the cache and its store on ``clock`` (wall time: expiry; monotonic:
    the store's retry window after a failure). Timeouts generous: no call here may time out on a busy
    machine."""
    store = redis_store(url, embedder.dim, timeout_s=5.0, retry_after_s=1.0, clock=clock)
    return SemanticCache(store, embedder, policy(timeout_s=10.0), clock=clock, bars=store.bars())


async def synced(cache: SemanticCache) -> SemanticCache:
    """Wait for the background load of the local index (a real gateway just misses meanwhile)."""
    store = cache._store
    assert isinstance(store, RedisStore)
    await store.sync()
    return cache


async def eventually(cache: SemanticCache, request: ChatRequest, tenant: str = "t") -> Lookup:
    """The lookup, repeated until it hits (at most 5 s): another gateway's write is scheduled in the
    background, so it becomes visible here once it has landed in Redis, not at once."""
    deadline = time.monotonic() + 5
    while True:
        found = await cache.lookup(request, tenant, "m")
        if found.status == "hit" or time.monotonic() > deadline:
            return found
        await asyncio.sleep(0.01)


async def test_two_gateways_share_entries_and_a_restart_sees_them(
    redis_url: str, valkey: ValkeyServer, minilm: MiniLMEmbedder
) -> None:
    a, b = await synced(gateway(redis_url, minilm)), await synced(gateway(redis_url, minilm))
    assert a._store.vector_search is valkey.search  # type: ignore[attr-defined]
    lookup = await a.lookup(ask("How many legs does a spider have?"), "t", "m")
    a.store(lookup, "m", answer("eight"), 60)  # in the background, as the gateway does
    exact = await eventually(b, ask("how many legs does a spider have?"))
    assert exact.status == "hit" and exact.completion().content == "eight"
    near = await b.lookup(ask("How many legs do spiders have?"), "t", "m")  # via the event stream
    assert near.status == "hit" and near.reason == "semantic match"
    assert (await b.lookup(ask("How many legs does a spider have?"), "other", "m")).status == "miss"
    await b.close()
    restarted = gateway(redis_url, minilm)  # without vector search: loads its index in the background
    first = await restarted.lookup(ask("How many legs do spiders have?"), "t", "m")
    assert first.status == ("hit" if valkey.search else "miss")
    await synced(restarted)
    near = await restarted.lookup(ask("How many legs do spiders have?"), "t", "m")
    assert near.status == "hit"
    stats = await restarted.stats()
    assert stats.backend == "redis" and stats.entries == 1 and stats.bytes > 0
    ttl = redis.Redis.from_url(redis_url).pttl(f"groupqwen:cache:e:{near.entry.key}")  # type: ignore[union-attr]
    assert 0 < ttl <= 60_000
    await a.close()
    await restarted.close()


async def test_invalidation_and_clear_reach_the_other_gateway(redis_url: str, minilm: MiniLMEmbedder) -> None:
    a, b = await synced(gateway(redis_url, minilm)), await synced(gateway(redis_url, minilm))
    for text, model in [("What is the tallest tree species?", "x"), ("Name the largest desert.", "y")]:
        lookup = await a.lookup(ask(text), "t", model)
        a.store(lookup, model, answer("z"), None)
    assert await a.drain()  # both writes have landed in Redis
    assert (await b.lookup(ask("Which tree species is the tallest?"), "t", "x")).status == "hit"
    assert await a.invalidate(Invalidation(model="x")) == 1
    assert (await b.lookup(ask("Which tree species is the tallest?"), "t", "x")).status == "miss"
    assert (await b.lookup(ask("Name the largest desert."), "t", "y")).status == "hit"
    assert await b.clear() == 1
    assert (await a.lookup(ask("Name the largest desert."), "t", "y")).status == "miss"
    assert (await a.stats()).entries == 0
    await a.close()
    await b.close()


async def test_entries_expire_in_redis(redis_url: str, minilm: MiniLMEmbedder) -> None:
    """Redis itself drops an entry when its TTL ends: the entry is written with its absolute expiry (the
    gateway's wall time + TTL), and once Redis's own time passes it (moved there by the test, not waited
    for: no timing) the gateway's clock still stands before it, so only the server can turn the hit into a
    miss."""
    clock = FakeClock(wall=time.time())
    cache = gateway(redis_url, minilm, clock=clock)
    lookup = await cache.lookup(ask("a short-lived question"), "t", "m")
    cache.store(lookup, "m", answer("soon gone"), 3600.0)
    assert await cache.drain()
    assert (await cache.lookup(ask("a short-lived question"), "t", "m")).status == "hit"
    raw = redis.Redis.from_url(redis_url)
    keys = [k for k in raw.scan_iter(match="*") if raw.type(k) == b"hash" and raw.pexpiretime(k) > 0]
    assert [raw.pexpiretime(k) for k in keys] == [int((clock.time() + 3600.0) * 1000)]
    raw.pexpireat(keys[0], int(time.time() * 1000) - 1)  # Redis's time is now past the entry's expiry
    assert (await cache.lookup(ask("a short-lived question"), "t", "m")).status == "miss"
    raw.close()
    await cache.close()


async def test_redis_down_means_bypass_then_caching_resumes(
    redis_url: str, valkey: ValkeyServer, minilm: MiniLMEmbedder
) -> None:
    clock = FakeClock(wall=time.time())  # Redis expires entries at the wall time the gateway gives them
    cache = gateway(redis_url, minilm, clock=clock)
    store = cache._store
    assert isinstance(store, RedisStore)
    lookup = await cache.lookup(ask("Where is the Eiffel Tower?"), "t", "m")
    cache.store(lookup, "m", answer("Paris"), None)
    assert await cache.drain()  # stored before the outage
    await synced(cache)  # nothing of the store's own left running when Redis goes
    valkey.stop()
    try:
        down = await cache.lookup(ask("Where is the Eiffel Tower?"), "t", "m")
        assert (down.status, down.bypass) == ("bypass", "store_down") and cache.health() == "degraded"
        failures = store.failures
        again = await cache.lookup(ask("Where is the Eiffel Tower?"), "t", "m")
        assert again.status == "bypass" and store.failures == failures  # circuit open: Redis not tried
        clock.advance(0.5)  # still within retry_after_s
        assert (await cache.lookup(ask("Where is the Eiffel Tower?"), "t", "m")).status == "bypass"
        assert store.failures == failures
    finally:
        valkey.start()  # an empty server, as after a Redis restart without persistence
    clock.advance(0.5)  # retry_after_s has passed: the store tries Redis again
    back = await cache.lookup(ask("Where is the Eiffel Tower?"), "t", "m")
    assert back.status == "miss" and cache.health() == "ok"
    cache.store(back, "m", answer("Paris"), None)
    await synced(cache)  # reloaded after the outage
    assert (await cache.lookup(ask("Where is the Eiffel Tower located?"), "t", "m")).status == "hit"
    await cache.close()


async def test_a_write_in_flight_is_read_back_here_and_close_lands_it(
    redis_url: str, minilm: MiniLMEmbedder
) -> None:
    """The write of a miss goes to Redis in the background: this gateway reads it back at once (exact and
    semantic layers), another sees it once it has landed, and a gateway closing right after the answer
    still lands it."""
    a, b = await synced(gateway(redis_url, minilm)), await synced(gateway(redis_url, minilm))
    lookup = await a.lookup(ask("What is the largest ocean on Earth?"), "t", "m")
    write = a.store(lookup, "m", answer("the Pacific"), None)
    assert write is not None and not write.done()
    exact = await a.lookup(ask("what is the largest ocean on earth?"), "t", "m")
    assert exact.status == "hit" and exact.completion().content == "the Pacific"
    assert write.done()
    near = await a.lookup(ask("Which ocean on Earth is the largest?"), "t", "m")
    assert near.status == "hit" and near.reason == "semantic match"
    assert (await eventually(b, ask("Which ocean on Earth is the largest?"))).status == "hit"

    lookup = await a.lookup(ask("What is the smallest ocean on Earth?"), "t", "m")
    last = a.store(lookup, "m", answer("the Arctic"), None)
    await a.close()  # drains: the last answer is in Redis, not lost with the gateway
    assert last is not None and last.done() and not last.cancelled()
    hit = await b.lookup(ask("What is the smallest ocean on Earth?"), "t", "m")
    assert hit.status == "hit" and hit.completion().content == "the Arctic"
    stats = await b.stats()
    assert stats.entries == 2 and stats.errors == 0
    await b.close()


async def test_holds_tells_an_empty_scope_only_from_the_local_index(
    redis_url: str, valkey: ValkeyServer, minilm: MiniLMEmbedder
) -> None:
    """The local index knows which scopes have entries (a lookup then skips the embedding); with the
    server's vector search the store cannot tell without a query, and says it may hold some."""
    store = redis_store(redis_url, minilm.dim, timeout_s=5.0)
    await store.clear()
    await store.sync()
    assert await store.holds("empty-scope") is valkey.search
    vector = minilm.embed(["Which planet has the most moons?"])[0]
    entry = CacheEntry("s1:k", "s1", "m", "which planet has the most moons?", vector,
                       Answer("Saturn", "", "stop", 1, 1), time.time(), None)  # fmt: skip
    await store.put(entry)
    assert await store.holds("s1")
    await store.close()


async def test_a_search_catches_up_with_other_replicas_in_its_own_round_trip(
    redis_url: str, minilm: MiniLMEmbedder, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With a local index, a search reads the events since its last look in the round trip that fetches
    its candidates: another replica's new entry is found, and its deleted one is not, at the first search
    after them; a second trip only when the events changed the candidates."""
    writer, reader = (
        redis_store(redis_url, minilm.dim, timeout_s=5.0, vector_search=False) for _ in range(2)
    )
    await writer.clear()
    await reader.sync()
    trips = 0

    def counted(call):  # type: ignore[no-untyped-def]
        async def wrapper(*args, **kwargs):  # type: ignore[no-untyped-def]
            nonlocal trips
            trips += 1
            return await call(*args, **kwargs)

        return wrapper

    def pipeline(*args, **kwargs):  # type: ignore[no-untyped-def]
        pipe = real_pipeline(*args, **kwargs)
        pipe.execute = counted(pipe.execute)
        return pipe

    real_pipeline = reader._redis.pipeline
    monkeypatch.setattr(reader._redis, "pipeline", pipeline)
    monkeypatch.setattr(reader._redis, "execute_command", counted(reader._redis.execute_command))

    def entry(key: str, text: str) -> CacheEntry:
        return CacheEntry(f"s:{key}", "s", "m", text, minilm.embed([text])[0],
                          Answer(text.upper(), "", "stop", 1, 1), time.time(), None)  # fmt: skip

    moons, rings = (
        entry("moons", "which planet has the most moons?"),
        entry("rings", "which planet has rings?"),
    )
    await writer.put(moons)
    found = await reader.search("s", moons.vector, 4)
    assert [e.key for e, _ in found] == ["s:moons"] and trips == 2  # new to it: the index moved, a 2nd trip
    trips = 0
    found = await reader.search("s", moons.vector, 4)
    assert [e.key for e, _ in found] == ["s:moons"] and trips == 1  # nothing new: one trip
    await writer.put(rings)
    await writer.invalidate(Invalidation(pattern="*moons*"))
    trips = 0
    found = await reader.search("s", moons.vector, 4)
    assert [e.key for e, _ in found] == ["s:rings"], found
    assert trips == 2
    await writer.close()
    await reader.close()


async def test_a_hit_served_by_one_gateway_and_regenerated_on_another_tightens_it_for_both(
    redis_url: str, minilm: MiniLMEmbedder
) -> None:
    """The serve is remembered in Redis, so the regeneration teaches the entry wherever it arrives; the bar
    is a field of the entry, so every gateway applies it (read with the candidates)."""
    a, b = await synced(gateway(redis_url, minilm)), await synced(gateway(redis_url, minilm))
    lookup = await a.lookup(ask("How do I center a div in CSS?"), "t", "m")
    a.store(lookup, "m", answer("margin: auto"), None)
    asked = ask("How can I center a div with CSS?")
    served = await a.lookup(asked, "t", "m")
    assert (served.status, served.stage) == ("hit", "threshold") and served.entry is not None
    assert served.similarity is not None and served.entry.bar == 0.0
    assert await a.drain()  # the serve is remembered in the background: landed now
    raw = redis.Redis.from_url(redis_url)
    ttl = raw.pttl(f"groupqwen:cache:s:q:{served.key.entry_key}")  # type: ignore[union-attr]
    assert 0 < ttl <= a.bars.window_s * 1000
    assert (await b.lookup(asked, "t", "m", read=False)).bypass == "no_cache"  # the re-ask reaches b
    bar = raw.hget(f"groupqwen:cache:e:{served.entry.key}", "bar")
    assert bar is not None and float(bar) == raised(served.similarity) > served.similarity
    for cache in (a, b):
        assert (await cache.lookup(asked, "t", "m")).status == "miss"
        exact = await cache.lookup(ask("How do I center a div in CSS?"), "t", "m")
        assert exact.status == "hit" and exact.entry is not None and exact.entry.bar == float(bar)
        stats = await cache.stats()
        assert stats.learned_bars == 1 and stats.errors == 0
    assert (await a.stats()).regenerated == 0 and (await b.stats()).regenerated == 1
    assert (await a.lookup(asked, "t", "m", read=False)).bypass == "no_cache"  # taught once, not twice
    assert (await a.stats()).regenerated == 0
    raw.close()
    await a.close()
    await b.close()


async def test_a_hit_served_by_one_gateway_is_disliked_through_another(
    redis_url: str, minilm: MiniLMEmbedder
) -> None:
    a, b = await synced(gateway(redis_url, minilm)), await synced(gateway(redis_url, minilm))
    lookup = await a.lookup(ask("How many legs does a spider have?"), "t", "m")
    a.store(lookup, "m", answer("eight"), 60)
    served = await a.lookup(ask("How many legs do spiders have?"), "t", "m")
    assert served.status == "hit" and served.hit_id is not None and served.entry is not None
    assert await a.drain()
    assert await b.dislike(served.hit_id)
    assert not await a.dislike(served.hit_id)  # once per hit, whichever gateway is told
    assert not await a.dislike("0" * 24)  # an id never given
    assert (await a.lookup(ask("How many legs do spiders have?"), "t", "m")).status == "miss"
    assert (await b.stats()).disliked == 1 and (await a.stats()).learned_bars == 1
    assert await b.invalidate(Invalidation(pattern="*spider*")) == 1  # gone with its bar
    assert (await a.stats()).learned_bars == 0
    await a.close()
    await b.close()


async def test_a_bar_is_never_lowered_and_stays_with_its_entry(
    redis_url: str, minilm: MiniLMEmbedder
) -> None:
    """Serves taught in any order, concurrently too, leave the highest bar; a rewrite of the entry keeps
    it; a lesson about an entry gone creates nothing."""
    store = redis_store(redis_url, minilm.dim, timeout_s=5.0)
    bars = store.bars()
    text = "which planet has the most moons?"
    entry = CacheEntry("s:moons", "s", "m", text, minilm.embed([text])[0],
                       Answer("Saturn", "", "stop", 1, 1), time.time(), time.time() + 600)  # fmt: skip
    await store.put(entry)
    scores = [0.9, 0.5, 0.7, 0.95, 0.6, 0.8]
    for n, score in enumerate(scores):
        await bars.served(f"q{n}", entry.key, score, f"h{n}")
    assert await bars.disliked("h0") == entry.key
    assert (got := await store.get(entry.key)) is not None and got.bar == raised(0.9)
    assert await bars.disliked("h1") == entry.key  # a lower lesson: the bar stays
    assert (got := await store.get(entry.key)) is not None and got.bar == raised(0.9)
    taught = await asyncio.gather(*(bars.disliked(f"h{n}") for n in range(2, len(scores))))
    assert taught == [entry.key] * (len(scores) - 2)
    assert (got := await store.get(entry.key)) is not None and got.bar == raised(max(scores))
    await store.put(entry)  # the same question answered again: the bar it learned stays
    assert (got := await store.get(entry.key)) is not None and got.bar == raised(max(scores))
    assert await bars.learned() == 1
    await bars.served("q", "s:gone", 0.9, "h")
    assert await bars.regenerated("q") is None and await bars.disliked("h") is None
    raw = redis.Redis.from_url(redis_url)
    assert not raw.exists("groupqwen:cache:e:s:gone") and await bars.learned() == 1
    assert await store.clear() == 1 and await bars.learned() == 0
    raw.close()
    await store.close()


async def test_redis_down_means_no_learning_and_requests_still_answered(
    redis_url: str, valkey: ValkeyServer, minilm: MiniLMEmbedder
) -> None:
    clock = FakeClock(wall=time.time())
    # loaded first: a local index still loading in the background answers a semantic lookup with a miss
    cache = await synced(gateway(redis_url, minilm, clock=clock))
    lookup = await cache.lookup(ask("Where is the Eiffel Tower?"), "t", "m")
    cache.store(lookup, "m", answer("Paris"), None)
    asked = ask("Where is the Eiffel Tower located?")
    served = await cache.lookup(asked, "t", "m")
    assert served.status == "hit" and served.hit_id is not None
    assert await cache.drain()
    await synced(cache)
    errors = cache._counters.errors
    valkey.stop()
    try:
        again = await cache.lookup(asked, "t", "m", read=False)  # answered: the cache is only bypassed
        assert again.bypass == "no_cache" and cache._counters.regenerated == 0
        assert cache._counters.errors == errors + 1 and cache.health() == "degraded"
        with pytest.raises(CacheUnavailable):  # the feedback endpoint's 503
            await cache.dislike(served.hit_id)
        assert cache._counters.disliked == 0
    finally:
        valkey.start()
    clock.advance(1.0)  # the store's retry_after_s
    assert (await cache.lookup(asked, "t", "m", read=False)).bypass == "no_cache"
    assert cache._counters.errors == errors + 2  # a fresh server: the serve went with the old one
    assert (await cache.lookup(asked, "t", "m")).status != "bypass" and cache.health() == "ok"
    assert (await cache.stats()).learned_bars == 0 and cache._counters.regenerated == 0
    await cache.close()
