"""``SemanticCache``: what may be cached, under which scope, and when a neighbour is close enough.

A lookup is an exact match first (the scope plus the normalised last user turn, hashed), then a semantic
one: the last user turn is embedded and its nearest neighbours *in the same scope* are tried, best first.
With the verifier (``verifier.py``: the bundled embedder, ``cache.verifier`` on) every neighbour at or above
its floor is a candidate, served when the verifier's probability reaches the bar that the accepted
false-hit rate maps to (the request's, else the policy's); without it, one at or above ``threshold`` that
the guard (``guard.py``) accepts. An entry may have learned a stricter bar of its own (``bars.py``: in the
process, or in Redis with the entry), taught by ``lessons.py``. The
two layers can run apart (``lookup_exact``, then ``lookup_similar`` on its ``pending`` result), so that the
orchestrator overlaps the embedding with the start of generation.

``store`` keeps only answers worth reusing (``answers.py``), and does not wait for the vector store: it
schedules the write as a background task and returns, so a miss's last delta never waits for Redis or SQLite.
Within the process a write is read back all the same: the exact layer waits for a write in flight to the same
key, the semantic layer (after its embedding) for the writes to its scope scheduled before it began, both
within the lookup's timeout; with nothing in flight neither waits. ``invalidate`` and ``clear`` first let the
writes scheduled before them land (or cancel those that outlast the drain), so a write never brings back what
they dropped; ``stats`` waits for them too, and ``close`` drains them before closing the store. Other
processes see a write once it has landed (milliseconds).

The scope hashes everything else that shapes an answer (``keys.py``). Requests the policy refuses
(``policy.py``: hotter than ``max_temperature``, with a ``seed`` unless ``cache_seeded``, asking for
logprobs, or not ending on a user turn) are bypassed. A store or embedder that fails or is slow makes the
lookup a bypass: the request goes on without the cache. Only a failure (a store down, an embedder
failing) makes ``health()`` say ``degraded`` until the store answers again; a slow answer (``CacheSlow``,
or a lookup step that outlasts ``timeout_s``) costs that request its lookup and nothing more. Each bypass
is counted by its reason (``policy.BYPASS_REASONS``) in ``stats()``.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable
from typing import Literal, TypeVar

from groupqwen import log
from groupqwen.cache.answers import unworthy
from groupqwen.cache.bars import EntryBars, LocalBars
from groupqwen.cache.counters import CacheStats, Counters
from groupqwen.cache.embedders import Embedder, Vectors
from groupqwen.cache.embedding import EmbeddingThreads
from groupqwen.cache.guard import Guard, LexicalGuard
from groupqwen.cache.keys import CacheKey, cache_key
from groupqwen.cache.lessons import Lessons
from groupqwen.cache.policy import BypassReason, CachePolicy, Lookup, Stage
from groupqwen.cache.stores import Answer, CacheEntry, Invalidation, VectorStore
from groupqwen.cache.verifier import Verifier
from groupqwen.cache.writes import Writes, settled
from groupqwen.clock import SYSTEM_CLOCK, Clock
from groupqwen.errors import CacheSlow, CacheUnavailable, EmbedderUnavailable
from groupqwen.messages import ChatRequest, Completion, Decision

_log = log.get(__name__)
T = TypeVar("T")


class SemanticCache:
    """The cache over ``store`` and ``embedder``. ``clock``'s wall time stamps the answers it keeps and
    decides when they expire (give the store the same clock), and the window in which a regeneration
    teaches the served entry its own bar (``bars.py``). ``verifier``: the second stage on candidates
    (``verifier.py``); ``None``: the threshold and the guard decide. ``bars``: where the entries' learned
    bars are kept (``RedisStore.bars()`` for a Redis store); by default in this process."""

    def __init__(
        self,
        store: VectorStore,
        embedder: Embedder,
        policy: CachePolicy,
        guard: Guard | None = None,
        clock: Clock = SYSTEM_CLOCK,
        verifier: Verifier | None = None,
        bars: EntryBars | None = None,
    ) -> None:
        self._store = store
        self.embedder = embedder
        self._embedding = EmbeddingThreads(embedder)  # the embeddings' own threads (``embedding.py``)
        self.policy = policy
        self.guard: Guard = guard or LexicalGuard()
        self.verifier = verifier
        self._clock = clock
        self._counters = Counters()
        self._degraded = False
        self._embedder_error: str | None = None  # why the last embedding failed; None once one works
        self._writes = Writes()
        self._lessons = Lessons(
            bars or LocalBars(clock),
            self._counters,
            self._writes,
            timeout_s=policy.timeout_s,
            failed=self._failed,
        )
        self.bars: EntryBars = self._lessons.bars

    # -- keys ----------------------------------------------------------------------------------------

    def key(self, request: ChatRequest, tenant: str, model: str) -> CacheKey | str:
        """The request's cache key (``keys.py``), or why it may not be cached."""
        refusal = self.policy.refusal(request)
        if refusal is not None:
            return refusal
        return cache_key(request, tenant, model, (self.embedder.name, self.embedder.dim))

    # -- the request path ----------------------------------------------------------------------------

    async def lookup(
        self,
        request: ChatRequest,
        tenant: str,
        model: str,
        *,
        read: bool = True,
        max_false_hit_rate: float | None = None,
    ) -> Lookup:
        """Find a cached answer, both layers. ``read=False`` (``Cache-Control: no-cache``) skips it but keeps
        the key so the fresh answer is stored; a semantic hit served for the same question shortly before
        then tightens its entry's bar (``bars.py``). ``max_false_hit_rate``: the request's own accepted
        rate (the verifier's bar), instead of the policy's."""
        exact = await self.lookup_exact(
            request, tenant, model, read=read, max_false_hit_rate=max_false_hit_rate
        )
        return await self.lookup_similar(exact)

    async def lookup_exact(
        self,
        request: ChatRequest,
        tenant: str,
        model: str,
        *,
        read: bool = True,
        max_false_hit_rate: float | None = None,
    ) -> Lookup:
        """The exact layer alone: a hit, a bypass, or a ``pending`` miss for ``lookup_similar``."""
        key = self.key(request, tenant, model)
        if isinstance(key, str):
            return self._bypass("policy", key)
        if not read:
            await self._lessons.regenerated(key)
            return self._bypass("no_cache", "the client asked not to read the cache", key)
        entry = await self._guarded(self._get(key.entry_key))
        if isinstance(entry, Lookup):
            return entry
        if entry is not None and not entry.expired(self._clock.time()):
            self._counters.exact_hits += 1
            self._counters.hits += 1
            return Lookup("hit", "exact match", key, entry, 1.0, stage="exact")
        return Lookup("miss", "no exact match", key, pending=True, max_false_hit_rate=max_false_hit_rate)

    async def lookup_similar(self, lookup: Lookup) -> Lookup:
        """The semantic layer for a ``pending`` miss (anything else is returned as it is)."""
        if not lookup.pending or lookup.key is None:
            return lookup
        found = await self._guarded(self._similar(lookup.key, lookup.max_false_hit_rate))
        if found.status == "hit":
            self._counters.hits += 1
        elif found.status == "miss":
            self._counters.misses += 1
        return found

    def _bypass(self, reason: BypassReason, text: str, key: CacheKey | None = None) -> Lookup:
        self._counters.bypasses += 1
        self._counters.bypass_reasons[reason] += 1
        return Lookup("bypass", text, key, bypass=reason)

    async def _guarded(self, work: Awaitable[T]) -> T | Lookup:
        """``work`` within the timeout; a failing or slow store or embedder turns the lookup into a bypass.
        A failure marks the cache degraded; slowness does not (the store says when it persists)."""
        try:
            async with asyncio.timeout(self.policy.timeout_s):
                result = await work
        except (CacheUnavailable, TimeoutError) as exc:
            self._counters.errors += 1
            slow = isinstance(exc, CacheSlow | TimeoutError)
            log = _log.info if slow else _log.warning
            log("cache bypassed", error=type(exc).__name__, reason=str(exc)[:300])
            if isinstance(exc, TimeoutError):
                return self._bypass("timeout", f"the cache took more than {self.policy.timeout_s} s")
            if isinstance(exc, CacheSlow):
                return self._bypass("store_slow", "the cache store was slow to answer")
            self._degraded = True
            if isinstance(exc, EmbedderUnavailable):
                return self._bypass("embedder", "the cache embedder is unavailable")
            return self._bypass("store_down", "the cache store is unavailable")
        self._degraded = False
        return result

    async def _get(self, entry_key: str) -> CacheEntry | None:
        write = self._writes.by_key.get(entry_key)
        if write is not None:  # read this process's own write to the key
            await settled([write])
        return await self._store.get(entry_key)

    async def _similar(self, key: CacheKey, max_false_hit_rate: float | None) -> Lookup:
        writes = self._writes.by_scope.get(key.scope)
        earlier = list(writes) if writes else None  # this process's writes to the scope so far ...
        if not earlier and not await self._store.holds(key.scope):
            # an empty scope (a conversation's follow-up turn, usually): no embedding on the request's
            # path; the answer's write embeds it in the background
            return Lookup("miss", "nothing cached in this scope", key)
        vector = await self._embed(key.text)
        if earlier:  # ... read back: most likely they landed during the embedding
            await settled(earlier)
        verifier = self.verifier
        rate = self.policy.max_false_hit_rate if max_false_hit_rate is None else max_false_hit_rate
        floor = self.policy.threshold if verifier is None else verifier.floor
        shared_bar = 0.0 if verifier is None else verifier.bar_for(rate)
        best: float | None = None
        best_score: float | None = None
        stage: Stage
        for candidate, similarity in await self._store.search(key.scope, vector, self.policy.candidates):
            best = similarity if best is None else max(best, similarity)
            if similarity < floor:
                break
            bar = max(shared_bar, self.bars.bar(candidate))
            if verifier is None:
                verdict = self.guard.check(key.text, candidate.text)
                score, stage = similarity, "threshold"
                if not verdict.ok:
                    self._counters.guard_rejections += 1
                    _log.debug("guard refused a neighbour", reason=verdict.reason, similarity=round(score, 4))
                    continue
            else:
                score, stage = verifier.probability(key.text, candidate.text, similarity), "verifier"
                best_score = score if best_score is None else max(best_score, score)
            if score >= bar:
                self._counters.semantic_hits += 1
                hit_id = self._lessons.served(key, candidate.key, score)
                return Lookup(
                    "hit",
                    "semantic match",
                    key,
                    candidate,
                    similarity,
                    vector,
                    stage=stage,
                    score=score,
                    hit_id=hit_id,
                )
            if verifier is not None:
                self._counters.verifier_rejections += 1
        return Lookup("miss", "no close neighbour", key, None, best, vector, score=best_score)

    async def _embed(self, text: str) -> Vectors:
        """The embedding; a failure, or an embedding that the step's timeout cut short, shows in the
        health (``probe``) until one succeeds. The wait is measured on the event loop's clock, the one
        ``asyncio.timeout`` cuts it short by (a fake ``clock`` cannot move that deadline)."""
        loop = asyncio.get_running_loop()
        started = loop.time()
        try:
            vector = await self._embedding.embed(text)
        except EmbedderUnavailable as exc:
            self._embedder_error = exc.message
            raise
        except asyncio.CancelledError:  # the timeout, or the client leaving: only a long wait counts
            if loop.time() - started >= 0.9 * self.policy.timeout_s:
                self._embedder_error = f"no embedding within {self.policy.timeout_s} s"
            raise
        self._embedder_error = None
        return vector

    def store(
        self,
        lookup: Lookup,
        model: str,
        completion: Completion,
        ttl_s: float | None,
        decision: Decision | None = None,
    ) -> asyncio.Task[None] | None:
        """Keep a fresh answer: the write is scheduled as a background task (the cache holds it; awaiting
        the returned task is optional) and this returns at once; ``None`` when there is nothing to keep,
        or the answer is not worth keeping (``answers.py``: unsure by ``decision``'s confidence, about the
        current date or time, or about earlier turns; counted by reason). A failing or slow write
        (``timeout_s``) is logged and counted, never raised. Needs a running loop."""
        ttl = self.policy.ttl_s if ttl_s is None else min(ttl_s, self.policy.max_ttl_s)
        key = lookup.key
        if key is None or lookup.status == "hit" or ttl <= 0 or not completion.content:
            return None
        reason = unworthy(key.text, completion.content, decision, self.policy.min_confidence)
        if reason is not None:
            self._counters.not_stored[reason] = self._counters.not_stored.get(reason, 0) + 1
            _log.debug("answer not cached", reason=reason)
            return None
        usage = completion.usage
        answer = Answer(
            completion.content,
            completion.reasoning,
            completion.finish_reason,
            usage.prompt_tokens,
            usage.completion_tokens,
        )
        earlier = self._writes.by_key.get(key.entry_key)
        write = self._write(key, model, answer, lookup.vector, self._clock.time(), ttl, earlier)
        task = asyncio.get_running_loop().create_task(write, name="cache-store")
        self._writes.add(key.entry_key, key.scope, task)
        return task

    async def _write(
        self,
        key: CacheKey,
        model: str,
        answer: Answer,
        vector: Vectors | None,
        now: float,
        ttl: float,
        earlier: asyncio.Task[None] | None,
    ) -> None:
        if earlier is not None and not earlier.done():  # the same key: writes land in the order scheduled
            await asyncio.wait([earlier], timeout=self.policy.timeout_s)
        try:
            async with asyncio.timeout(self.policy.timeout_s):
                if vector is None:
                    vector = await self._embed(key.text)
                entry = CacheEntry(key.entry_key, key.scope, model, key.text, vector, answer, now, now + ttl)
                await self._store.put(entry)
        except (CacheSlow, TimeoutError) as exc:  # slow: this answer is not kept, nothing is down
            self._counters.errors += 1
            _log.info("cache store failed", error=type(exc).__name__)
            return
        except CacheUnavailable as exc:
            self._failed()
            _log.warning("cache store failed", error=type(exc).__name__)
            return
        except Exception as exc:  # nobody awaits this task: a bug in a store must still be seen
            self._failed()
            _log.exception("cache store failed", error=type(exc).__name__)
            return
        self._counters.stores += 1

    def _failed(self) -> None:
        self._counters.errors += 1
        self._degraded = True

    async def drain(self, timeout_s: float | None = None, *, cancel: bool = False) -> bool:
        """Wait for the writes scheduled so far, at most ``timeout_s`` (default twice the policy's
        ``timeout_s``: a write waits at most that long for an earlier one to its key, then that long for
        the store). True when all have finished; a drain that outlasts its bound is logged, and with
        ``cancel`` the late writes are cancelled (and counted as errors)."""
        running = [t for t in self._writes.tasks if not t.done()]
        if not running:
            return True
        bound = 2 * self.policy.timeout_s if timeout_s is None else timeout_s
        _, late = await asyncio.wait(running, timeout=bound)
        if not late:
            return True
        _log.warning("cache writes outlasted the drain", writes=len(late), timeout_s=bound, cancel=cancel)
        if cancel:
            for task in late:
                task.cancel()
            await asyncio.wait(late)
            self._counters.errors += len(late)
        return False

    # -- administration ------------------------------------------------------------------------------

    async def dislike(self, hit_id: str) -> bool:
        """Feedback on a semantic hit: its entry tightens its bar (``bars.py``). False: an unknown id (or an
        entry gone); ``CacheUnavailable`` when the bars' store does not answer."""
        return await self._lessons.disliked(hit_id)

    async def probe(self) -> tuple[Literal["ok", "degraded"], str | None]:
        """For the health endpoint. A remote store is pinged, so a recovered Redis shows ``ok`` again; a
        remote embedder that failed shows ``degraded`` until a lookup or a write embeds again."""
        if self._embedder_error is not None:
            return "degraded", f"the embedder fails ({self._embedder_error}); requests bypass the cache"
        answered = await self._store.ping()
        if answered is not None:
            if answered:
                self._degraded = False
                return "ok", None
            return "degraded", f"the {self._store.name} cache store does not answer; requests bypass it"
        if self._degraded:
            return "degraded", "the last cache operation failed; requests bypass the cache"
        return "ok", None

    def health(self) -> Literal["ok", "degraded"]:
        degraded = self._degraded or self._embedder_error is not None or self._store.degraded
        return "degraded" if degraded else "ok"

    async def stats(self) -> CacheStats:
        """The counters and the store's figures, once the writes scheduled so far have landed (or the
        drain's bound has passed)."""
        await self.drain()
        store = await self._store.stats()
        return self._counters.stats(store, self.health(), await self.bars.learned())

    async def invalidate(self, selector: Invalidation) -> int:
        """Drop the matching entries, the ones written by writes scheduled before this call included."""
        await self.drain(cancel=True)
        return await self._store.invalidate(selector)

    async def clear(self) -> int:
        """Drop every entry; a write scheduled before this call lands first (or is cancelled), never after."""
        await self.drain(cancel=True)
        return await self._store.clear()

    async def close(self) -> None:
        """Let the writes in flight land (the last answers of a gateway shutting down), then close."""
        try:
            await self.drain(cancel=True)
        finally:
            self._embedding.close()
            await self._store.close()
