"""``RedisStore``: entries in Redis (shared by every gateway replica); neighbours found by the server's
own vector search when it has one (``redis_search.py``), else in a local index kept in sync with Redis
(``redis_local.py``). The entries' layout is in ``redis_entries.py``; the exact-match layer is one
``HMGET``. The entries' learned bars live with them (``redis_bars.py``, through ``bars``).

Which way neighbours are found is probed (``FT._LIST``) at the first call that needs it and again after
every outage. Every call has a ``timeout_s`` bound, and a failed call is one of two things:

- *slow*: no answer within the bound (Redis alive but busy, or the host is). That call raises
  ``CacheSlow`` (its request bypasses the cache) and nothing else changes: one slow answer is not an
  outage. Only when calls keep timing out for ``down_after_s`` with none answering in between is Redis
  taken for down.
- *down*: the connection is refused or reset, or any other Redis error; or slowness that persisted. The
  store opens its circuit breaker: it answers ``CacheUnavailable`` at once, and says ``degraded``, for
  ``retry_after_s`` (on the monotonic time of the store's ``clock``), then tries Redis again.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from functools import partial
from typing import Any, TypeVar

import numpy as np
from redis.exceptions import RedisError
from redis.exceptions import TimeoutError as RedisTimeout

from groupqwen import log, redis_client
from groupqwen.cache.bars import WINDOW_S
from groupqwen.cache.index import Vectors
from groupqwen.cache.redis_bars import RedisBars
from groupqwen.cache.redis_entries import FIELDS, Names, decode, fields, scan
from groupqwen.cache.redis_local import LocalIndex
from groupqwen.cache.redis_search import ServerSearch
from groupqwen.cache.stores import CacheEntry, Invalidation, StoreStats
from groupqwen.clock import SYSTEM_CLOCK, Clock
from groupqwen.errors import CacheSlow, CacheUnavailable

_log = log.get(__name__)
T = TypeVar("T")
_DELETE_BATCH = 1000


class RedisStore:
    """``prefix`` and ``timeout_s`` come from the cache's settings (``redis_prefix``,
    ``redis_timeout_s``). ``clock``: its wall time for entries' expiry, its monotonic time for the circuit
    breaker (``retry_after_s`` after an outage, ``down_after_s`` of persisting timeouts before one is
    declared)."""

    name = "redis"

    def __init__(
        self,
        url: str,
        dim: int,
        *,
        prefix: str,
        timeout_s: float,
        sync_timeout_s: float = 30.0,
        retry_after_s: float = 1.0,
        down_after_s: float = 3.0,
        max_events: int = 100_000,
        max_connections: int = 64,
        vector_search: bool = True,
        clock: Clock = SYSTEM_CLOCK,
    ) -> None:
        # one immediate retry: a pooled connection that went stale in an outage reconnects transparently;
        # ``_call`` bounds the whole call, retry and the wait for a free connection included, by
        # ``timeout_s`` (the pool's own wait would fail as a ConnectionError: "down", not "slow")
        self._redis = redis_client.bounded(
            url, timeout_s=timeout_s, pool_wait_s=None, max_connections=max_connections
        )
        self._names = Names(prefix)
        self._timeout_s = timeout_s
        self._sync_timeout_s = sync_timeout_s
        self._retry_after_s = retry_after_s
        self._down_after_s = down_after_s
        self._clock = clock
        self._server = ServerSearch(self._redis, self._names, dim, enabled=vector_search, clock=clock)
        self._local = LocalIndex(
            self._redis,
            self._names,
            dim,
            call=self._call,
            max_events=max_events,
            sync_timeout_s=sync_timeout_s,
        )
        self._down_until = 0.0  # on clock.monotonic()
        self._slow_since: float | None = None  # the first timeout of the current run (no answer since)
        self._slow_last = 0.0  # the run's latest timeout
        self.failures = 0  # outages declared (the breaker opened)
        self.slow_calls = 0  # calls that timed out

    @property
    def vector_search(self) -> bool | None:
        """Whether the server's search module finds neighbours: None until probed (at the first call that
        needs it, and again after a failure); always False with ``vector_search=False``."""
        return self._server.available

    @property
    def degraded(self) -> bool:
        return self._down_until > self._clock.monotonic()

    async def _call(self, make: Callable[[], Awaitable[T]], timeout_s: float | None = None) -> T:
        if self._down_until > self._clock.monotonic():
            raise CacheUnavailable("Redis is unavailable; retrying shortly")
        bound = timeout_s or self._timeout_s
        try:
            async with asyncio.timeout(bound):
                result = await make()
        except (TimeoutError, RedisTimeout):  # before OSError: TimeoutError is one
            raise self._timed_out(bound) from None
        except (RedisError, OSError) as exc:
            raise self._down(type(exc).__name__, str(exc)) from None
        self._slow_since = None
        return result

    def _timed_out(self, bound: float) -> CacheUnavailable:
        """A call without an answer within ``bound``: slow, unless calls have been timing out (each within
        ``down_after_s`` of the last, none answered) for ``down_after_s``."""
        self.slow_calls += 1
        now = self._clock.monotonic()
        if self._slow_since is None or now - self._slow_last > self._down_after_s:
            self._slow_since = now  # a new run: a lone timeout long ago says nothing about now
        self._slow_last = now
        if now - self._slow_since >= self._down_after_s:
            return self._down("no answer", f"every call timed out for {now - self._slow_since:.1f} s")
        _log.info("redis cache slow", timeout_s=bound)
        return CacheSlow(f"Redis did not answer within {bound:g} s")

    def _down(self, what: str, detail: str) -> CacheUnavailable:
        """Open the circuit: Redis is not asked again for ``retry_after_s``."""
        self.failures += 1
        self._local.forget()
        self._server.forget()
        self._down_until = self._clock.monotonic() + self._retry_after_s
        _log.warning("redis cache unavailable", error=f"{what}: {detail}"[:200])
        return CacheUnavailable(f"Redis cache unavailable: {what}")

    async def sync(self) -> None:
        """Load or catch up the local index completely (bounded by ``sync_timeout_s``); with the server's
        vector search there is nothing to load."""
        if not await self._call(self._server.probe):
            await self._local.sync()

    def bars(self, window_s: float = WINDOW_S) -> RedisBars:
        """The entries' learned bars, kept in this store's Redis (shared by every replica)."""
        return RedisBars(self._redis, self._names, call=self._call, clock=self._clock, window_s=window_s)

    # -- VectorStore ---------------------------------------------------------------------------------

    async def get(self, key: str) -> CacheEntry | None:
        row = await self._call(lambda: self._redis.hmget(self._names.entry(key), list(FIELDS)))
        return decode(key, row)

    async def holds(self, scope: str) -> bool:
        """From the local index; with the server's vector search: True (it cannot tell without a query of
        its own)."""
        if self._server.available is not False and await self._call(self._server.probe):
            return True
        return await self._local.holds(scope)

    async def search(self, scope: str, vector: Vectors, k: int) -> list[tuple[CacheEntry, float]]:
        if self._server.available is not False:
            found = await self._call(lambda: self._server.knn(scope, vector, k))
            if found is not None:
                return found
        return await self._local.search(scope, vector, k)

    async def put(self, entry: CacheEntry) -> None:
        vector = entry.vector.astype(np.float32).tobytes()
        name = self._names.entry(entry.key)
        mapping = fields(entry, vector)

        async def write() -> bool:
            remote = await self._server.probe()
            pipe = self._redis.pipeline(transaction=True)
            pipe.hset(name, mapping=mapping)  # type: ignore[arg-type]
            if entry.expires is not None:
                pipe.pexpireat(name, int(entry.expires * 1000))
            # a bar the entry learned stays (the hash's field is not written over): counted to its new expiry
            pipe.zadd(self._names.bars, {entry.key: entry.expires or float("inf")}, xx=True)
            if not remote:
                self._local.log_put(pipe, entry, vector)
            await pipe.execute()
            return remote

        if not await self._call(write):
            self._local.index.add(entry.scope, entry.key, entry.vector)

    async def _delete(self, keys: list[str]) -> int:
        """Delete in batches, each within the sync timeout: a server-side vector index makes every
        deletion cost an index update, so clearing a large cache is many bounded calls, not one."""

        async def drop(batch: list[str]) -> int:
            remote = await self._server.probe()  # the server's index forgets deleted hashes by itself
            pipe = self._redis.pipeline(transaction=False)
            for key in batch:
                pipe.unlink(self._names.entry(key))
                pipe.zrem(self._names.bars, key)
                if not remote:
                    self._local.log_delete(pipe, key)
            results = await pipe.execute()
            return sum(int(r) for r in results[0 :: 2 if remote else 3])

        removed = 0
        for start in range(0, len(keys), _DELETE_BATCH):
            batch = keys[start : start + _DELETE_BATCH]
            removed += await self._call(partial(drop, batch), self._sync_timeout_s)
            self._local.index.remove(batch)
        return removed

    async def _scan(self) -> list[tuple[str, list[Any]]]:
        async def every() -> list[tuple[str, list[Any]]]:
            return [item async for item in scan(self._redis, self._names, ["model", "text", "created"])]

        return await self._call(every, self._sync_timeout_s)

    async def invalidate(self, selector: Invalidation) -> int:
        now = self._clock.time()
        doomed = [
            key
            for key, (model, text, created) in await self._scan()
            if selector.matches(model.decode(), text.decode(), float(created), now)
        ]
        return await self._delete(doomed)

    async def clear(self) -> int:
        keys = [key for key, _ in await self._scan()]
        removed = await self._delete(keys)
        self._local.index.clear()
        return removed

    async def stats(self) -> StoreStats:
        if not await self._call(self._server.probe):
            await self._local.ensure_synced()

        async def info() -> tuple[dict[str, Any], dict[str, Any], int]:
            entries = await self._server.size() if await self._server.probe() else len(self._local.index)
            return await self._redis.info("memory"), await self._redis.info("stats"), entries

        memory, stats, entries = await self._call(info)
        return StoreStats(
            backend=self.name,
            entries=entries,
            bytes=int(memory.get("used_memory", 0)),
            evictions=int(stats.get("evicted_keys", 0)),
            expired=int(stats.get("expired_keys", 0)),
        )

    async def ping(self) -> bool:
        """True when Redis answers, or is only slow (an answer late is not an outage)."""
        try:
            await self._call(self._redis.ping)
        except CacheSlow:
            return True
        except CacheUnavailable:
            return False
        return True

    async def close(self) -> None:
        await self._local.close()
        await self._redis.aclose()
