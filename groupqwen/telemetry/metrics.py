"""One Prometheus registry per gateway, fed by the same ``RequestRecord``s as the JSON summary.

Names and labels follow Prometheus conventions (``groupqwen_`` prefix, base units, ``_total`` counters).
Label values are bounded: ``model`` and ``route`` keep the first ``max_label_values`` values they see and
fold the rest into ``other``; ``status`` is the HTTP status class (``2xx`` … ``5xx``); ``cache`` is one of
hit/miss/bypass, and a bypass's ``reason`` (the cache's own short names: ``policy``, ``no_cache``,
``store_slow``, ``store_down``, ``embedder``, ``timeout``) is bounded the same way. Tenants and request ids
are never labels.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar, cast

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.metrics import MetricWrapperBase
from prometheus_client.registry import Collector

from groupqwen.telemetry.records import CACHE_RESULTS, RequestRecord

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
OTHER = "other"
LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300)
SPEED_BUCKETS = (1, 2, 5, 10, 20, 50, 100, 200, 500, 1000)
M = TypeVar("M", bound=MetricWrapperBase)


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


class Metrics:
    def __init__(self, *, max_label_values: int = 32) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self._model = BoundedLabel(max_label_values)
        self._route = BoundedLabel(max_label_values)
        self._bypass_reason = BoundedLabel(max_label_values)
        self._children: dict[tuple[Any, tuple[str, ...]], Any] = {}
        r = self.registry
        self.requests = Counter(
            "groupqwen_requests",
            "Chat completions finished, by model, route, status class and cache result",
            ["model", "route", "status", "cache"],
            registry=r,
        )
        self.latency = Histogram(
            "groupqwen_request_duration_seconds",
            "Total latency of successful chat completions",
            ["model", "route"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.ttft = Histogram(
            "groupqwen_time_to_first_token_seconds",
            "Time to the first token of successful chat completions",
            ["model", "route"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.queue_wait = Histogram(
            "groupqwen_queue_wait_seconds",
            "Time waiting for a model (a free slot, and its load when cold)",
            ["model"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.speed = Histogram(
            "groupqwen_generation_tokens_per_second",
            "Decode speed of successful chat completions a model generated (cache hits excluded)",
            ["model"],
            buckets=SPEED_BUCKETS,
            registry=r,
        )
        self.cache_served_tokens = Counter(
            "groupqwen_cache_served_tokens",
            "Completion tokens answered from the cache instead of generated, by the model that wrote them",
            ["model"],
            registry=r,
        )
        self.cache_hit_latency = Histogram(
            "groupqwen_cache_hit_duration_seconds",
            "Total latency of successful chat completions answered from the cache",
            ["model", "route"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.tokens = Counter(
            "groupqwen_tokens",
            "Tokens processed, by model and kind (prompt, completion)",
            ["model", "kind"],
            registry=r,
        )
        self.cache_bypasses = Counter(
            "groupqwen_cache_bypasses",
            "Chat completions that bypassed the cache, by the cache's reason",
            ["reason"],
            registry=r,
        )
        self.escalations = Counter(
            "groupqwen_escalations", "Escalations to a larger model", ["model", "route"], registry=r
        )
        self.abandoned_tokens = Counter(
            "groupqwen_abandoned_tokens",
            "Tokens generated by cascade tiers that were left (aborted early or escalated at their end), "
            "by the model that answered",
            ["model", "route"],
            registry=r,
        )
        self.in_flight = Gauge("groupqwen_requests_in_flight", "Chat completions running now", registry=r)

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
        child = self._child
        cache = record.cache if record.cache in CACHE_RESULTS else OTHER
        child(self.requests, model, route, status_class(record.status), cache).inc()
        if cache == "bypass" and cache_bypass is not None:
            child(self.cache_bypasses, self._bypass_reason(cache_bypass)).inc()
        child(self.tokens, model, "prompt").inc(record.prompt_tokens)
        child(self.tokens, model, "completion").inc(record.completion_tokens)
        if record.escalations:
            child(self.escalations, model, route).inc(record.escalations)
        if abandoned_tokens:
            child(self.abandoned_tokens, model, route).inc(abandoned_tokens)
        if not record.ok:
            return
        child(self.latency, model, route).observe(record.latency_s)
        if record.ttft_s is not None:
            child(self.ttft, model, route).observe(record.ttft_s)
        if record.queue_wait_s is not None:
            child(self.queue_wait, model).observe(record.queue_wait_s)
        if record.hit:
            child(self.cache_served_tokens, model).inc(record.completion_tokens)
            child(self.cache_hit_latency, model, route).observe(record.latency_s)
        elif record.tokens_per_s is not None:
            child(self.speed, model).observe(record.tokens_per_s)

    def _child(self, metric: M, *labels: str) -> M:
        """``metric.labels(*labels)``, remembered: its label values are bounded, so are the children (the
        client's ``labels`` validates and locks each time: 0.9 µs, eight times a request)."""
        key = (metric, labels)
        found = self._children.get(key)
        if found is None:
            found = self._children[key] = metric.labels(*labels)
        return cast(M, found)

    def render(self) -> bytes:
        return generate_latest(self.registry)
