"""How ``RedisStore`` lays entries out in Redis, shared by its two ways of finding neighbours: key names
under the prefix, an entry's hash fields and their encoding, a ``SCAN`` over every entry, and the
``Call`` that bounds each use of the server (the store's timeout and circuit breaker).

An entry is a hash ``{prefix}e:{key}`` (scope, model, text, vector as float32 bytes, answer JSON,
created, expires, and once learned its own bar) with the entry's TTL as a Redis ``PEXPIREAT``. The learned
bars' bookkeeping (``redis_bars.py``): ``{prefix}bars``, a sorted set of the entries holding one (scored by
their expiry), and the recent serves ``{prefix}s:q:{question's key}`` and ``{prefix}s:h:{hit id}``.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, Protocol, TypeVar

import numpy as np
import redis.asyncio as aioredis

from groupqwen.cache.stores import Answer, CacheEntry

T = TypeVar("T")
FIELDS = ("scope", "model", "text", "vector", "answer", "created", "expires", "bar")
SCAN_BATCH = 1000


class Call(Protocol):
    """Runs ``make()`` against Redis within ``timeout_s`` (default: the store's), or raises
    ``CacheUnavailable`` (at once while the store's circuit is open)."""

    async def __call__(self, make: Callable[[], Awaitable[T]], timeout_s: float | None = None) -> T: ...


class Names:
    """The store's key names under ``prefix``."""

    def __init__(self, prefix: str) -> None:
        self.prefix = prefix
        self.events = f"{prefix}events"
        self.bars = f"{prefix}bars"
        self._entries = f"{prefix}e:"

    def serve(self, request_key: str) -> str:
        return f"{self.prefix}s:q:{request_key}"

    def hit(self, hit_id: str) -> str:
        return f"{self.prefix}s:h:{hit_id}"

    def entry(self, key: str) -> str:
        return self._entries + key

    def key_of(self, name: bytes) -> str:
        """The entry key of a hash's name."""
        return name.decode()[len(self._entries) :]


def fields(entry: CacheEntry, vector: bytes) -> dict[str, str | bytes]:
    """``entry``'s hash (``vector``: its float32 bytes); a bar it learned is not written over."""
    return {
        "scope": entry.scope,
        "model": entry.model,
        "text": entry.text,
        "vector": vector,
        "answer": entry.answer.to_json(),
        "created": repr(entry.created),
        "expires": repr(entry.expires) if entry.expires is not None else "",
    }


def decode(key: str, row: list[Any]) -> CacheEntry | None:
    """An entry from its ``FIELDS`` in order (an ``HMGET``); ``None`` when it is gone."""
    scope, model, text, vector, answer, created, expires, bar = row
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
        bar=float(bar) if bar else 0.0,
    )


async def scan(
    redis: aioredis.Redis, names: Names, wanted: list[str]
) -> AsyncIterator[tuple[str, list[Any]]]:
    """Every entry's key and ``wanted`` fields, a ``SCAN`` batch (one pipelined round trip) at a time."""
    cursor: int = 0
    while True:
        page: Any = await redis.scan(cursor, match=names.entry("*"), count=SCAN_BATCH)
        cursor, found = int(page[0]), list(page[1])
        if found:
            pipe = redis.pipeline(transaction=False)
            for name in found:
                pipe.hmget(name, wanted)
            for name, row in zip(found, await pipe.execute(), strict=True):
                if row[0] is not None:
                    yield names.key_of(name), row
        if cursor == 0:
            return
