"""The single owner of model lifetimes: loads a model on first use, leases it to requests, bounds the queue.

``async with pool.lease(model_id) as backend`` waits for a free slot of that model (at most ``max_queue``
requests wait; past that ``Overloaded`` with a ``Retry-After``), loads the model once however many requests
arrive for it while it is cold, and never makes a request for one model wait on another model's load.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Literal

from groupqwen import log
from groupqwen.backends.base import Backend
from groupqwen.config import ModelSpec
from groupqwen.errors import GroupQwenError, ModelLoadError, ModelNotFound, Overloaded

_log = log.get(__name__)

Status = Literal["unloaded", "loading", "loaded", "failed"]
BackendFactory = Callable[[ModelSpec], Backend]


@dataclass(frozen=True)
class ModelState:
    """A snapshot of one model in the pool, for ``/v1/models`` and the CLI."""

    spec: ModelSpec
    status: Status
    error: str | None
    active: int
    queued: int
    last_used: float | None


class _Entry:
    def __init__(self, spec: ModelSpec, max_parallel: int) -> None:
        self.spec = spec
        self.backend: Backend | None = None
        self.status: Status = "unloaded"
        self.error: str | None = None
        self.slots = asyncio.Semaphore(max_parallel)
        self.load_lock = asyncio.Lock()
        self.active = 0
        self.queued = 0
        self.last_used: float | None = None


class Pool:
    """Owns every backend. ``specs`` are the models that can be served; ``factory`` builds a backend."""

    def __init__(
        self,
        specs: Mapping[str, ModelSpec],
        factory: BackendFactory,
        *,
        max_queue: int = 16,
        max_parallel: int = 1,
        retry_after: int = 2,
    ) -> None:
        self._entries = {model_id: _Entry(spec, max_parallel) for model_id, spec in specs.items()}
        self._factory = factory
        self._max_queue = max_queue
        self._retry_after = retry_after

    def __contains__(self, model_id: object) -> bool:
        return model_id in self._entries

    def states(self) -> list[ModelState]:
        return [
            ModelState(e.spec, e.status, e.error, e.active, e.queued, e.last_used)
            for e in self._entries.values()
        ]

    def _entry(self, model_id: str) -> _Entry:
        try:
            return self._entries[model_id]
        except KeyError:
            raise ModelNotFound(f"The model {model_id!r} does not exist", param="model") from None

    @asynccontextmanager
    async def lease(self, model_id: str) -> AsyncIterator[Backend]:
        entry = self._entry(model_id)
        if entry.slots.locked() and entry.queued >= self._max_queue:
            raise Overloaded(
                f"Model {model_id!r} is busy: {entry.active} running and {entry.queued} queued requests. "
                "Retry later.",
                retry_after=self._retry_after,
            )
        entry.queued += 1
        try:
            await entry.slots.acquire()
        finally:
            entry.queued -= 1
        entry.active += 1
        try:
            backend = await self._load(entry)
            yield backend
        finally:
            entry.active -= 1
            entry.last_used = time.time()
            entry.slots.release()

    async def load(self, model_id: str) -> None:
        """Load a model now (idempotent)."""
        await self._load(self._entry(model_id))

    async def _load(self, entry: _Entry) -> Backend:
        async with entry.load_lock:
            if entry.backend is not None:
                return entry.backend
            entry.status = "loading"
            started = time.perf_counter()
            backend = self._factory(entry.spec)
            try:
                await backend.load()
            except GroupQwenError as exc:
                entry.status, entry.error = "failed", exc.message
                raise
            except Exception as exc:
                entry.status, entry.error = "failed", f"{type(exc).__name__}: {exc}"
                raise ModelLoadError(f"Could not load model {entry.spec.id!r}: {entry.error}") from exc
            entry.backend, entry.status, entry.error = backend, "loaded", None
            _log.info("model loaded", model=entry.spec.id, seconds=round(time.perf_counter() - started, 3))
            return backend

    async def close(self) -> None:
        for entry in self._entries.values():
            if entry.backend is not None:
                await entry.backend.close()
                entry.backend, entry.status = None, "unloaded"
