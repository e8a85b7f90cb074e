"""Where cached answers live. ``VectorStore`` is the seam; ``EmbeddedStore`` (SQLite file + in-process
index, also the in-memory fake with ``path=None``) and ``RedisStore`` (``redis_store.py``) implement it.

A store keeps entries under a ``key`` (``scope:exact-digest``) and finds near neighbours inside a scope;
policy (what is cacheable, thresholds) lives in ``policy.py``, the guard in ``guard.py``.
"""

from __future__ import annotations

import asyncio
import fnmatch
import heapq
import itertools
import json
import sqlite3
from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol, runtime_checkable

import numpy as np

from groupqwen import log
from groupqwen.cache.index import VectorIndex, Vectors
from groupqwen.clock import SYSTEM_CLOCK, Clock
from groupqwen.messages import FinishReason

_log = log.get(__name__)
COMMIT_AFTER_S = 0.05  # the embedded store's writes within this long share one SQLite commit


@dataclass(frozen=True)
class Answer:
    content: str
    reasoning: str
    finish_reason: FinishReason
    prompt_tokens: int
    completion_tokens: int

    def to_json(self) -> str:
        # its fields as they are (flat: no copy of them, as ``asdict`` would make), in their order
        return json.dumps(vars(self), separators=(",", ":"), ensure_ascii=False)

    @classmethod
    def from_json(cls, text: str | bytes) -> Answer:
        data = json.loads(text)
        return cls(
            content=str(data["content"]),
            reasoning=str(data["reasoning"]),
            finish_reason="length" if data["finish_reason"] == "length" else "stop",
            prompt_tokens=int(data["prompt_tokens"]),
            completion_tokens=int(data["completion_tokens"]),
        )


@dataclass(frozen=True)
class CacheEntry:
    key: str  # f"{scope}:{exact digest}"
    scope: str
    model: str  # the model that answered
    text: str  # the normalised last user turn (for the guard and pattern invalidation)
    vector: Vectors = field(compare=False, repr=False)
    answer: Answer
    created: float
    expires: float | None  # epoch seconds; None: never
    bar: float = field(default=0.0, compare=False)  # its own learned bar, where the store keeps it (Redis)

    def expired(self, now: float) -> bool:
        return self.expires is not None and self.expires <= now

    def size(self, answer_json: str | None = None) -> int:
        """Its bytes (``answer_json``: its answer's ``to_json()``, when already made)."""
        answer = self.answer.to_json() if answer_json is None else answer_json
        return len(self.key) + len(self.text.encode()) + len(answer.encode()) + self.vector.nbytes


@dataclass(frozen=True)
class Invalidation:
    """Which entries to drop: all given conditions must hold; none given drops nothing (use ``clear``)."""

    model: str | None = None
    older_than_s: float | None = None
    pattern: str | None = None  # a glob on the cached prompt text, e.g. "*weather*"

    def empty(self) -> bool:
        return self.model is None and self.older_than_s is None and self.pattern is None

    def matches(self, model: str, text: str, created: float, now: float) -> bool:
        if self.empty():
            return False
        if self.model is not None and model != self.model:
            return False
        if self.older_than_s is not None and now - created < self.older_than_s:
            return False
        return self.pattern is None or fnmatch.fnmatchcase(text, self.pattern.lower())


@dataclass(frozen=True)
class StoreStats:
    backend: str
    entries: int
    bytes: int
    evictions: int
    expired: int


@runtime_checkable
class VectorStore(Protocol):
    """Raises ``CacheUnavailable`` when it cannot answer; never blocks longer than its timeout.

    ``put`` runs in a background task (``SemanticCache.store``), concurrently with ``get`` and ``search``
    of other requests; ``SemanticCache`` orders it before its own process's later reads of the same entry
    and before ``invalidate`` and ``clear``."""

    name: str

    async def get(self, key: str) -> CacheEntry | None: ...

    async def search(self, scope: str, vector: Vectors, k: int) -> list[tuple[CacheEntry, float]]: ...

    async def holds(self, scope: str) -> bool:
        """Whether ``scope`` may hold entries; True when the store cannot tell cheaply. False lets a lookup
        skip the embedding: nothing there to be near."""
        ...

    async def put(self, entry: CacheEntry) -> None: ...

    async def invalidate(self, selector: Invalidation) -> int: ...

    async def clear(self) -> int: ...

    async def stats(self) -> StoreStats: ...

    async def ping(self) -> bool | None:
        """Whether the store answers now: a remote one is asked (True or False, never raising); an
        in-process one has nothing to ask and answers ``None``."""
        ...

    @property
    def degraded(self) -> bool:
        """Whether the store knows, without asking, that it cannot answer now (Redis after a failure,
        until it tries again)."""
        ...

    async def close(self) -> None: ...


_SCHEMA = """
CREATE TABLE IF NOT EXISTS entries (
    key TEXT PRIMARY KEY, scope TEXT NOT NULL, model TEXT NOT NULL, text TEXT NOT NULL,
    vector BLOB NOT NULL, answer TEXT NOT NULL, created REAL NOT NULL, expires REAL
)
"""
_INSERT = "INSERT OR REPLACE INTO entries VALUES (?, ?, ?, ?, ?, ?, ?, ?)"
_Row = tuple[str, str, str, str, bytes, str, float, float | None]


class EmbeddedStore:
    """Entries in memory and in a SQLite file (``path``; ``None``: memory only), reloaded on start.

    At most ``max_entries``: the least recently used entry is evicted first. Expired entries are dropped
    when met and at every ``purge_every``-th store (found by their expiry times, kept in a heap: no walk
    over every entry); expiry is on ``clock``'s wall time. A store's row is
    written to the file ``COMMIT_AFTER_S`` after it (the stores meanwhile share one ``executemany`` and one
    commit: a statement and a commit per miss cost a tenth of a millisecond on the event loop, and each let
    the embeddings' threads take the GIL from it), a removal at once; ``close`` writes what is still due.
    A crash loses at most that last moment's answers, never the process's own reads, which are served
    from memory.
    """

    name = "embedded"

    def __init__(
        self,
        path: Path | None,
        dim: int,
        *,
        max_entries: int,
        clock: Clock = SYSTEM_CLOCK,
        purge_every: int = 256,
    ) -> None:
        self._clock = clock
        self._max_entries = max_entries
        self._purge_every = purge_every
        self._puts = 0
        self._bytes = 0
        self.evictions = 0
        self.expired = 0
        self._index = VectorIndex(dim)
        self._entries: OrderedDict[str, CacheEntry] = OrderedDict()
        self._commit_at: asyncio.TimerHandle | None = None  # the stores' commit, when one is due
        self._due: dict[str, _Row] = {}  # the rows of the stores since the last commit, by key
        self._expiries: list[tuple[float, str]] = []  # a heap of (expires, key); a key gone or stored
        # again since leaves its pair behind, skipped when met
        self._commit_failed = False  # the last commit failed: ``degraded`` until one succeeds
        if path is not None:
            path.parent.mkdir(parents=True, exist_ok=True)
        self._db = sqlite3.connect(str(path) if path is not None else ":memory:", check_same_thread=False)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.execute(_SCHEMA)
        self._load()

    def _load(self) -> None:
        now = self._clock.time()
        self._db.execute("DELETE FROM entries WHERE expires IS NOT NULL AND expires <= ?", (now,))
        self._db.commit()
        rows = self._db.execute(
            "SELECT key, scope, model, text, vector, answer, created, expires FROM entries ORDER BY created"
        )
        for key, scope, model, text, vector, answer, created, expires in rows:
            vec = np.frombuffer(vector, dtype=np.float32).copy()
            if vec.shape != (self._index.dim,):
                continue  # written by another embedder: unusable
            entry = CacheEntry(key, scope, model, text, vec, Answer.from_json(answer), created, expires)
            self._remember(entry)

    def _remember(self, entry: CacheEntry, answer_json: str | None = None) -> None:
        self._forget([entry.key])
        self._entries[entry.key] = entry
        self._bytes += entry.size(answer_json)
        self._index.add(entry.scope, entry.key, entry.vector)
        if entry.expires is not None:
            heapq.heappush(self._expiries, (entry.expires, entry.key))
            if len(self._expiries) > 2 * len(self._entries) + 64:  # mostly pairs left behind: rebuild
                self._expiries = [(e.expires, k) for k, e in self._entries.items() if e.expires is not None]
                heapq.heapify(self._expiries)

    def _expired(self, now: float) -> list[str]:
        """The keys of the entries expired at ``now``."""
        keys: dict[str, None] = {}
        while self._expiries and self._expiries[0][0] <= now:
            _, key = heapq.heappop(self._expiries)
            entry = self._entries.get(key)
            if entry is not None and entry.expired(now):
                keys[key] = None
        return list(keys)

    def _forget(self, keys: list[str]) -> None:
        for key in keys:
            old = self._entries.pop(key, None)
            if old is not None:
                self._bytes -= old.size()
        self._index.remove(keys)

    def _delete(self, keys: list[str]) -> int:
        present = [k for k in keys if k in self._entries]
        self._forget(present)
        for key in present:  # a row not written yet is not written at all
            self._due.pop(key, None)
        self._db.executemany("DELETE FROM entries WHERE key = ?", [(k,) for k in present])
        self._db.commit()
        return len(present)

    def _live(self, key: str, now: float) -> CacheEntry | None:
        entry = self._entries.get(key)
        if entry is None:
            return None
        if entry.expired(now):
            self.expired += self._delete([key])
            return None
        self._entries.move_to_end(key)
        return entry

    async def get(self, key: str) -> CacheEntry | None:
        return self._live(key, self._clock.time())

    async def holds(self, scope: str) -> bool:
        return self._index.holds(scope)

    async def search(self, scope: str, vector: Vectors, k: int) -> list[tuple[CacheEntry, float]]:
        now = self._clock.time()
        out = []
        for key, score in self._index.search(scope, vector, k):
            entry = self._live(key, now)
            if entry is not None:
                out.append((entry, score))
        return out

    async def put(self, entry: CacheEntry) -> None:
        answer = entry.answer.to_json()
        self._remember(entry, answer)
        vector = entry.vector.astype(np.float32).tobytes()
        row = (entry.key, entry.scope, entry.model, entry.text, vector, answer, entry.created, entry.expires)
        self._due[entry.key] = row
        self._puts += 1
        if self._puts % self._purge_every == 0:
            now = self._clock.time()
            self.expired += self._delete(self._expired(now))
        if len(self._entries) > self._max_entries:
            excess = list(itertools.islice(self._entries, len(self._entries) - self._max_entries))
            self.evictions += self._delete(excess)
        if self._commit_at is None:
            self._commit_at = asyncio.get_running_loop().call_later(COMMIT_AFTER_S, self._commit)

    def _commit(self) -> None:
        """Write the rows due and commit; on failure they stay due, for the next commit."""
        self._commit_at = None
        try:
            if self._due:
                self._db.executemany(_INSERT, self._due.values())
                self._due.clear()
            self._db.commit()
        except sqlite3.Error as exc:  # a full disk: the answers stay served from memory
            self._commit_failed = True
            _log.warning("cache file commit failed", error=str(exc))
        else:
            self._commit_failed = False

    async def invalidate(self, selector: Invalidation) -> int:
        now = self._clock.time()
        doomed = [k for k, e in self._entries.items() if selector.matches(e.model, e.text, e.created, now)]
        return self._delete(doomed)

    async def clear(self) -> int:
        count = len(self._entries)
        self._entries.clear()
        self._index.clear()
        self._bytes = 0
        self._due.clear()
        self._expiries.clear()
        self._db.execute("DELETE FROM entries")
        self._db.commit()
        return count

    async def stats(self) -> StoreStats:
        return StoreStats(self.name, len(self._entries), self._bytes, self.evictions, self.expired)

    async def ping(self) -> None:
        return None  # in-process: nothing to ask

    @property
    def degraded(self) -> bool:
        return self._commit_failed

    async def close(self) -> None:
        if self._commit_at is not None:
            self._commit_at.cancel()
        if self._commit_at is not None or self._due:
            self._commit()
        self._db.close()
