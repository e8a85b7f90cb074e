"""Neighbours found in a local index kept in sync with Redis, when the server has no vector search (any
Redis or Valkey, or ``RedisStore(..., vector_search=False)``): the other of ``RedisStore``'s two ways.

Every put and delete also goes to ``{prefix}events``, a stream capped at ``max_events``. Each replica
keeps a ``VectorIndex`` of every entry: it loads it with ``SCAN`` in the background at start and after an
outage (searches meanwhile see what is loaded so far: misses, never errors), and before every search it
applies the events it has not seen (at most ``EVENTS_PER_SEARCH``: a lagging replica catches up over
several searches), in the round trip that fetches the candidates' entries. Redis stays the truth: a
candidate is read back before it is served, so an entry that expired, was invalidated or whose event was
trimmed away is missed, never served.
"""

from __future__ import annotations

import asyncio
from contextlib import suppress
from typing import Any

import numpy as np
import redis.asyncio as aioredis

from groupqwen.cache.index import VectorIndex, Vectors
from groupqwen.cache.redis_entries import FIELDS, SCAN_BATCH, Call, Names, decode, scan
from groupqwen.cache.stores import CacheEntry
from groupqwen.errors import CacheUnavailable

EVENTS_PER_SEARCH = 2000  # a lagging replica catches up over several searches, each within its timeout


class LocalIndex:
    """This replica's index of every entry, fed by the event stream; uses Redis through ``call``."""

    def __init__(
        self,
        redis: aioredis.Redis,
        names: Names,
        dim: int,
        *,
        call: Call,
        max_events: int,
        sync_timeout_s: float,
    ) -> None:
        self._redis = redis
        self._names = names
        self._call = call
        self._max_events = max_events
        self._sync_timeout_s = sync_timeout_s
        self.index = VectorIndex(dim)
        self._last_event = b"0-0"
        self._synced = False
        self._loading: asyncio.Task[None] | None = None

    def forget(self) -> None:
        """After a failure: events may be missed while Redis is away, so the index is loaded again."""
        self._synced = False

    # -- keeping up with Redis -----------------------------------------------------------------------

    async def sync(self) -> None:
        """Load or catch up completely (bounded by ``sync_timeout_s``)."""
        await self.ensure_synced()
        if self._loading is not None:
            await asyncio.shield(self._loading)
        await self._call(self._read_events, self._sync_timeout_s)

    async def ensure_synced(self) -> None:
        """Catch up with a few events; when the index was never loaded (start, after an outage), load
        it in the background: searches meanwhile see what is loaded so far (misses, never errors)."""
        if self._synced:
            await self._call(lambda: self._read_events(EVENTS_PER_SEARCH))
        elif self._loading is None or self._loading.done():
            self._loading = asyncio.get_running_loop().create_task(self._load())

    async def _load(self) -> None:
        with suppress(CacheUnavailable):
            await self._call(self._full_sync, self._sync_timeout_s)
            self._synced = True

    async def _full_sync(self) -> None:
        last: Any = await self._redis.xrevrange(self._names.events, "+", "-", count=1)
        self._last_event = last[0][0] if last else b"0-0"
        self.index.clear()
        async for key, (scope, vector) in scan(self._redis, self._names, ["scope", "vector"]):
            self._add(scope.decode(), key, vector)
        await self._read_events()

    async def _read_events(self, limit: int | None = None) -> None:
        read = 0
        while limit is None or read < limit:
            batch: Any = await self._redis.xread({self._names.events: self._last_event}, count=SCAN_BATCH)
            applied = self._apply_events(batch)
            read += applied
            if applied < SCAN_BATCH:
                return

    def _apply_events(self, batch: Any) -> int:
        """Fold one ``XREAD`` reply into the index; how many events it held."""
        if not batch:
            return 0
        events = batch[0][1]
        for event_id, fields in events:
            self._last_event = event_id
            op, key = fields.get(b"op"), fields.get(b"key", b"").decode()
            if op == b"put":
                self._add(fields[b"scope"].decode(), key, fields[b"vector"])
            elif op == b"del":
                self.index.remove([key])
        return len(events)

    def _add(self, scope: str, key: str, vector: bytes) -> None:
        vec = np.frombuffer(vector, dtype=np.float32)
        if vec.shape == (self.index.dim,):
            self.index.add(scope, key, vec.copy())

    # -- telling the other replicas ------------------------------------------------------------------

    def log_put(self, pipe: Any, entry: CacheEntry, vector: bytes) -> None:
        """Add the event of ``entry``'s put to ``pipe`` (the put's own transaction)."""
        event: dict[str, str | bytes] = {"op": "put", "key": entry.key, "scope": entry.scope}
        event["vector"] = vector
        pipe.xadd(self._names.events, event, maxlen=self._max_events, approximate=True)

    def log_delete(self, pipe: Any, key: str) -> None:
        pipe.xadd(self._names.events, {"op": "del", "key": key}, maxlen=self._max_events, approximate=True)

    # -- finding neighbours --------------------------------------------------------------------------

    async def holds(self, scope: str) -> bool:
        """Whether ``scope`` has entries, caught up first when it looks empty (a scope it holds is caught
        up by the search that follows: one round trip, not two)."""
        if self.index.holds(scope):
            return True
        await self.ensure_synced()
        return self.index.holds(scope)

    async def search(self, scope: str, vector: Vectors, k: int) -> list[tuple[CacheEntry, float]]:
        if not self._synced:
            await self.ensure_synced()  # loads in the background; meanwhile, what is loaded so far
        found = self.index.search(scope, vector, k)
        rows: dict[str, Any] = {}
        if self._synced:
            # one round trip: the events since the last look and these candidates' entries, pipelined
            events, rows = await self._call(lambda: self._catch_up_and_fetch([key for key, _ in found]))
            if events:  # the index moved: a candidate may have come or gone (rarely: a second trip)
                if events >= SCAN_BATCH:
                    await self._call(lambda: self._read_events(EVENTS_PER_SEARCH))
                found = self.index.search(scope, vector, k)
        missing = [key for key, _ in found if key not in rows]
        if missing:
            _, more = await self._call(lambda: self._catch_up_and_fetch(missing, events=False))
            rows |= more
        out, gone = [], []
        for key, score in found:
            entry = decode(key, rows[key])
            if entry is None:
                gone.append(key)
            else:
                out.append((entry, score))
        self.index.remove(gone)  # expired or deleted while we did not look
        return out

    async def _catch_up_and_fetch(
        self, keys: list[str], *, events: bool = True
    ) -> tuple[int, dict[str, Any]]:
        """One pipelined round trip: the entries of ``keys`` (``HMGET`` rows) and, with ``events``, a batch
        of events folded into the index; how many events it held, and the rows."""
        pipe = self._redis.pipeline(transaction=False)
        if events:
            pipe.xread({self._names.events: self._last_event}, count=SCAN_BATCH)
        for key in keys:
            pipe.hmget(self._names.entry(key), list(FIELDS))
        replies = list(await pipe.execute())
        applied = self._apply_events(replies.pop(0)) if events else 0
        return applied, dict(zip(keys, replies, strict=True))

    async def close(self) -> None:
        if self._loading is not None:
            self._loading.cancel()
            with suppress(asyncio.CancelledError):
                await self._loading
