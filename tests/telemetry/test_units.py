"""Pure parts: percentiles and windows, bounded labels, the buffered writer on the shipped fake store, the
live hub."""

from __future__ import annotations

import logging
import time

import pytest
from prometheus_client.parser import text_string_to_metric_families
from waiting import until

from groupqwen.errors import InvalidRequest, Overloaded
from groupqwen.telemetry.live import LiveHub
from groupqwen.telemetry.metrics import Metrics
from groupqwen.telemetry.records import parse_window, percentile, summarize
from groupqwen.telemetry.store import MemoryStore
from groupqwen.telemetry.timing import Trace, tenant
from groupqwen.telemetry.writer import BufferedWriter

from .test_persistence import record


def test_nearest_rank_percentiles() -> None:
    values = [float(v) for v in range(1, 101)]
    assert [percentile(values, p) for p in (50, 95, 99, 100)] == [50, 95, 99, 100]
    assert percentile([3.0], 99) == 3.0 and percentile([], 50) is None
    assert percentile([1.0, 2.0, 3.0, 4.0], 50) == 2.0


def test_summary_covers_exactly_the_window() -> None:
    records = [record(i, latency_s=float(i), started_at=1000.0) for i in range(1, 11)]  # finish at 1001…1010
    summary = summarize(records, window_s=5, until=1010)  # finished in (1005, 1010]
    assert summary["requests"] == 5
    assert summary["latency_seconds"] == {"p50": 8.0, "p95": 10.0, "p99": 10.0}
    mixed = [record(1, cache="hit"), record(2, cache="miss"), record(3, cache="hit", escalations=2)]
    mixed += [record(4, status=500, error="internal_error")]
    summary = summarize(mixed, window_s=1e9, until=2e9)
    assert summary["cache"]["hit_rate"] == pytest.approx(2 / 3)
    assert summary["escalations"] == 2 and summary["escalation_rate"] == 0.25
    assert summary["error_rate"] == 0.25 and summary["latency_seconds"]["p99"] == pytest.approx(0.3)


@pytest.mark.parametrize(
    ("text", "seconds"), [("90", 90), ("90s", 90), ("5m", 300), ("1.5h", 5400), ("7d", 604800)]
)
def test_windows_parse(text: str, seconds: float) -> None:
    assert parse_window(text, maximum=30 * 86400) == seconds


@pytest.mark.parametrize("text", ["", "5 minutes", "1w", "-1m", "0", "31d", "nan"])
def test_bad_windows_are_refused(text: str) -> None:
    with pytest.raises(InvalidRequest) as info:
        parse_window(text, maximum=30 * 86400)
    assert info.value.param == "window"


def test_label_cardinality_is_bounded() -> None:
    metrics = Metrics(max_label_values=3)
    for i in range(50):
        metrics.observe(record(i, model=f"model-{i}", route=f"route-{i}", status=200 + i * 7))
    models = set()
    statuses = set()
    for family in text_string_to_metric_families(metrics.render().decode()):
        for sample in family.samples:
            models.add(sample.labels.get("model"))
            statuses.add(sample.labels.get("status"))
    assert models - {None} == {"model-0", "model-1", "model-2", "other"}
    assert statuses - {None} <= {"2xx", "3xx", "4xx", "5xx"}


def test_tenant_and_trace() -> None:
    assert tenant("alice", "Bearer k") == "user:alice"
    assert tenant(None, "Bearer k") == tenant(None, "Bearer k") != tenant(None, "Bearer j")
    assert tenant(None, None) == "anonymous"
    trace = Trace("req", clock=10.0, wall=1000.0)
    trace.first_token_at = 10.5
    trace.used(7, 11)
    done = trace.record(now=12.5)
    assert (done.latency_s, done.ttft_s, done.tokens_per_s) == (
        2.5,
        0.5,
        5.0,
    )  # 10 tokens after the first in 2 s


def test_an_upstreams_usage_below_zero_counts_as_none() -> None:
    """An upstream's nonsense usage neither lowers a Prometheus counter (a reset, to Prometheus) nor the
    records' sums."""
    metrics = Metrics()
    for used in ((5, 3), (-40, -2)):
        trace = Trace("req", clock=10.0, wall=1000.0)
        trace.used(*used)
        metrics.observe(trace.record(now=11.0))
    tokens = {
        s.labels["kind"]: s.value
        for family in text_string_to_metric_families(metrics.render().decode())
        for s in family.samples
        if s.name == "groupqwen_tokens_total"
    }
    assert tokens == {"prompt": 5, "completion": 3}


def test_a_cache_hit_has_no_decode_speed() -> None:
    """A hit replays a stored answer in one piece: 200 tokens a tenth of a millisecond after the first
    token is not a speed (it read as 2,000,000 tokens/s)."""
    trace = Trace("req", clock=10.0, wall=1000.0)
    trace.cache = "hit"
    trace.first_token_at = 10.001
    trace.used(7, 200)
    done = trace.record(now=10.0011)
    assert done.cache == "hit" and done.tokens_per_s is None and done.completion_tokens == 200


def test_hits_are_reported_apart_from_generation_speed() -> None:
    # a hit as builds before the fix stored it: with a "speed" of 600,000 tokens/s
    generated = record(1, cache="miss", tokens_per_s=40.0, completion_tokens=20, latency_s=2.0)
    old_hit = record(2, cache="hit", tokens_per_s=600_000.0, completion_tokens=30, latency_s=0.004)
    hit = record(3, cache="hit", tokens_per_s=None, completion_tokens=50, latency_s=0.002)
    failed_hit = record(4, cache="hit", status=500, error="internal_error", tokens_per_s=None)
    summary = summarize([generated, old_hit, hit, failed_hit], window_s=1e9, until=2e9)
    assert summary["tokens_per_second_mean"] == 40.0
    assert summary["by_model"]["fake"]["tokens_per_second_mean"] == 40.0
    assert summary["cache"]["served_tokens"] == 80
    assert summary["cache"]["hit_latency_seconds"] == {"p50": 0.002, "p95": 0.004, "p99": 0.004}

    metrics = Metrics()
    for r in (generated, old_hit, hit):
        metrics.observe(r)
    samples = {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(metrics.render().decode())
        for s in family.samples
    }
    speed_count = samples[("groupqwen_generation_tokens_per_second_count", (("model", "fake"),))]
    speed_sum = samples[("groupqwen_generation_tokens_per_second_sum", (("model", "fake"),))]
    assert (speed_count, speed_sum) == (1, 40.0)
    assert samples[("groupqwen_cache_served_tokens_total", (("model", "fake"),))] == 80
    hits = (("model", "fake"), ("route", "explicit"))
    assert samples[("groupqwen_cache_hit_duration_seconds_count", hits)] == 2


async def test_writer_buffers_while_down_and_counts_drops_exactly() -> None:
    store = MemoryStore()
    writer = BufferedWriter(store, capacity=4, batch_size=3, flush_interval=0.01, max_backoff=0.02)
    store.down = True
    accepted = [writer.submit(record(i)) for i in range(10)]
    assert accepted == [True] * 4 + [False] * 6
    await until(lambda: writer.last_error is not None)
    assert (writer.written, writer.pending, writer.dropped) == (0, 4, 6) and writer.last_error
    store.down = False
    assert await writer.flush(30)
    assert (writer.written, writer.pending, writer.dropped) == (4, 0, 6) and writer.last_error is None
    assert sorted(store.records) == [f"r{i:04d}" for i in range(4)]
    await writer.close()


async def test_writer_prunes_past_retention() -> None:
    store = MemoryStore()
    store.write([record(0, started_at=1.0)])  # decades old
    writer = BufferedWriter(store, flush_interval=0.01, retention_s=86400)
    writer.submit(record(1, started_at=time.time()))
    assert await writer.flush(30)
    await until(lambda: "r0000" not in store.records)  # pruned once the buffer is empty
    assert list(store.records) == ["r0001"]
    await writer.close()


async def test_live_hub_drops_for_slow_subscribers_and_caps_them() -> None:
    hub = LiveHub(max_subscribers=1, queue_size=2)
    async with hub.subscribe() as subscription:
        for i in range(5):
            hub.publish(record(i))
        assert subscription.missed == 3
        assert [(await subscription.next(1)).id for _ in range(2)] == ["r0003", "r0004"]  # type: ignore[union-attr]
        assert await subscription.next(0.01) is None
        with pytest.raises(Overloaded):
            async with hub.subscribe():
                pass
    assert hub.subscribers == 0


def test_recent_records_are_bounded_by_bytes_not_count() -> None:
    """/v1/metrics' memory of recent requests holds at most ``recent_max_bytes``: the oldest go first, and
    a window reaching past them says it is not complete. Measured with tracemalloc, not trusted."""
    import tracemalloc

    from groupqwen.telemetry.service import Telemetry

    cap = 64 * 1024
    telemetry = Telemetry(recent_max_bytes=cap)
    now = time.time()

    def finish(i: int) -> None:
        trace = telemetry.trace()
        trace.started_wall = now - 600 + i * 0.01  # all inside the last 10 minutes
        telemetry.finish(trace)

    logging.disable(logging.INFO)  # the "request finished" lines: whatever handlers keep is not ours
    try:
        for i in range(2000):
            finish(i)
        tracemalloc.start()
        before = tracemalloc.get_traced_memory()[0]
        for i in range(2000, 6000):
            finish(i)
        grown = tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()
        logging.disable(logging.NOTSET)
    assert telemetry.recent_bytes <= cap
    kept = len(telemetry._recent)
    assert 0 < kept < 2000  # ~700 bytes each
    assert grown < cap // 2, grown  # 4,000 more requests held no more memory (2.8 MB unbounded)
    summary = telemetry.summary(3600)
    assert summary["requests"] == kept and summary["complete"] is False
    assert telemetry.summary(1)["complete"] is True  # the last second is all there
