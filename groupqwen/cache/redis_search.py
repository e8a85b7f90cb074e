"""The server's own vector search, when Redis has a search module (RediSearch: Redis Stack, Redis 8;
valkey-search speaks the same commands): one of ``RedisStore``'s two ways of finding neighbours.

``{prefix}idx:{dim}`` is an index per embedding dimension over the entry hashes, ``scope`` a
case-sensitive ``TAG`` and ``vector`` an HNSW ``VECTOR`` (float32, cosine). A search is one ``FT.SEARCH``
KNN query filtered by the scope tag; the server drops expired and deleted hashes from the index itself.
Whether the server has the module is probed (``FT._LIST``) at the first call and again after every
failure; the index is created when missing (at the first call, after an outage, after a ``FLUSHALL``).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import redis.asyncio as aioredis
from redis.exceptions import ResponseError

from groupqwen import log
from groupqwen.cache.index import Vectors
from groupqwen.cache.redis_entries import FIELDS, Names, decode
from groupqwen.cache.stores import CacheEntry
from groupqwen.clock import Clock

_log = log.get(__name__)
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


class ServerSearch:
    """Neighbours found by the server. Every method runs inside the store's ``Call``.

    ``available``: whether the server does the search; ``None`` until probed (at the first call that
    needs it, and again after a failure: ``forget``); always False when not ``enabled``."""

    def __init__(self, redis: aioredis.Redis, names: Names, dim: int, *, enabled: bool, clock: Clock) -> None:
        self._redis = redis
        self._names = names
        self._dim = dim
        self._enabled = enabled
        self._clock = clock
        self.index = f"{names.prefix}idx:{dim}"
        self.available: bool | None = None if enabled else False

    def forget(self) -> None:
        """After a failure: the server may have restarted (without the module, or the index): probe again."""
        if self._enabled:
            self.available = None

    async def _command(self, *args: str | bytes) -> Any:
        """A raw command (the ``FT.*`` ones), its reply as the server sent it."""
        return await self._redis.execute_command(*args)  # type: ignore[no-untyped-call]

    async def probe(self) -> bool:
        """Whether the server does the vector search, its index created if missing."""
        if self.available is None:
            try:
                names = await self._command("FT._LIST")
            except ResponseError:  # unknown command: no search module
                self.available = False
                _log.info("redis has no search module: neighbours are found in a local index")
            else:
                if self.index.encode() not in set(names):
                    await self._create_index()
                self.available = True
        return self.available

    async def _create_index(self) -> None:
        schema = ["scope", "TAG", "CASESENSITIVE", "vector", "VECTOR", "HNSW", "6"]
        schema += ["TYPE", "FLOAT32", "DIM", str(self._dim), "DISTANCE_METRIC", "COSINE"]
        try:
            await self._command(
                "FT.CREATE", self.index, "ON", "HASH", "PREFIX", "1", self._names.entry(""), "SCHEMA", *schema
            )
        except ResponseError as exc:
            if "already exists" not in str(exc).lower():  # another replica was first: fine
                raise
        else:
            _log.info("redis vector index created", index=self.index)

    async def knn(self, scope: str, vector: Vectors, k: int) -> list[tuple[CacheEntry, float]] | None:
        """The server's ``k`` nearest entries of ``scope``; ``None`` without a search module. An index that
        vanished (``FLUSHALL``, a restart) is created again and the query retried."""
        query = np.asarray(vector, dtype=np.float32)
        if query.shape != (self._dim,) or k <= 0:
            return []
        args: list[str | bytes] = [f"(@scope:{{{_tag(scope)}}})=>[KNN {k} @vector $vector AS {_DISTANCE}]"]
        args += ["PARAMS", "2", "vector", query.tobytes(), "LIMIT", "0", str(k), "DIALECT", "2"]
        try:
            reply = await self._knn_reply(args)
        except ResponseError:  # the index may be gone (FLUSHALL, a restart): probe, create it, once more
            self.available = None
            reply = await self._knn_reply(args)
        if reply is None:
            return None
        now = self._clock.time()
        out = []
        for name, fields in _hits(reply):
            entry = decode(self._names.key_of(name), [fields.get(f.encode()) for f in FIELDS])
            distance = fields.get(_DISTANCE.encode())
            # never across scopes, even if a TAG matched more than this scope; never an expired entry
            if entry is None or distance is None or entry.scope != scope or entry.expired(now):
                continue
            out.append((entry, 1.0 - float(distance)))  # cosine distance → similarity
        out.sort(key=lambda hit: -hit[1])
        return out

    async def _knn_reply(self, args: list[str | bytes]) -> Any:
        return await self._command("FT.SEARCH", self.index, *args) if await self.probe() else None

    async def size(self) -> int:
        """How many entries the index holds."""
        return int(_info_field(await self._command("FT.INFO", self.index), b"num_docs"))
