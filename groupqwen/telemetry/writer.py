"""Batched persistence off the request path.

``submit`` is synchronous, O(1) and never blocks or fails: it appends to a bounded buffer, or — when the
buffer already holds ``capacity`` records — drops the record and counts it. A background task writes
batches through one worker thread, once per ``flush_interval`` (sooner only for a full batch, or when
``flush`` asks): under steady traffic that is one transaction a second, not one per write's duration (a
commit is the costly part, and its thread competes with the requests for the interpreter). A failed
batch stays at the head of the buffer and is retried with backoff (the store reconnects), so a database
that is down loses nothing until the buffer overflows.

A batch the store refuses for its records' values (``RecordRejected``: never a database that is down) is
written again one record at a time: each record the store refuses on its own is dropped and counted
(``rejected``, part of ``dropped``), so one poison record never holds back the ones queued behind it.
At all times: ``submitted == written + pending + dropped``.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from contextlib import suppress
from itertools import islice
from typing import TypeVar

from groupqwen import log
from groupqwen.telemetry.records import RequestRecord
from groupqwen.telemetry.store import RecordRejected, RecordStore

_log = log.get(__name__)
T = TypeVar("T")


class BufferedWriter:
    def __init__(
        self,
        store: RecordStore,
        *,
        capacity: int = 10_000,
        batch_size: int = 500,
        flush_interval: float = 1.0,
        write_timeout: float = 10.0,
        max_backoff: float = 30.0,
        retention_s: float | None = None,
        prune_every: float = 3600.0,
    ) -> None:
        self.store = store
        self._capacity = capacity
        self._batch_size = batch_size
        self._flush_interval = flush_interval
        self._write_timeout = write_timeout
        self._max_backoff = max_backoff
        self._retention_s = retention_s
        self._prune_every = prune_every
        self._pending: deque[RequestRecord] = deque()
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._stopping = False
        self._executor: ThreadPoolExecutor | None = None
        self._next_prune = 0.0
        self.submitted = 0
        self.written = 0
        self.dropped = 0  # the buffer was full, or the store refused the record (``rejected``)
        self.rejected = 0
        self.last_error: str | None = None  # set while writes fail, cleared by the next success
        self.failing_since: float | None = None  # wall time of the first failure of the current run
        self.last_rejected: str | None = None  # why the store refused the latest record it refused

    @property
    def pending(self) -> int:
        return len(self._pending)

    def counters(self) -> tuple[int, int, int, int]:
        return self.written, self.dropped, self.pending, self.rejected

    def submit(self, record: RequestRecord) -> bool:
        """Queue ``record`` for persistence; ``False`` (and counted) if the buffer is full."""
        self.submitted += 1
        if len(self._pending) >= self._capacity:
            self.dropped += 1
            return False
        self._pending.append(record)
        self.start()
        if len(self._pending) >= self._batch_size:
            self._wake.set()
        return True

    def start(self) -> None:
        """Start the background task (idempotent; needs a running event loop)."""
        if self._task is None:
            self._executor = ThreadPoolExecutor(1, thread_name_prefix="groupqwen-telemetry")
            self._task = asyncio.get_running_loop().create_task(self._run(), name="telemetry-writer")

    async def _in_thread(self, fn: Callable[..., T], *args: object) -> T:
        """``fn(*args)`` on the writer's thread, given up on (not killed) after ``write_timeout``; the
        store's own timeouts bound how long the thread stays busy."""
        loop = asyncio.get_running_loop()
        async with asyncio.timeout(self._write_timeout):
            return await loop.run_in_executor(self._executor, fn, *args)

    async def _write_some(self) -> bool:
        """Write up to one batch; ``True`` if it was written (or its refused records set aside)."""
        batch = list(islice(self._pending, self._batch_size))
        try:
            await self._in_thread(self.store.write, batch)
        except asyncio.CancelledError:
            raise
        except RecordRejected:
            return await self._write_one_by_one(batch)
        except Exception as exc:
            self._failed(exc)
            return False
        for _ in batch:
            self._pending.popleft()
        self.written += len(batch)
        self._succeeded()
        return True

    async def _write_one_by_one(self, batch: list[RequestRecord]) -> bool:
        """``batch`` (the head of the buffer) one record at a time: a record the store refuses on its own
        is dropped and counted; any other failure stops here, the rest kept for the retry."""
        for record in batch:
            try:
                await self._in_thread(self.store.write, [record])
            except asyncio.CancelledError:
                raise
            except RecordRejected as exc:
                self.rejected += 1
                self.dropped += 1
                self.last_rejected = _first_line(exc)
                _log.warning(
                    "telemetry record refused by the store; dropped",
                    store=self.store.name,
                    record=record.id,
                    error=self.last_rejected,
                )
            except Exception as exc:
                self._failed(exc)
                return False
            else:
                self.written += 1
            self._pending.popleft()
        self._succeeded()
        return True

    def _failed(self, exc: Exception) -> None:
        error = _first_line(exc)
        if self.last_error is None:
            _log.warning("telemetry writes failing; buffering", store=self.store.name, error=error)
            self.failing_since = time.time()
        self.last_error = error

    def _succeeded(self) -> None:
        if self.last_error is not None:
            _log.info("telemetry writes recovered", store=self.store.name, pending=self.pending)
            self.last_error = None
            self.failing_since = None

    async def _prune(self) -> None:
        if self._retention_s is None or time.monotonic() < self._next_prune:
            return
        self._next_prune = time.monotonic() + self._prune_every
        try:
            removed = await self._in_thread(self.store.prune, time.time() - self._retention_s)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            _log.warning("telemetry retention pruning failed", error=_first_line(exc))
            self._next_prune = time.monotonic() + 60
            return
        if removed:
            _log.info("telemetry records pruned", removed=removed)

    async def _run(self) -> None:
        backoff = 0.0
        while not self._stopping:
            # asyncio.timeout, not wait_for: on 3.11 wait_for can swallow a cancellation that races with
            # the event being set, and close() must never hang
            with suppress(TimeoutError):
                async with asyncio.timeout(backoff or self._flush_interval):
                    await self._wake.wait()
            self._wake.clear()
            while self._pending:
                if not await self._write_some():
                    backoff = min(max(backoff * 2, 0.25), self._max_backoff)
                    break
                backoff = 0.0
                if len(self._pending) < self._batch_size:
                    break  # what came during the write waits for the next interval: one commit per interval
            if not backoff:
                await self._prune()

    async def flush(self, within: float = 10.0) -> bool:
        """Wait until the buffer is empty (``True``) or ``within`` seconds pass (``False``)."""
        deadline = time.monotonic() + within
        while self._pending and time.monotonic() < deadline:
            self.start()
            self._wake.set()
            await asyncio.sleep(0.01)
        return not self._pending

    async def close(self, within: float = 5.0) -> None:
        """Write what is buffered (for up to ``within`` seconds), stop, and close the store."""
        if self._task is not None:
            if self._pending:
                await self.flush(within)
            self._stopping = True
            self._wake.set()
            done, _ = await asyncio.wait({self._task}, timeout=within)
            if not done:  # stuck in a write: give up on it
                self._task.cancel()
                await asyncio.wait({self._task}, timeout=1)
            self._task = None
        if self.pending:
            _log.warning("telemetry records not persisted at shutdown", pending=self.pending)
        if self._executor is not None:
            self._executor.shutdown(wait=False, cancel_futures=True)
            self._executor = None
        self.store.close()


def _first_line(exc: BaseException) -> str:
    return (f"{type(exc).__name__}: {exc}".splitlines() or [type(exc).__name__])[0][:300]
