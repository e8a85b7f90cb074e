"""One Prometheus registry per gateway, fed by the same ``RequestRecord``s as the JSON summary.

Names and labels follow Prometheus conventions (``groupqwen_`` prefix, base units, ``_total`` counters).
Label values are bounded: ``model`` and ``route`` keep the first ``max_label_values`` values they see and
fold the rest into ``other``; ``status`` is the HTTP status class (``2xx`` … ``5xx``); ``cache`` is one of
hit/miss/bypass, and a bypass's ``reason`` (the cache's own short names: ``policy``, ``no_cache``,
``store_slow``, ``store_down``, ``embedder``, ``timeout``) is bounded the same way. Tenants and request ids
are never labels.

A request only adds to plain numbers (``Metrics.observe``: one dictionary look a series, a histogram's
bucket found by ``bisect``); the families are built when scraped (``Metrics.collect``), the same text
``prometheus_client``'s own ``Counter``, ``Histogram`` and ``Gauge`` would write for the same records
(``_created`` series included, unless ``PROMETHEUS_DISABLE_CREATED_SERIES`` says not to, as the client
reads it). Both run on the event loop; a scrape from another thread would still see each histogram's buckets
and count agree (one copy of its numbers).
"""

from __future__ import annotations

import os
import time
from bisect import bisect_left
from collections.abc import Callable, Sequence
from itertools import accumulate

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector
from prometheus_client.utils import INF, floatToGoString

from groupqwen.telemetry.records import CACHE_RESULTS, RequestRecord

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
OTHER = "other"
LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300)
SPEED_BUCKETS = (1, 2, 5, 10, 20, 50, 100, 200, 500, 1000)
# the client's own switch, read as it reads it
CREATED = os.environ.get("PROMETHEUS_DISABLE_CREATED_SERIES", "False").lower() not in ("true", "1", "t")
Labels = tuple[str, ...]


class BoundedLabel:
    """Keeps at most ``limit`` distinct values; later newcomers become ``other``."""

    def __init__(self, limit: int) -> None:
        self._limit = limit
        self._seen: set[str] = set()

    def __call__(self, value: str) -> str:
        if value in self._seen:
            return value
        if len(self._seen) >= self._limit:
            return OTHER
        self._seen.add(value)
        return value


def status_class(status: int) -> str:
    return f"{min(max(status // 100, 1), 5)}xx"


class _WriterCollector(Collector):
    """The persistence buffer's counters, read at scrape time."""

    def __init__(self, read: Callable[[], tuple[int, int, int, int]]) -> None:
        self._read = read

    def collect(self) -> list[Metric]:
        written, dropped, pending, rejected = self._read()
        out: list[Metric] = [
            CounterMetricFamily(
                "groupqwen_telemetry_records_written", "Request records persisted to the database", written
            ),
            CounterMetricFamily(
                "groupqwen_telemetry_records_dropped",
                "Request records dropped: the persistence buffer was full, or the database refused them",
                dropped,
            ),
            CounterMetricFamily(
                "groupqwen_telemetry_records_rejected",
                "Request records the database refused for their values (dropped; part of dropped)",
                rejected,
            ),
            GaugeMetricFamily(
                "groupqwen_telemetry_records_pending", "Request records waiting to be persisted", pending
            ),
        ]
        return out


class _WebSocketCollector(Collector):
    """The WebSocket endpoint's open connections and parked generations, read at scrape time."""

    def __init__(self, read: Callable[[], tuple[int, int]]) -> None:
        self._read = read

    def collect(self) -> list[Metric]:
        open_sockets, parked = self._read()
        return [
            GaugeMetricFamily(
                "groupqwen_websockets_open", "WebSocket connections open on /v1/ws", open_sockets
            ),
            GaugeMetricFamily(
                "groupqwen_websocket_generations_parked",
                "Generations of dropped WebSocket connections kept for a resume (running or finished)",
                parked,
            ),
        ]


class _Family:
    """A labelled family's series: label values → its numbers, and when each series began (``_created``)."""

    def __init__(self, name: str, documentation: str, labelnames: Sequence[str]) -> None:
        self.name, self.documentation, self.labelnames = name, documentation, tuple(labelnames)
        self.series: dict[Labels, list[float]] = {}
        self.created: dict[Labels, float] = {}

    def _new(self, labels: Labels, width: int) -> list[float]:
        self.created[labels] = time.time()  # first: a scrape that sees the series sees when it began
        cells = self.series[labels] = [0.0] * width
        return cells


class _Counter(_Family):
    """A labelled counter: each series' total."""

    def inc(self, labels: Labels, amount: float = 1) -> None:
        (self.series.get(labels) or self._new(labels, 1))[0] += amount

    def family(self) -> Metric:
        out = CounterMetricFamily(self.name, self.documentation, labels=self.labelnames)
        for labels, (total,) in list(self.series.items()):
            out.add_metric(labels, total, created=self.created[labels] if CREATED else None)
        return out


class _Histogram(_Family):
    """A labelled histogram: each series' count in each bucket (its own, not cumulative) then its sum."""

    def __init__(
        self, name: str, documentation: str, labelnames: Sequence[str], buckets: Sequence[float]
    ) -> None:
        super().__init__(name, documentation, labelnames)
        self.bounds = (*map(float, buckets), INF)
        # the client's spelling of a bound (``le``), untyped there
        self._les: list[str] = [floatToGoString(bound) for bound in self.bounds]  # type: ignore[no-untyped-call]

    def observe(self, labels: Labels, value: float) -> None:
        cells = self.series.get(labels) or self._new(labels, len(self.bounds) + 1)
        if value <= INF:  # NaN is in no bucket (nor in the count), only in the sum, as the client has it
            cells[bisect_left(self.bounds, value)] += 1
        cells[-1] += value

    def family(self) -> Metric:
        out = HistogramMetricFamily(self.name, self.documentation, labels=self.labelnames)
        for labels, cells in list(self.series.items()):
            numbers = cells[:]  # one copy: the buckets and the count agree
            out.add_metric(labels, list(zip(self._les, accumulate(numbers[:-1]), strict=True)), numbers[-1])
            if CREATED:
                out.add_sample(
                    self.name + "_created",
                    dict(zip(self.labelnames, labels, strict=True)),
                    self.created[labels],
                )
        return out


class Metrics:
    """The gateway's request metrics, and its registry (``render``)."""

    def __init__(self, *, max_label_values: int = 32) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self._model = BoundedLabel(max_label_values)
        self._route = BoundedLabel(max_label_values)
        self._bypass_reason = BoundedLabel(max_label_values)
        self.in_flight = 0  # chat completions running now (Telemetry.trace / finish)
        self.requests = _Counter(
            "groupqwen_requests",
            "Chat completions finished, by model, route, status class and cache result",
            ["model", "route", "status", "cache"],
        )
        self.latency = _Histogram(
            "groupqwen_request_duration_seconds",
            "Total latency of successful chat completions",
            ["model", "route"],
            LATENCY_BUCKETS,
        )
        self.ttft = _Histogram(
            "groupqwen_time_to_first_token_seconds",
            "Time to the first token of successful chat completions",
            ["model", "route"],
            LATENCY_BUCKETS,
        )
        self.queue_wait = _Histogram(
            "groupqwen_queue_wait_seconds",
            "Time waiting for a model (a free slot, and its load when cold)",
            ["model"],
            LATENCY_BUCKETS,
        )
        self.speed = _Histogram(
            "groupqwen_generation_tokens_per_second",
            "Decode speed of successful chat completions a model generated (cache hits excluded)",
            ["model"],
            SPEED_BUCKETS,
        )
        self.cache_served_tokens = _Counter(
            "groupqwen_cache_served_tokens",
            "Completion tokens answered from the cache instead of generated, by the model that wrote them",
            ["model"],
        )
        self.cache_hit_latency = _Histogram(
            "groupqwen_cache_hit_duration_seconds",
            "Total latency of successful chat completions answered from the cache",
            ["model", "route"],
            LATENCY_BUCKETS,
        )
        self.tokens = _Counter(
            "groupqwen_tokens", "Tokens processed, by model and kind (prompt, completion)", ["model", "kind"]
        )
        self.cache_bypasses = _Counter(
            "groupqwen_cache_bypasses",
            "Chat completions that bypassed the cache, by the cache's reason",
            ["reason"],
        )
        self.escalations = _Counter(
            "groupqwen_escalations", "Escalations to a larger model", ["model", "route"]
        )
        self.abandoned_tokens = _Counter(
            "groupqwen_abandoned_tokens",
            "Tokens generated by cascade tiers that were left (aborted early or escalated at their end), "
            "by the model that answered",
            ["model", "route"],
        )
        self._families = (
            self.requests,
            self.latency,
            self.ttft,
            self.queue_wait,
            self.speed,
            self.cache_served_tokens,
            self.cache_hit_latency,
            self.tokens,
            self.cache_bypasses,
            self.escalations,
            self.abandoned_tokens,
        )
        self.registry.register(self)

    def watch_writer(self, read: Callable[[], tuple[int, int, int, int]]) -> None:
        """Expose the persistence counters ``(written, dropped, pending, rejected)`` read at scrape time."""
        self.registry.register(_WriterCollector(read))

    def watch_websockets(self, read: Callable[[], tuple[int, int]]) -> None:
        """Expose ``(open sockets, parked generations)`` of ``/v1/ws`` read at scrape time."""
        self.registry.register(_WebSocketCollector(read))

    def observe(
        self, record: RequestRecord, *, cache_bypass: str | None = None, abandoned_tokens: int = 0
    ) -> None:
        """``cache_bypass``: why the cache was bypassed; ``abandoned_tokens``: what the cascade's left tiers
        generated (the trace knows both; the record does not keep them)."""
        model, route = self._model(record.model), self._route(record.route)
        by_route = (model, route)
        cache = record.cache if record.cache in CACHE_RESULTS else OTHER
        self.requests.inc((model, route, status_class(record.status), cache))
        if cache == "bypass" and cache_bypass is not None:
            self.cache_bypasses.inc((self._bypass_reason(cache_bypass),))
        self.tokens.inc((model, "prompt"), record.prompt_tokens)
        self.tokens.inc((model, "completion"), record.completion_tokens)
        if record.escalations:
            self.escalations.inc(by_route, record.escalations)
        if abandoned_tokens:
            self.abandoned_tokens.inc(by_route, abandoned_tokens)
        if not record.ok:
            return
        self.latency.observe(by_route, record.latency_s)
        if record.ttft_s is not None:
            self.ttft.observe(by_route, record.ttft_s)
        if record.queue_wait_s is not None:
            self.queue_wait.observe((model,), record.queue_wait_s)
        if record.hit:
            self.cache_served_tokens.inc((model,), record.completion_tokens)
            self.cache_hit_latency.observe(by_route, record.latency_s)
        elif record.tokens_per_s is not None:
            self.speed.observe((model,), record.tokens_per_s)

    def collect(self) -> list[Metric]:
        """The request families as they are now (the registry's collector of them)."""
        out = [family.family() for family in self._families]
        out.append(
            GaugeMetricFamily("groupqwen_requests_in_flight", "Chat completions running now", self.in_flight)
        )
        return out

    def render(self) -> bytes:
        return generate_latest(self.registry)
