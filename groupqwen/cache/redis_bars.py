"""``RedisBars``: the learned per-entry bars (``bars.py``) kept in Redis with the entries, so that every
gateway replica learns from a regeneration or a dislike of a hit that another replica served, and applies
every bar learned.

- The bar is the entry hash's ``bar`` field: read with the entry (the candidates a search returns, the
  exact ``HMGET``), so applying it costs no round trip. It is raised by one Lua script (``_RAISE``): only
  upwards, so a racing writer with a lower bar never lowers it, and only on an entry that still exists.
  ``{prefix}bars`` (a sorted set, scored by the entries' expiry) counts the entries holding one.
- A semantic serve is remembered as two keys with a TTL of ``window_s``: ``{prefix}s:q:{question's exact
  key}`` and ``{prefix}s:h:{hit id}``, each ``"{score} {entry key}"``. A regeneration or a dislike takes
  its key with ``GETDEL`` (one teaching per serve, whichever replica is asked) and raises the bar.

Every call goes through the store's ``Call``: its timeout and circuit breaker.
"""

from __future__ import annotations

from typing import Any

import redis.asyncio as aioredis

from groupqwen.cache.bars import WINDOW_S, raised
from groupqwen.cache.redis_entries import Call, Names
from groupqwen.cache.stores import CacheEntry
from groupqwen.clock import Clock

# KEYS: the entry's hash, the learned-bars set; ARGV: the bar to reach at least, the entry's key.
# Returns the entry's bar afterwards, or nil when the entry is gone.
_RAISE = """
if redis.call('EXISTS', KEYS[1]) == 0 then return false end
local old = redis.call('HGET', KEYS[1], 'bar')
if old and tonumber(old) >= tonumber(ARGV[1]) then return old end
redis.call('HSET', KEYS[1], 'bar', ARGV[1])
local expires = redis.call('HGET', KEYS[1], 'expires')
if not expires or expires == '' then expires = '+inf' end
redis.call('ZADD', KEYS[2], expires, ARGV[2])
return ARGV[1]
"""


class RedisBars:
    """``EntryBars`` in Redis, over the store's client, key names and ``call`` (``RedisStore.bars``)."""

    def __init__(
        self, redis: aioredis.Redis, names: Names, *, call: Call, clock: Clock, window_s: float = WINDOW_S
    ) -> None:
        self._redis = redis
        self._names = names
        self._call = call
        self._clock = clock
        self.window_s = window_s
        self._raise = redis.register_script(_RAISE)

    def bar(self, entry: CacheEntry) -> float:
        return entry.bar

    async def served(self, request_key: str, entry_key: str, score: float, hit_id: str) -> None:
        serve, ttl_ms = f"{score!r} {entry_key}", max(1, int(self.window_s * 1000))

        async def remember() -> None:
            pipe = self._redis.pipeline(transaction=False)
            pipe.set(self._names.serve(request_key), serve, px=ttl_ms)
            pipe.set(self._names.hit(hit_id), serve, px=ttl_ms)
            await pipe.execute()

        await self._call(remember)

    async def regenerated(self, request_key: str) -> str | None:
        return await self._teach(self._names.serve(request_key))

    async def disliked(self, hit_id: str) -> str | None:
        return await self._teach(self._names.hit(hit_id))

    async def _teach(self, name: str) -> str | None:
        serve: Any = await self._call(lambda: self._redis.getdel(name))
        if serve is None:
            return None
        score, entry_key = serve.decode().split(" ", 1)
        keys = [self._names.entry(entry_key), self._names.bars]
        bar = raised(float(score))
        now: Any = await self._call(lambda: self._raise(keys=keys, args=[repr(bar), entry_key]))
        return None if now is None else entry_key

    async def learned(self) -> int:
        async def count() -> int:
            pipe = self._redis.pipeline(transaction=False)
            pipe.zremrangebyscore(self._names.bars, "-inf", f"({self._clock.time()!r}")
            pipe.zcard(self._names.bars)
            return int((await pipe.execute())[1])

        return await self._call(count)
