"""``RedisStore``: entries in Redis (shared by every gateway replica); neighbours found by the server's
own vector search when it has one, else in a local index kept in sync with Redis.

Layout under ``prefix`` (default ``groupqwen:cache:``):

- ``{prefix}e:{key}``: a hash per entry (scope, model, text, vector as float32 bytes, answer JSON, created,
  expires) with the entry's TTL as a Redis ``EXPIRE``; the exact-match layer is one ``HGETALL``.

With a search module (RediSearch, Redis Stack, Redis 8, valkey-search: the server answers ``FT._LIST``):

- ``{prefix}idx:{dim}``: an index per embedding dimension over the entry hashes, ``scope`` a case-sensitive
  ``TAG`` and ``vector`` an HNSW ``VECTOR`` (float32, cosine). A search is one ``FT.SEARCH`` KNN query
  filtered by the scope tag; the server drops expired and deleted hashes from the index itself. The index
  is created when missing (at the first call, after an outage, after a ``FLUSHALL``).

Without one (any Redis or Valkey, or ``vector_search=False``):

- ``{prefix}events``: a stream of ``put`` (with scope and vector) and ``del`` events, capped at
  ``max_events``. Each replica keeps a local ``VectorIndex`` in sync by reading the events it has not seen
  before every search, and loads every entry with ``SCAN`` on start and after an outage.

Redis stays the truth: a candidate the local index offers is read back from Redis before it is served, so
an entry that expired, was invalidated or whose event was trimmed away is never served, only missed. Every
call has a ``timeout_s`` bound; after a failure the store answers ``CacheUnavailable`` at once for
``retry_after_s``, then tries Redis again (and probes for the search module again).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import suppress
from functools import partial
from typing import Any, TypeVar

import numpy as np
import redis.asyncio as aioredis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import RedisError, ResponseError

from groupqwen import log
from groupqwen.cache.index import VectorIndex, Vectors
from groupqwen.cache.stores import Answer, CacheEntry, Invalidation, StoreStats
from groupqwen.errors import CacheUnavailable

_log = log.get(__name__)
T = TypeVar("T")
_SCAN_BATCH = 1000
_DELETE_BATCH = 1000
_EVENTS_PER_SEARCH = 2000  # a lagging replica catches up over several searches, each within its timeout
_FIELDS = ("scope", "model", "text", "vector", "answer", "created", "expires")
_DISTANCE = "__distance"  # the KNN distance's name in an FT.SEARCH reply
_TAG_PLAIN = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_")


def _tag(value: str) -> str:
    """``value`` as a literal in a TAG query: every character with a meaning there backslash-escaped."""
    return "".join(c if c in _TAG_PLAIN else "\\" + c for c in value)


def _hits(reply: Any) -> list[tuple[bytes, dict[bytes, Any]]]:
    """Key names and fields of an ``FT.SEARCH`` reply, RESP3 (a map) or RESP2 (a flat array)."""
    if isinstance(reply, dict):
        return [(hit[b"id"], hit.get(b"extra_attributes") or {}) for hit in reply.get(b"results", [])]
    out = []
    for name, fields in zip(reply[1::2], reply[2::2], strict=True):
        flat = list(fields or [])
        out.append((name, dict(zip(flat[0::2], flat[1::2], strict=True))))
    return out


def _info_field(reply: Any, field: bytes) -> Any:
    """One field of an ``FT.INFO`` reply, RESP3 (a map) or RESP2 (a flat array)."""
    if isinstance(reply, dict):
        return reply.get(field)
    flat = list(reply)
    return dict(zip(flat[0::2], flat[1::2], strict=True)).get(field)


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
        vector_search: bool = True,
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
        self._dim = dim
        self._search_index = f"{prefix}idx:{dim}"
        # whether the server's search module finds neighbours: None until probed (at the first call that
        # needs it, and again after a failure); always False with ``vector_search=False``
        self.vector_search: bool | None = None if vector_search else False
        self._want_search = vector_search
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

    async def _command(self, *args: str | bytes) -> Any:
        """A raw command (the ``FT.*`` ones), its reply as the server sent it."""
        return await self._redis.execute_command(*args)  # type: ignore[no-untyped-call]

    async def _call(self, make: Callable[[], Awaitable[T]], timeout_s: float | None = None) -> T:
        if self._down_until > time.monotonic():
            raise CacheUnavailable("Redis is unavailable; retrying shortly")
        try:
            async with asyncio.timeout(timeout_s or self._timeout_s):
                result = await make()
        except (RedisError, OSError, TimeoutError) as exc:
            self.failures += 1
            self._synced = False  # events may be missed while away: reload on return
            if self._want_search:
                self.vector_search = None  # the server may have restarted: probe it (and the index) again
            self._down_until = time.monotonic() + self._retry_after_s
            _log.warning("redis cache unavailable", error=f"{type(exc).__name__}: {exc}"[:200])
            raise CacheUnavailable(f"Redis cache unavailable: {type(exc).__name__}") from None
        return result

    async def _probe(self) -> bool:
        """Inside a ``_call``: whether the server does the vector search, its index created if missing."""
        if self.vector_search is None:
            try:
                names = await self._command("FT._LIST")
            except ResponseError:  # unknown command: no search module
                self.vector_search = False
                _log.info("redis has no search module: neighbours are found in a local index")
            else:
                if self._search_index.encode() not in set(names):
                    await self._create_index()
                self.vector_search = True
        return self.vector_search

    async def _create_index(self) -> None:
        schema = ["scope", "TAG", "CASESENSITIVE", "vector", "VECTOR", "HNSW", "6"]
        schema += ["TYPE", "FLOAT32", "DIM", str(self._dim), "DISTANCE_METRIC", "COSINE"]
        try:
            await self._command(
                "FT.CREATE",
                self._search_index,
                "ON",
                "HASH",
                "PREFIX",
                "1",
                self._entry_key(""),
                "SCHEMA",
                *schema,
            )
        except ResponseError as exc:
            if "already exists" not in str(exc).lower():  # another replica was first: fine
                raise
        else:
            _log.info("redis vector index created", index=self._search_index)

    async def sync(self) -> None:
        """Load or catch up the local index completely (bounded by ``sync_timeout_s``); with the server's
        vector search there is nothing to load."""
        if await self._call(self._probe):
            return
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
            applied = self._apply_events(batch)
            read += applied
            if applied < _SCAN_BATCH:
                return

    def _apply_events(self, batch: Any) -> int:
        """Fold one ``XREAD`` reply into the local index; how many events it held."""
        if not batch:
            return 0
        events = batch[0][1]
        for event_id, fields in events:
            self._last_event = event_id
            op, key = fields.get(b"op"), fields.get(b"key", b"").decode()
            if op == b"put":
                self._add_local(fields[b"scope"].decode(), key, fields[b"vector"])
            elif op == b"del":
                self._index.remove([key])
        return len(events)

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

    async def holds(self, scope: str) -> bool:
        """From the local index, caught up first when the scope looks empty (a scope it holds is caught up
        by the search that follows: one round trip, not two); with the server's vector search: True (it
        cannot tell without a query of its own)."""
        if self.vector_search is not False and await self._call(self._probe):
            return True
        if self._index.holds(scope):
            return True
        await self._ensure_synced()
        return self._index.holds(scope)

    async def search(self, scope: str, vector: Vectors, k: int) -> list[tuple[CacheEntry, float]]:
        if self.vector_search is not False:
            found_remotely = await self._call(lambda: self._knn(scope, vector, k))
            if found_remotely is not None:
                return found_remotely
        if not self._synced:
            await self._ensure_synced()  # loads in the background; meanwhile, what is loaded so far
        found = self._index.search(scope, vector, k)
        rows: dict[str, Any] = {}
        if self._synced:
            # one round trip: the events since the last look and these candidates' entries, pipelined
            events, rows = await self._call(lambda: self._catch_up_and_fetch([key for key, _ in found]))
            if events:  # the index moved: a candidate may have come or gone (rarely: a second trip)
                if events >= _SCAN_BATCH:
                    await self._call(lambda: self._read_events(_EVENTS_PER_SEARCH))
                found = self._index.search(scope, vector, k)
        missing = [key for key, _ in found if key not in rows]
        if missing:
            _, more = await self._call(lambda: self._catch_up_and_fetch(missing, events=False))
            rows |= more
        out, gone = [], []
        for key, score in found:
            entry = self._decode(key, rows[key])
            if entry is None:
                gone.append(key)
            else:
                out.append((entry, score))
        self._index.remove(gone)  # expired or deleted while we did not look
        return out

    async def _catch_up_and_fetch(
        self, keys: list[str], *, events: bool = True
    ) -> tuple[int, dict[str, Any]]:
        """Inside a ``_call``, one pipelined round trip: the entries of ``keys`` (``HMGET`` rows) and, with
        ``events``, a batch of events folded into the local index; how many events it held, and the rows."""
        pipe = self._redis.pipeline(transaction=False)
        if events:
            pipe.xread({self._events: self._last_event}, count=_SCAN_BATCH)
        for key in keys:
            pipe.hmget(self._entry_key(key), list(_FIELDS))
        replies = list(await pipe.execute())
        applied = self._apply_events(replies.pop(0)) if events else 0
        return applied, dict(zip(keys, replies, strict=True))

    async def _knn(self, scope: str, vector: Vectors, k: int) -> list[tuple[CacheEntry, float]] | None:
        """Inside a ``_call``: the server's ``k`` nearest entries of ``scope``; ``None`` without a search
        module. An index that vanished (``FLUSHALL``, a restart) is created again and the query retried."""
        query = np.asarray(vector, dtype=np.float32)
        if query.shape != (self._dim,) or k <= 0:
            return []
        args: list[str | bytes] = [f"(@scope:{{{_tag(scope)}}})=>[KNN {k} @vector $vector AS {_DISTANCE}]"]
        args += ["PARAMS", "2", "vector", query.tobytes(), "LIMIT", "0", str(k), "DIALECT", "2"]
        try:
            reply = await self._knn_reply(args)
        except ResponseError:  # the index may be gone (FLUSHALL, a restart): probe, create it, once more
            self.vector_search = None
            reply = await self._knn_reply(args)
        if reply is None:
            return None
        strip = len(self._entry_key(""))
        now = self._clock()
        out = []
        for name, fields in _hits(reply):
            entry = self._decode(name.decode()[strip:], [fields.get(f.encode()) for f in _FIELDS])
            distance = fields.get(_DISTANCE.encode())
            # never across scopes, even if a TAG matched more than this scope; never an expired entry
            if entry is None or distance is None or entry.scope != scope or entry.expired(now):
                continue
            out.append((entry, 1.0 - float(distance)))  # cosine distance → similarity
        out.sort(key=lambda hit: -hit[1])
        return out

    async def _knn_reply(self, args: list[str | bytes]) -> Any:
        return await self._command("FT.SEARCH", self._search_index, *args) if await self._probe() else None

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

        async def write() -> bool:
            remote = await self._probe()
            pipe = self._redis.pipeline(transaction=True)
            pipe.hset(name, mapping=mapping)  # type: ignore[arg-type]
            if entry.expires is not None:
                pipe.pexpireat(name, int(entry.expires * 1000))
            if not remote:
                pipe.xadd(self._events, event, maxlen=self._max_events, approximate=True)  # type: ignore[arg-type]
            await pipe.execute()
            return remote

        if not await self._call(write):
            self._index.add(entry.scope, entry.key, entry.vector)

    async def _delete(self, keys: list[str]) -> int:
        """Delete in batches, each within the sync timeout: a server-side vector index makes every
        deletion cost an index update, so clearing a large cache is many bounded calls, not one."""

        async def drop(batch: list[str]) -> int:
            remote = await self._probe()  # the server's index forgets deleted hashes by itself
            pipe = self._redis.pipeline(transaction=False)
            for key in batch:
                pipe.unlink(self._entry_key(key))
                if not remote:
                    pipe.xadd(
                        self._events, {"op": "del", "key": key}, maxlen=self._max_events, approximate=True
                    )
            results = await pipe.execute()
            return sum(int(r) for r in (results if remote else results[0::2]))

        removed = 0
        for start in range(0, len(keys), _DELETE_BATCH):
            batch = keys[start : start + _DELETE_BATCH]
            removed += await self._call(partial(drop, batch), self._sync_timeout_s)
            self._index.remove(batch)
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
        if not await self._call(self._probe):
            await self._ensure_synced()

        async def info() -> tuple[dict[str, Any], dict[str, Any], int]:
            entries = len(self._index)
            if await self._probe():
                entries = int(_info_field(await self._command("FT.INFO", self._search_index), b"num_docs"))
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
