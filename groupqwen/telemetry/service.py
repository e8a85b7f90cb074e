"""``Telemetry``: the one object the gateway holds — traces in, metrics, records, health and live out."""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import Callable
from pathlib import Path
from typing import Any

from groupqwen import log
from groupqwen.config import Settings
from groupqwen.errors import GroupQwenError
from groupqwen.telemetry.database import database_url
from groupqwen.telemetry.health import Health, database_check, disk_check
from groupqwen.telemetry.live import LiveHub
from groupqwen.telemetry.metrics import Metrics
from groupqwen.telemetry.records import RequestRecord, summarize
from groupqwen.telemetry.store import RecordStore, SqlStore
from groupqwen.telemetry.timing import Trace
from groupqwen.telemetry.writer import BufferedWriter

_log = log.get(__name__)
DAY = 86400.0
MiB = 1024 * 1024
CLIENT_CLOSED = 499
MAX_REQUEST_S = 3600.0


def status_of(error: BaseException) -> tuple[int, str]:
    """The HTTP status and code a request that raised ``error`` ends with."""
    if isinstance(error, GroupQwenError):
        return error.status_code, error.code or error.error_type
    if isinstance(error, asyncio.CancelledError | GeneratorExit):
        return CLIENT_CLOSED, "client_disconnected"
    return 500, "internal_error"


class Telemetry:
    """``recent_window_s``/``recent_max_bytes``: what ``summary`` can see from memory (the records of the
    last ``recent_window_s`` seconds, the oldest going first once they hold more than ``recent_max_bytes``);
    older windows come from the store (``stored_summary``)."""

    def __init__(
        self,
        *,
        writer: BufferedWriter | None = None,
        health: Health | None = None,
        recent_window_s: float = DAY,
        recent_max_bytes: int = 32 * MiB,
        retention_s: float = 30 * DAY,
        max_label_values: int = 32,
    ) -> None:
        self.metrics = Metrics(max_label_values=max_label_values)
        self.writer = writer
        self.health = health or Health()
        self.live = LiveHub()
        self.recent_window_s = recent_window_s
        self.retention_s = retention_s
        self.recent_max_bytes = recent_max_bytes
        self._recent: deque[RequestRecord] = deque()
        self._recent_sizes: deque[int] = deque()  # each record's size_bytes(), computed once
        self._recent_bytes = 0  # the records' size_bytes(), summed
        self._recent_evicted_until = 0.0  # finished_at of the newest record the byte cap pushed out
        self._websockets: Callable[[], tuple[int, int]] = lambda: (0, 0)
        if writer is not None:
            self.metrics.watch_writer(writer.counters)
        self.metrics.watch_websockets(lambda: self._websockets())

    @classmethod
    def from_settings(
        cls,
        settings: Settings,
        store: RecordStore | None = None,
        *,
        flush_interval: float = 1.0,
        max_backoff: float = 30.0,
    ) -> Telemetry:
        """Persistence to ``settings.telemetry.database_url`` (SQLite under ``data_dir`` by default),
        health checks of the database and disks; the caller adds model, GPU and cache checks."""
        config = settings.telemetry
        store = store or SqlStore(database_url(settings), timeout=config.health_timeout_s * 2)
        retention_s = config.retention_days * DAY
        writer = BufferedWriter(
            store,
            capacity=config.buffer_records,
            retention_s=retention_s,
            flush_interval=flush_interval,
            max_backoff=max_backoff,
        )
        health = Health(timeout=config.health_timeout_s)
        health.add("database", database_check(store.ping, store.name, lambda: _backlog(writer)))
        paths: dict[str, Path] = {"models_dir": settings.models_dir, "data_dir": settings.data_dir}
        health.add("disk", disk_check(paths, config.health_min_free_disk_mb * 1024 * 1024))
        return cls(
            writer=writer,
            health=health,
            retention_s=retention_s,
            recent_max_bytes=int(config.recent_max_mb * MiB),
        )

    def watch_websockets(self, read: Callable[[], tuple[int, int]]) -> None:
        """Where the gauges of ``/v1/ws`` come from: ``(open sockets, parked generations)``, read when
        asked (``/metrics``, ``/v1/metrics``)."""
        self._websockets = read

    def start(self) -> None:
        if self.writer is not None:
            self.writer.start()

    async def close(self) -> None:
        if self.writer is not None:
            await self.writer.close()

    # -- requests ------------------------------------------------------------------------------------

    def trace(self) -> Trace:
        """A trace for the chat completion starting now, made current for its context."""
        self.metrics.in_flight += 1
        return Trace(log.request_id.get()).activate()

    def finish(self, trace: Trace, error: BaseException | None = None) -> RequestRecord | None:
        """Close ``trace`` (once; later calls do nothing): metrics, live stream, persistence, a log line."""
        if trace.finished:
            return None
        trace.finished = True
        self.metrics.in_flight -= 1
        if error is not None:
            trace.failed(*status_of(error))
        record = trace.record()
        self.metrics.observe(record, cache_bypass=trace.cache_bypass, abandoned_tokens=trace.abandoned_tokens)
        self._remember(record)
        self.live.publish(record)
        if self.writer is not None:
            self.writer.submit(record)
        _log.info(
            "request finished",
            status=record.status,
            error=record.error or "",
            model=record.model,
            route=record.route,
            cache=record.cache,
            cache_bypass=trace.cache_bypass or "",
            stream=record.stream,
            latency_ms=round(record.latency_s * 1000, 1),
            ttft_ms="" if record.ttft_s is None else round(record.ttft_s * 1000, 1),
            queue_ms="" if record.queue_wait_s is None else round(record.queue_wait_s * 1000, 1),
            prompt_tokens=record.prompt_tokens,
            completion_tokens=record.completion_tokens,
        )
        return record

    def _remember(self, record: RequestRecord) -> None:
        size = record.size_bytes()
        self._recent.append(record)
        self._recent_sizes.append(size)
        self._recent_bytes += size
        while self._recent_bytes > self.recent_max_bytes and len(self._recent) > 1:
            evicted = self._recent.popleft()
            self._recent_bytes -= self._recent_sizes.popleft()
            self._recent_evicted_until = evicted.finished_at

    @property
    def recent_bytes(self) -> int:
        """Memory held by the records kept for ``summary`` (their estimated size)."""
        return self._recent_bytes

    # -- reading -------------------------------------------------------------------------------------

    def _persistence(self) -> dict[str, Any]:
        if self.writer is None:
            return {"store": None}
        return {"store": self.writer.store.name, **_backlog(self.writer)}

    def summary(
        self, window_s: float, *, until: float | None = None, tenant: str | None = None
    ) -> dict[str, Any]:
        """The summary over the last ``window_s`` seconds from the records kept in memory (``tenant``:
        only the records of that tenant)."""
        until = time.time() if until is None else until
        while self._recent and self._recent[0].finished_at <= until - self.recent_window_s:
            self._recent.popleft()
            self._recent_bytes -= self._recent_sizes.popleft()
        records = [r for r in self._recent if tenant is None or r.tenant == tenant]
        result = summarize(records, window_s=window_s, until=until)
        result["source"] = "memory"
        result["complete"] = self._recent_evicted_until <= until - window_s
        open_sockets, parked = self._websockets()
        result["websockets"] = {"open": open_sockets, "parked_generations": parked}
        result["telemetry"] = self._persistence()
        return result

    async def stored_summary(
        self, window_s: float, *, until: float | None = None, tenant: str | None = None
    ) -> dict[str, Any]:
        """The summary over the last ``window_s`` seconds from the database (records already written;
        ``tenant``: only that tenant's)."""
        if self.writer is None:
            raise RuntimeError("no store")
        until = time.time() if until is None else until
        limit = 1_000_000
        store = self.writer.store
        # a record is stored by its start; a request may have started up to MAX_REQUEST_S before the window
        records = await asyncio.to_thread(store.query, until - window_s - MAX_REQUEST_S, until, limit)
        complete = len(records) < limit
        if tenant is not None:
            records = [r for r in records if r.tenant == tenant]
        result = summarize(records, window_s=window_s, until=until)
        result["source"] = store.name
        result["complete"] = complete
        result["telemetry"] = self._persistence()
        return result


def _backlog(writer: BufferedWriter) -> dict[str, Any]:
    return {
        "written": writer.written,
        "pending": writer.pending,
        "dropped": writer.dropped,
        "rejected": writer.rejected,
        "last_error": writer.last_error,
        "failing_since": writer.failing_since,
        "last_rejected": writer.last_rejected,
    }
