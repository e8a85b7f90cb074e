"""What teaches the entries' bars (``bars.py``), from ``SemanticCache``'s request path: a semantic hit is
remembered in the background (the hit does not wait for it), a regeneration or a dislike teaches the entry
served. Every step is bounded by the cache's ``timeout_s``; a failure is logged and counted (``errors``),
and a store that is down marks the cache degraded, as a failed write does. A failure only costs the
lesson: the request is answered all the same (a dislike's own request excepted: ``CacheUnavailable``)."""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import Awaitable, Callable
from contextlib import suppress
from typing import TypeVar

from groupqwen import log
from groupqwen.cache.bars import EntryBars
from groupqwen.cache.counters import Counters
from groupqwen.cache.keys import CacheKey
from groupqwen.cache.writes import Writes, settled
from groupqwen.errors import CacheSlow, CacheUnavailable

_log = log.get(__name__)
T = TypeVar("T")


class Lessons:
    """Teaches ``bars``; counts in ``counters``; a serve's record is one of ``writes`` (so the cache's
    drain waits for it, and a re-ask of the same question in this process reads it back); ``failed``:
    the cache's reaction to a store that is down."""

    def __init__(
        self,
        bars: EntryBars,
        counters: Counters,
        writes: Writes,
        *,
        timeout_s: float,
        failed: Callable[[], None],
    ) -> None:
        self.bars = bars
        self._counters = counters
        self._writes = writes
        self._timeout_s = timeout_s
        self._failed = failed

    def served(self, key: CacheKey, entry_key: str, score: float) -> str:
        """A semantic hit: ``entry_key``'s answer served for ``key``'s question at ``score``, remembered in
        the background. Returns the hit's id (unguessable: only its receiver can use it)."""
        hit_id = secrets.token_hex(12)
        record = self._quietly(self.bars.served(key.entry_key, entry_key, score, hit_id))
        task = asyncio.get_running_loop().create_task(record, name="cache-serve")
        self._writes.add(key.entry_key, key.scope, task)
        return hit_id

    async def regenerated(self, key: CacheKey) -> None:
        """``key``'s question asked again, not reading the cache."""
        serving = self._writes.by_key.get(key.entry_key)
        if serving is not None:  # this process's record of a serve for the question lands first
            await settled([serving])
        with suppress(CacheUnavailable):
            if await self._bounded(self.bars.regenerated(key.entry_key)) is not None:
                self._counters.regenerated += 1

    async def disliked(self, hit_id: str) -> bool:
        """False: an unknown id (or an entry gone); ``CacheUnavailable`` when the bars' store fails."""
        known = await self._bounded(self.bars.disliked(hit_id)) is not None
        self._counters.disliked += known
        return known

    async def _quietly(self, step: Awaitable[None]) -> None:
        with suppress(CacheUnavailable):
            await self._bounded(step)

    async def _bounded(self, step: Awaitable[T]) -> T:
        """``step`` within the timeout; a failure logged and counted, then raised as ``CacheUnavailable``
        (``CacheSlow`` when it was slow)."""
        try:
            async with asyncio.timeout(self._timeout_s):
                return await step
        except (CacheSlow, TimeoutError) as exc:
            self._counters.errors += 1
            _log.info("cache bar not learned", error=type(exc).__name__)
            raise CacheSlow("the cache store was slow to answer") from None
        except CacheUnavailable as exc:
            self._failed()
            _log.warning("cache bar not learned", error=type(exc).__name__)
            raise
