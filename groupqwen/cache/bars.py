"""Per-entry bars, learned online (after vCache): an entry whose answer was served for a question and
then regenerated (the client asked the same question again with ``Cache-Control: no-cache`` within
``window_s``) or disliked (``POST /v1/cache/feedback`` with the hit's id) was a wrong hit for that
question, so the entry raises its own bar above the score it was served at: halfway from that score to 1
(``TIGHTEN``). Its other neighbours, and every other entry, keep the shared bar; an entry regenerated
again rises again; a bar is never lowered.

``EntryBars`` is the seam, with two implementations: ``LocalBars`` (below: the embedded store's; bounded,
least-recently-used tables in the process, so a replica learns from the requests it serves) and
``RedisBars`` (``redis_bars.py``: the Redis store's; the bar is a field of the entry's hash and the recent
serves are keys with a TTL, so every replica learns from, and applies, what any of them was told). The
scores are the stage's own: the verifier's probability, or the cosine where the threshold stage serves.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass
from typing import Protocol, TypeVar

from groupqwen.cache.stores import CacheEntry
from groupqwen.clock import SYSTEM_CLOCK, Clock

T = TypeVar("T")
TIGHTEN = 0.5
WINDOW_S = 600.0  # how long a serve can be taught by a regeneration or a dislike
MAX_SERVES = 100_000  # serves (and bars) a process keeps in ``LocalBars``


def raised(score: float) -> float:
    """The bar an entry wrongly served at ``score`` rises to (at least)."""
    return score + TIGHTEN * (1.0 - score)


class EntryBars(Protocol):
    """The bars entries have learned, and the recent semantic serves that may still teach one. The async
    methods raise ``CacheUnavailable`` when the bars' store cannot answer."""

    window_s: float

    def bar(self, entry: CacheEntry) -> float:
        """``entry``'s own bar (0.0: none learned, the shared bar rules), as read with the entry."""
        ...

    async def served(self, request_key: str, entry_key: str, score: float, hit_id: str) -> None:
        """A semantic hit ``hit_id``: ``entry_key``'s answer served for the question whose exact key is
        ``request_key``, at ``score``; remembered for ``window_s``."""
        ...

    async def regenerated(self, request_key: str) -> str | None:
        """The question was asked again, not reading the cache: the entry served for it within the window
        (if any) tightens its bar. Returns that entry's key."""
        ...

    async def disliked(self, hit_id: str) -> str | None:
        """The client says the hit ``hit_id`` did not answer its question: its entry tightens its bar (once
        per hit). Returns that entry's key; ``None`` for an unknown (or forgotten) id."""
        ...

    async def learned(self) -> int:
        """How many entries hold a bar of their own."""
        ...


@dataclass(frozen=True)
class _Serve:
    entry_key: str
    score: float
    at: float


class LocalBars:
    """``EntryBars`` in the process: each table bounded to ``max_size``, least recently used first out."""

    def __init__(
        self, clock: Clock = SYSTEM_CLOCK, window_s: float = WINDOW_S, max_size: int = MAX_SERVES
    ) -> None:
        self._clock = clock
        self.window_s = window_s
        self._max = max_size
        self._bars: OrderedDict[str, float] = OrderedDict()
        self._serves: OrderedDict[str, _Serve] = OrderedDict()  # by the question's exact key
        self._hits: OrderedDict[str, _Serve] = OrderedDict()  # by the hit's id

    def bar(self, entry: CacheEntry) -> float:
        return self._bars.get(entry.key, 0.0)

    async def served(self, request_key: str, entry_key: str, score: float, hit_id: str) -> None:
        serve = _Serve(entry_key, score, self._clock.time())
        for table, key in ((self._serves, request_key), (self._hits, hit_id)):
            _remember(table, key, serve, self._max)

    async def regenerated(self, request_key: str) -> str | None:
        serve = self._serves.pop(request_key, None)
        if serve is None or self._clock.time() - serve.at > self.window_s:
            return None
        return self._teach(serve)

    async def disliked(self, hit_id: str) -> str | None:
        """A hit id is kept for the last ``max_size`` hits, however old."""
        serve = self._hits.pop(hit_id, None)
        return None if serve is None else self._teach(serve)

    def _teach(self, serve: _Serve) -> str:
        bar = max(self._bars.get(serve.entry_key, 0.0), raised(serve.score))
        _remember(self._bars, serve.entry_key, bar, self._max)
        return serve.entry_key

    async def learned(self) -> int:
        return len(self._bars)


def _remember(table: OrderedDict[str, T], key: str, value: T, max_size: int) -> None:
    table[key] = value
    table.move_to_end(key)
    while len(table) > max_size:
        table.popitem(last=False)
