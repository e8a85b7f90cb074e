"""``RedisStore``: entries in Redis (shared by every gateway replica), neighbours found in a local index.

Layout under ``prefix`` (default ``groupqwen:cache:``):

- ``{prefix}e:{key}``: a hash per entry (scope, model, text, vector as float32 bytes, answer JSON, created,
  expires) with the entry's TTL as a Redis ``EXPIRE``; the exact-match layer is one ``HGETALL``.
- ``{prefix}events``: a stream of ``put`` (with scope and vector) and ``del`` events, capped at
  ``max_events``. Each replica keeps a local ``VectorIndex`` in sync by reading the events it has not seen
  before every search, and loads every entry with ``SCAN`` on start and after an outage.

Works with any Redis or Valkey (no vector-search module needed). Redis stays the truth: a candidate the
local index offers is read back from Redis before it is served, so an entry that expired, was invalidated
or whose event was trimmed away is never served, only missed. Every call has a ``timeout_s`` bound; after a
failure the store answers ``CacheUnavailable`` at once for ``retry_after_s``, then tries Redis again.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import suppress
from typing import Any, TypeVar

import numpy as np
import redis.asyncio as aioredis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import RedisError

from groupqwen import log
from groupqwen.cache.index import VectorIndex, Vectors
from groupqwen.cache.stores import Answer, CacheEntry, CacheUnavailable, Invalidation, StoreStats

_log = log.get(__name__)
T = TypeVar("T")
_SCAN_BATCH = 1000
_EVENTS_PER_SEARCH = 2000  # a lagging replica catches up over several searches, each within its timeout
_FIELDS = ("scope", "model", "text", "vector", "answer", "created", "expires")


class RedisStore:
    name = "redis"

    def __init__(
        self,
        url: str,
        dim: int,
        *,
        prefix: str = "groupqwen:cache:",
        timeout_s: float = 0.05,
        sync_timeout_s: float = 30.0,
        retry_after_s: float = 1.0,
        max_events: int = 100_000,
        max_connections: int = 64,
        clock: Callable[[], float] = time.time,
    ) -> None:
        # one immediate retry: a pooled connection that went stale in an outage reconnects transparently;
        # ``_call`` bounds the whole call, retry included, by ``timeout_s``
        pool = aioredis.BlockingConnectionPool.from_url(
            url,
            max_connections=max_connections,
            timeout=timeout_s,  # waiting for a free connection counts against the same bound
            socket_timeout=timeout_s,
            socket_connect_timeout=timeout_s,
            retry=Retry(NoBackoff(), 1),
        )
        self._redis = aioredis.Redis(connection_pool=pool)
        self._prefix = prefix
        self._events = f"{prefix}events"
        self._timeout_s = timeout_s
        self._sync_timeout_s = sync_timeout_s
        self._retry_after_s = retry_after_s
        self._max_events = max_events
        self._clock = clock
        self._index = VectorIndex(dim)
        self._last_event = b"0-0"
        self._synced = False
        self._down_until = 0.0
        self._loading: asyncio.Task[None] | None = None
        self.failures = 0

    @property
    def degraded(self) -> bool:
        return self._down_until > time.monotonic()

    # -- plumbing ------------------------------------------------------------------------------------

    def _entry_key(self, key: str) -> str:
        return f"{self._prefix}e:{key}"

    async def _call(self, make: Callable[[], Awaitable[T]], timeout_s: float | None = None) -> T:
        if self._down_until > time.monotonic():
            raise CacheUnavailable("Redis is unavailable; retrying shortly")
        try:
            async with asyncio.timeout(timeout_s or self._timeout_s):
                result = await make()
        except (RedisError, OSError, TimeoutError) as exc:
            self.failures += 1
            self._synced = False  # events may be missed while away: reload on return
            self._down_until = time.monotonic() + self._retry_after_s
            _log.warning("redis cache unavailable", error=f"{type(exc).__name__}: {exc}"[:200])
            raise CacheUnavailable(f"Redis cache unavailable: {type(exc).__name__}") from None
        return result

    async def sync(self) -> None:
        """Load or catch up the local index completely (bounded by ``sync_timeout_s``)."""
        await self._ensure_synced()
        if self._loading is not None:
            await asyncio.shield(self._loading)
        await self._call(self._read_events, self._sync_timeout_s)

    async def _ensure_synced(self) -> None:
        """Catch up with a few events; when the index was never loaded (start, after an outage), load
        it in the background: searches meanwhile see what is loaded so far (misses, never errors)."""
        if self._synced:
            await self._call(lambda: self._read_events(_EVENTS_PER_SEARCH))
        elif self._loading is None or self._loading.done():
            self._loading = asyncio.get_running_loop().create_task(self._load())

    async def _load(self) -> None:
        with suppress(CacheUnavailable):
            await self._call(self._full_sync, self._sync_timeout_s)
            self._synced = True

    async def _rows(self, fields: list[str]) -> AsyncIterator[tuple[str, list[Any]]]:
        """Every entry's key and ``fields``, a ``SCAN`` batch (one pipelined round trip) at a time."""
        strip = len(self._entry_key(""))
        cursor: int = 0
        while True:
            page: Any = await self._redis.scan(cursor, match=self._entry_key("*"), count=_SCAN_BATCH)
            cursor, names = int(page[0]), list(page[1])
            if names:
                pipe = self._redis.pipeline(transaction=False)
                for name in names:
                    pipe.hmget(name, fields)
                for name, row in zip(names, await pipe.execute(), strict=True):
                    if row[0] is not None:
                        yield name.decode()[strip:], row
            if cursor == 0:
                return

    async def _full_sync(self) -> None:
        last: Any = await self._redis.xrevrange(self._events, "+", "-", count=1)
        self._last_event = last[0][0] if last else b"0-0"
        self._index.clear()
        async for key, (scope, vector) in self._rows(["scope", "vector"]):
            self._add_local(scope.decode(), key, vector)
        await self._read_events()

    async def _read_events(self, limit: int | None = None) -> None:
        read = 0
        while limit is None or read < limit:
            batch: Any = await self._redis.xread({self._events: self._last_event}, count=_SCAN_BATCH)
            if not batch:
                return
            events = batch[0][1]
            for event_id, fields in events:
                self._last_event = event_id
                op, key = fields.get(b"op"), fields.get(b"key", b"").decode()
                if op == b"put":
                    self._add_local(fields[b"scope"].decode(), key, fields[b"vector"])
                elif op == b"del":
                    self._index.remove([key])
            read += len(events)
            if len(events) < _SCAN_BATCH:
                return

    def _add_local(self, scope: str, key: str, vector: bytes) -> None:
        vec = np.frombuffer(vector, dtype=np.float32)
        if vec.shape == (self._index.dim,):
            self._index.add(scope, key, vec.copy())

    def _decode(self, key: str, row: list[Any]) -> CacheEntry | None:
        """An entry from an ``HMGET`` of ``_FIELDS``; ``None`` when it is gone."""
        scope, model, text, vector, answer, created, expires = row
        if scope is None or vector is None or answer is None:
            return None
        return CacheEntry(
            key=key,
            scope=scope.decode(),
            model=model.decode(),
            text=text.decode(),
            vector=np.frombuffer(vector, dtype=np.float32).copy(),
            answer=Answer.from_json(answer),
            created=float(created),
            expires=float(expires) if expires else None,
        )

    # -- VectorStore ---------------------------------------------------------------------------------

    async def get(self, key: str) -> CacheEntry | None:
        row = await self._call(lambda: self._redis.hmget(self._entry_key(key), list(_FIELDS)))
        return self._decode(key, row)

    async def search(self, scope: str, vector: Vectors, k: int) -> list[tuple[CacheEntry, float]]:
        await self._ensure_synced()
        found = self._index.search(scope, vector, k)
        if not found:
            return []

        async def fetch() -> list[Any]:
            pipe = self._redis.pipeline(transaction=False)
            for key, _ in found:
                pipe.hmget(self._entry_key(key), list(_FIELDS))
            return list(await pipe.execute())

        rows = await self._call(fetch)
        out, gone = [], []
        for (key, score), row in zip(found, rows, strict=True):
            entry = self._decode(key, row)
            if entry is None:
                gone.append(key)
            else:
                out.append((entry, score))
        self._index.remove(gone)  # expired or deleted while we did not look
        return out

    async def put(self, entry: CacheEntry) -> None:
        vector = entry.vector.astype(np.float32).tobytes()
        name = self._entry_key(entry.key)
        mapping: dict[str, str | bytes] = {
            "scope": entry.scope,
            "model": entry.model,
            "text": entry.text,
            "vector": vector,
            "answer": entry.answer.to_json(),
            "created": repr(entry.created),
            "expires": repr(entry.expires) if entry.expires is not None else "",
        }
        event: dict[str, str | bytes] = {"op": "put", "key": entry.key, "scope": entry.scope}
        event["vector"] = vector

        async def write() -> None:
            pipe = self._redis.pipeline(transaction=True)
            pipe.hset(name, mapping=mapping)  # type: ignore[arg-type]
            if entry.expires is not None:
                pipe.pexpireat(name, int(entry.expires * 1000))
            pipe.xadd(self._events, event, maxlen=self._max_events, approximate=True)  # type: ignore[arg-type]
            await pipe.execute()

        await self._call(write)
        self._index.add(entry.scope, entry.key, entry.vector)

    async def _delete(self, keys: list[str]) -> int:
        if not keys:
            return 0

        async def drop() -> int:
            pipe = self._redis.pipeline(transaction=False)
            for key in keys:
                pipe.unlink(self._entry_key(key))
                pipe.xadd(self._events, {"op": "del", "key": key}, maxlen=self._max_events, approximate=True)
            results = await pipe.execute()
            return sum(int(r) for r in results[0::2])

        removed = await self._call(drop, self._sync_timeout_s)
        self._index.remove(keys)
        return removed

    async def _scan(self) -> list[tuple[str, list[Any]]]:
        async def scan() -> list[tuple[str, list[Any]]]:
            return [item async for item in self._rows(["model", "text", "created"])]

        return await self._call(scan, self._sync_timeout_s)

    async def invalidate(self, selector: Invalidation) -> int:
        now = self._clock()
        doomed = [
            key
            for key, (model, text, created) in await self._scan()
            if selector.matches(model.decode(), text.decode(), float(created), now)
        ]
        return await self._delete(doomed)

    async def clear(self) -> int:
        keys = [key for key, _ in await self._scan()]
        removed = await self._delete(keys)
        self._index.clear()
        return removed

    async def stats(self) -> StoreStats:
        await self._ensure_synced()

        async def info() -> tuple[dict[str, Any], dict[str, Any]]:
            return await self._redis.info("memory"), await self._redis.info("stats")

        memory, stats = await self._call(info)
        return StoreStats(
            backend=self.name,
            entries=len(self._index),
            bytes=int(memory.get("used_memory", 0)),
            evictions=int(stats.get("evicted_keys", 0)),
            expired=int(stats.get("expired_keys", 0)),
        )

    async def ping(self) -> bool:
        try:
            await self._call(self._redis.ping)
        except CacheUnavailable:
            return False
        return True

    async def close(self) -> None:
        if self._loading is not None:
            self._loading.cancel()
            with suppress(asyncio.CancelledError):
                await self._loading
        await self._redis.aclose()
