"""The single owner of model lifetimes: loads, leases, unloads and evicts models within a memory budget.

``async with pool.lease(model_id) as backend`` waits for a free slot of that model (past ``max_queue``
waiting requests: ``Overloaded`` with ``Retry-After``), loads the model once however many requests arrive
for it while it is cold, and never makes a request for a loaded model wait on another model's load. A load
that does not fit evicts idle, unpinned models, least recently used first; if it still cannot fit:
``InsufficientMemory``. An idle model is unloaded after its ``keep_alive``, measured on the pool's
``Clock`` (``expire_idle`` runs that check now: a test with a fake clock advances it, then calls it). A load
that fails (the backend raises ``ModelLoadError``) marks the model ``failed`` and is logged here.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Mapping
from contextlib import suppress

from groupqwen import log
from groupqwen.backends.base import Backend
from groupqwen.catalog import ModelSpec
from groupqwen.clock import SYSTEM_CLOCK, Clock
from groupqwen.errors import GroupQwenError, InsufficientMemory, ModelBusy, ModelNotFound, Overloaded
from groupqwen.messages import ModelState, ModelStatus
from groupqwen.pool.budget import MiB, Resident, to_evict
from groupqwen.pool.memory import current_rss
from groupqwen.telemetry import timing

_log = log.get(__name__)

BackendFactory = Callable[[ModelSpec], Backend]
NeedEstimator = Callable[[ModelSpec], int]


class _Entry:
    def __init__(self, spec: ModelSpec) -> None:
        self.spec = spec
        self.backend: Backend | None = None
        self.status: ModelStatus = "unloaded"
        self.error: str | None = None
        self.slots = asyncio.Semaphore(spec.max_parallel)
        self.load_lock = asyncio.Lock()
        self.active = 0
        self.queued = 0
        self.last_used: float | None = None
        self.last_used_mono = 0.0
        self.idle_since = 0.0  # monotonic; when it last became idle (a lease ended, or ``load`` loaded it)
        self.need: int | None = None  # estimated before the first load
        self.estimated: int | None = None
        self.measured: int | None = None
        self.expiry: asyncio.Task[None] | None = None
        self.leaving: Callable[[], None] | None = None  # removed (``Pool.remove``): called once unloaded

    def state(self) -> ModelState:
        replicas = self.backend.replicas() if self.backend is not None else ()
        counts = (self.active, self.queued, self.last_used, self.estimated, self.measured)
        return ModelState(self.spec, self.status, self.error, *counts, replicas)

    @property
    def resident_bytes(self) -> int:
        return max(self.estimated or 0, self.measured or 0)

    @property
    def busy(self) -> bool:
        return self.active > 0 or self.queued > 0


class Pool:
    """Owns every backend. ``specs``: the models that can be served; ``factory`` builds a backend;
    ``need`` estimates a model's memory before loading; ``budget`` is the bytes models may use; ``clock``
    times idle models, queue waits and loads."""

    def __init__(
        self,
        specs: Mapping[str, ModelSpec],
        factory: BackendFactory,
        *,
        need: NeedEstimator,
        budget: int,
        max_queue: int,
        retry_after: int = 2,
        measure: Callable[[], int] = current_rss,
        clock: Clock = SYSTEM_CLOCK,
    ) -> None:
        self._entries = {model_id: _Entry(spec) for model_id, spec in specs.items()}
        self._factory = factory
        self._need = need
        self.budget = budget
        self._max_queue = max_queue
        self._retry_after = retry_after
        self._measure = measure
        self._clock = clock
        self._placement = asyncio.Lock()  # one load or eviction decision at a time
        self._leaving: set[_Entry] = set()  # removed, still serving the requests that had them

    def add(self, spec: ModelSpec) -> None:
        """Serve ``spec`` too (a model that appeared while the gateway runs); an id already here is kept."""
        self._entries.setdefault(spec.id, _Entry(spec))

    def __contains__(self, model_id: object) -> bool:
        return model_id in self._entries

    def remove(self, model_id: str, then: Callable[[], None] = lambda: None) -> None:
        """Stop serving ``model_id`` (a deleted fine-tuned model): from now on it is not here (a lease is
        ``ModelNotFound``, ``states`` omits it); the requests that hold or wait for one of its slots finish,
        then it is unloaded and ``then`` is called (at once for a model not served here)."""
        entry = self._entries.pop(model_id, None)
        if entry is None:
            then()
            return
        entry.leaving = then
        self._leaving.add(entry)
        if not entry.busy:
            self._schedule_leave(entry)

    def _schedule_leave(self, entry: _Entry) -> None:
        self._cancel_expiry(entry)
        entry.expiry = asyncio.get_running_loop().create_task(self._leave(entry))

    async def _leave(self, entry: _Entry) -> None:
        async with entry.load_lock, self._placement:
            await self._unload(entry)
        self._leaving.discard(entry)
        then, entry.leaving = entry.leaving, None
        if then is not None:
            then()

    @property
    def used(self) -> int:
        entries = (*self._entries.values(), *self._leaving)
        return sum(e.resident_bytes for e in entries if e.backend is not None)

    def states(self) -> list[ModelState]:
        return [e.state() for e in self._entries.values()]

    def status(self, model_id: str) -> ModelStatus | None:
        """One model's status (``None``: not served here), without building every model's state."""
        entry = self._entries.get(model_id)
        return entry.status if entry is not None else None

    def _entry(self, model_id: str) -> _Entry:
        try:
            return self._entries[model_id]
        except KeyError:
            raise ModelNotFound(f"The model {model_id!r} does not exist", param="model") from None

    def lease(self, model_id: str) -> _Lease:
        """``async with pool.lease(model_id) as backend``: a slot of that model, held to the block's end."""
        return _Lease(self, model_id)

    async def _acquire(self, model_id: str) -> tuple[_Entry, Backend]:
        entry = self._entry(model_id)
        if entry.slots.locked() and entry.queued >= self._max_queue:
            raise Overloaded(
                f"Model {model_id!r} is busy: {entry.active} running and {entry.queued} queued requests. "
                "Retry later.",
                retry_after=self._retry_after,
            )
        asked = self._clock.monotonic()
        entry.queued += 1
        self._cancel_expiry(entry)
        try:
            await entry.slots.acquire()
        finally:
            entry.queued -= 1
        entry.active += 1
        try:
            backend = entry.backend or await self._load(entry)
        except BaseException:
            self._release(entry)
            raise
        timing.queue_waited(self._clock.monotonic() - asked)
        return entry, backend

    def _release(self, entry: _Entry) -> None:
        entry.active -= 1
        entry.last_used, entry.last_used_mono = self._clock.time(), self._clock.monotonic()
        entry.slots.release()
        if not entry.busy:
            if entry.leaving is not None:
                self._schedule_leave(entry)
            else:
                self._schedule_expiry(entry)

    async def load(self, model_id: str) -> ModelState:
        """Load a model now (idempotent); it then idles out after its keep_alive like any other."""
        entry = self._entry(model_id)
        await self._load(entry)
        if not entry.busy:
            self._schedule_expiry(entry)
        return next(s for s in self.states() if s.spec.id == model_id)

    async def unload(self, model_id: str) -> None:
        """Unload a model now; ``ModelBusy`` while it serves or queues requests."""
        entry = self._entry(model_id)
        async with entry.load_lock, self._placement:
            if entry.busy:
                raise ModelBusy(
                    f"Model {model_id!r} has {entry.active} active and {entry.queued} queued requests; "
                    "unload it when they are done",
                    param="model",
                )
            await self._unload(entry)

    async def _load(self, entry: _Entry) -> Backend:
        async with entry.load_lock:
            if entry.backend is not None:
                return entry.backend
            async with self._placement:
                try:
                    if entry.need is None:  # reads the GGUF header once: a corrupt file fails here
                        entry.need = self._need(entry.spec)
                except GroupQwenError as exc:
                    self._failed(entry, exc)
                    raise
                need = entry.need
                for victim in self._make_room(entry, need):
                    _log.info("evicting model", model=victim.spec.id, to_load=entry.spec.id)
                    await self._unload(victim)
                entry.status, entry.error, entry.estimated = "loading", None, need
                started, rss_before = self._clock.monotonic(), self._measure()
                backend: Backend | None = None
                try:
                    backend = self._factory(entry.spec)
                    await backend.load()
                except asyncio.CancelledError:
                    entry.status, entry.estimated = "unloaded", None
                    if backend is not None:
                        with suppress(Exception):
                            await backend.close()
                    raise
                except GroupQwenError as exc:  # a backend raises nothing else (anything else is a bug)
                    self._failed(entry, exc)
                    raise
                except Exception as exc:  # a bug, logged where it is handled: the model is not loaded
                    entry.status, entry.error = "failed", f"{type(exc).__name__}: {exc}"
                    raise
                entry.measured = max(0, self._measure() - rss_before) if need else 0
                entry.backend, entry.status = backend, "loaded"
            _log.info(
                "model loaded",
                model=entry.spec.id,
                seconds=round(self._clock.monotonic() - started, 3),
                estimated_mib=need // MiB,
                measured_mib=entry.measured // MiB,
            )
            return backend

    @staticmethod
    def _failed(entry: _Entry, exc: GroupQwenError) -> None:
        entry.status, entry.error = "failed", exc.message
        _log.warning("model load failed", model=entry.spec.id, code=exc.code, error=exc.message)

    def _make_room(self, entry: _Entry, need: int) -> list[_Entry]:
        """What to evict so that ``need`` more bytes fit; raise ``InsufficientMemory`` if nothing does."""
        loaded = [e for e in self._entries.values() if e.backend is not None and e is not entry]
        resident = [
            Resident(e.spec.id, e.resident_bytes, e.last_used_mono, e.spec.pinned, e.busy) for e in loaded
        ] + [  # removed models that still serve their last requests: resident, never chosen
            Resident(e.spec.id, e.resident_bytes, e.last_used_mono, True, True)
            for e in self._leaving
            if e.backend is not None
        ]
        free = self.budget - sum(r.bytes for r in resident)
        chosen = to_evict(need, free, resident)
        if chosen is None:
            blocked = [r.model_id for r in resident if r.pinned or r.busy]
            raise InsufficientMemory(
                f"Model {entry.spec.id!r} needs {need // MiB} MiB but only {max(free, 0) // MiB} MiB of the "
                f"{self.budget // MiB} MiB budget is free"
                + (f"; {', '.join(blocked)} cannot be evicted (pinned or busy)" if blocked else ""),
            )
        return [self._entries[model_id] for model_id in chosen]

    async def _unload(self, entry: _Entry) -> None:
        self._cancel_expiry(entry)
        backend, entry.backend = entry.backend, None
        if backend is not None:
            await backend.close()
            _log.info("model unloaded", model=entry.spec.id)
        entry.status, entry.measured = "unloaded", None

    def _idle_left(self, entry: _Entry) -> float:
        """Seconds until ``entry``'s keep_alive ends (``inf`` if it never expires or is not idle)."""
        if entry.spec.keep_alive < 0 or entry.backend is None or entry.busy:
            return float("inf")
        return entry.idle_since + entry.spec.keep_alive - self._clock.monotonic()

    def _schedule_expiry(self, entry: _Entry) -> None:
        if entry.spec.keep_alive < 0 or entry.backend is None:
            return
        self._cancel_expiry(entry)
        entry.idle_since = self._clock.monotonic()
        entry.expiry = asyncio.get_running_loop().create_task(self._expire(entry))

    @staticmethod
    def _cancel_expiry(entry: _Entry) -> None:
        if entry.expiry is not None and entry.expiry is not asyncio.current_task():
            entry.expiry.cancel()
        entry.expiry = None

    async def _expire(self, entry: _Entry) -> None:
        """The idle timer of ``entry``: sleeps on the clock until its keep_alive has passed, then unloads it
        (a lease in the meantime cancels this task and starts another when it ends)."""
        while (left := self._idle_left(entry)) > 0:
            if left == float("inf"):
                return
            await self._clock.sleep(left)
        await self._unload_if_expired(entry)

    async def _unload_if_expired(self, entry: _Entry) -> bool:
        if self._idle_left(entry) > 0:
            return False
        async with entry.load_lock, self._placement:
            if self._idle_left(entry) > 0:
                return False
            _log.info("model idle, unloading", model=entry.spec.id, keep_alive=entry.spec.keep_alive)
            await self._unload(entry)
            return True

    async def expire_idle(self) -> list[str]:
        """Unload every model idle for its keep_alive or longer, by the pool's clock, now; the ids unloaded.
        The pool's own timers do this when each keep_alive ends."""
        return [e.spec.id for e in self._entries.values() if await self._unload_if_expired(e)]

    async def close(self) -> None:
        for entry in (*self._entries.values(), *self._leaving):
            self._cancel_expiry(entry)
            with suppress(Exception):
                await self._unload(entry)


class _Lease:
    """``Pool.lease``'s block: a class, not an ``asynccontextmanager`` (that is an async generator a
    request, with contextlib's and the event loop's bookkeeping around it)."""

    __slots__ = ("_entry", "_model_id", "_pool")

    def __init__(self, pool: Pool, model_id: str) -> None:
        self._pool, self._model_id = pool, model_id
        self._entry: _Entry | None = None

    async def __aenter__(self) -> Backend:
        self._entry, backend = await self._pool._acquire(self._model_id)
        return backend

    async def __aexit__(self, *_: object) -> None:
        if self._entry is not None:
            entry, self._entry = self._entry, None
            self._pool._release(entry)
