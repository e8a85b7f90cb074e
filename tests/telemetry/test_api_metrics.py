"""/v1/metrics and /metrics against a known sequence of requests on the fake backend."""

from __future__ import annotations

import asyncio
import dataclasses
import json
from collections.abc import AsyncGenerator
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi.testclient import TestClient
from prometheus_client.parser import text_string_to_metric_families

from groupqwen.api.app import create_app
from groupqwen.backends.fake import FakeBackend
from groupqwen.config import load_settings
from groupqwen.messages import Chunk, GenerationRequest
from groupqwen.testing import FakeClock

from .conftest import gateway

URL = "/v1/chat/completions"


def chat(model: str = "fake", text: str = "say hi", **extra: Any) -> dict[str, Any]:
    return {"model": model, "messages": [{"role": "user", "content": text}], **extra}


def samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Every Prometheus sample as ``(name, sorted labels) → value``."""
    out = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def value(
    all_samples: dict[tuple[str, tuple[tuple[str, str], ...]], float], name: str, **labels: str
) -> float:
    return all_samples.get((name, tuple(sorted(labels.items()))), 0.0)


def test_numbers_match_a_known_sequence_of_requests(tmp_path: Path) -> None:
    fake = FakeBackend(model_id="fake", tokens=("Hello", ",", " world", "!"))  # 4 completion tokens
    small = FakeBackend(model_id="small", tokens=("ok",))  # 1 completion token
    flaky = FakeBackend(model_id="flaky", tokens=("a", "b", "c"), fail_after=1)
    services = gateway(tmp_path, {"fake": fake, "small": small, "flaky": flaky})
    with TestClient(create_app(services.settings, services)) as http:
        # prompt tokens by the fake: words + 4 per message → "say hi" = 6
        for _ in range(3):
            assert http.post(URL, json=chat("fake")).status_code == 200
        assert http.post(URL, json=chat("auto")).status_code == 200  # route "default" → fake
        stream = http.post(URL, json=chat("small", stream=True, stream_options={"include_usage": True}))
        assert stream.status_code == 200 and "[DONE]" in stream.text
        assert http.post(URL, json=chat("small", stream=True)).status_code == 200  # usage still recorded
        assert http.post(URL, json=chat("flaky")).status_code == 502
        failed_stream = http.post(URL, json=chat("flaky", stream=True))  # fails after the first token
        assert failed_stream.status_code == 200 and '"error"' in failed_stream.text
        assert http.post(URL, json=chat("nope")).status_code == 404
        assert http.post(URL, content=b"{not json").status_code == 400

        summary = http.get("/v1/metrics", params={"window": "1h"}).json()
        prom = samples(http.get("/metrics").text)

    assert summary["requests"] == 10
    assert summary["errors"] == 4
    assert summary["error_rate"] == pytest.approx(0.4)
    assert summary["status"] == {"200": 6, "400": 1, "404": 1, "502": 2}
    assert summary["cache"] == {
        "hit": 0,
        "miss": 0,
        "bypass": 10,
        "hit_rate": None,
        "served_tokens": 0,
        "hit_latency_seconds": {"p50": None, "p95": None, "p99": None},
    }
    assert summary["escalations"] == 0 and summary["escalation_rate"] == 0.0
    # tokens: 4 fake requests (6 + 4 each), 2 small (6 + 1), the failed flaky ones count no usage
    assert summary["tokens"] == {"prompt": 36, "completion": 18, "total": 54}
    by_model = summary["by_model"]
    assert set(by_model) == {"fake", "small", "flaky", "none"}
    assert by_model["fake"]["requests"] == 4 and by_model["fake"]["share"] == pytest.approx(0.4)
    assert by_model["small"]["requests"] == 2 and by_model["small"]["share"] == pytest.approx(0.2)
    assert by_model["flaky"]["errors"] == 2 and by_model["flaky"]["error_rate"] == 1.0
    assert by_model["none"]["requests"] == 2  # failed before a model was decided
    assert by_model["flaky"]["latency_seconds"] == {"p50": None, "p95": None, "p99": None}
    fake_latency = by_model["fake"]["latency_seconds"]
    assert 0 < fake_latency["p50"] <= fake_latency["p95"] <= fake_latency["p99"]
    assert 0 < by_model["fake"]["ttft_seconds"]["p50"] <= fake_latency["p99"]
    assert by_model["fake"]["queue_wait_seconds"]["p50"] is not None
    assert summary["by_route"]["explicit"]["requests"] == 7
    assert summary["by_route"]["default"]["requests"] == 1
    assert summary["by_route"]["default"]["share"] == pytest.approx(0.1)

    # Prometheus: the same numbers
    req = "groupqwen_requests_total"
    assert value(prom, req, model="fake", route="explicit", status="2xx", cache="bypass") == 3
    assert value(prom, req, model="fake", route="default", status="2xx", cache="bypass") == 1
    assert value(prom, req, model="small", route="explicit", status="2xx", cache="bypass") == 2
    assert value(prom, req, model="flaky", route="explicit", status="5xx", cache="bypass") == 2
    assert value(prom, req, model="none", route="none", status="4xx", cache="bypass") == 2
    assert sum(v for (name, _), v in prom.items() if name == req) == summary["requests"]
    tokens = "groupqwen_tokens_total"
    assert value(prom, tokens, model="fake", kind="prompt") == 24
    assert value(prom, tokens, model="fake", kind="completion") == 16
    assert value(prom, tokens, model="small", kind="completion") == 2
    duration = "groupqwen_request_duration_seconds_count"
    assert value(prom, duration, model="fake", route="explicit") == 3
    assert value(prom, duration, model="small", route="explicit") == 2
    assert value(prom, duration, model="flaky", route="explicit") == 0  # errors are not latencies
    assert value(prom, "groupqwen_time_to_first_token_seconds_count", model="fake", route="explicit") == 3
    assert value(prom, "groupqwen_requests_in_flight") == 0
    assert value(prom, "groupqwen_telemetry_records_dropped_total") == 0


def test_health_is_cheap_and_detailed_health_names_every_check(tmp_path: Path) -> None:
    settings = load_settings(
        models={"fake": {"backend": "fake", "fake_reply": "fine thanks"}},
        default_model="fake",
        models_dir=tmp_path,
        data_dir=tmp_path / "data",
    )
    with TestClient(create_app(settings)) as http:
        assert http.get("/health").json() == {"status": "ok", "models": {"fake": "unloaded"}}
        report = http.get("/v1/health").json()
    assert report["status"] == "ok"
    checks = report["checks"]
    assert {"database", "disk", "models", "gpu"} <= set(checks)  # (+ "cache" when the cache is on)
    assert checks["database"]["store"] == "sqlite" and checks["database"]["status"] == "ok"
    assert checks["gpu"]["gpu"] == "none"  # a CPU-only host
    assert checks["models"]["models"] == {"fake": {"status": "unloaded", "error": None}}
    assert checks["disk"]["models_dir"]["free_bytes"] > 0 and checks["disk"]["data_dir"]["path"]
    assert (tmp_path / "data" / "telemetry.db").is_file()  # the default store: SQLite in data_dir


@pytest.mark.parametrize(
    ("query", "param"),
    [
        ("window=abc", "window"),
        ("window=0", "window"),
        ("window=-5m", "window"),
        ("window=400d", "window"),
        ("window=2d", "window"),  # memory keeps one day; older windows need source=store
        ("source=elsewhere", "source"),
    ],
)
def test_bad_metrics_parameters_are_clear_400s(tmp_path: Path, query: str, param: str) -> None:
    services = gateway(tmp_path, {"fake": FakeBackend()}, persist=False)
    with TestClient(create_app(services.settings, services)) as http:
        response = http.get(f"/v1/metrics?{query}")
        stream = http.get("/v1/metrics/stream?interval=0")
        store = http.get("/v1/metrics?source=store")
    assert response.status_code == 400
    error = response.json()["error"]
    assert error["type"] == "invalid_request_error" and error["param"] == param
    assert param in error["message"]
    assert stream.status_code == 400 and stream.json()["error"]["param"] == "interval"
    assert store.status_code == 400 and "persists no records" in store.json()["error"]["message"]


def test_tenant_is_the_user_field_or_a_key_hash_and_no_text_is_kept(tmp_path: Path) -> None:
    services = gateway(tmp_path, {"fake": FakeBackend()})
    secret = "the-prompt-words-xyzzy"
    with TestClient(create_app(services.settings, services)) as http:
        http.post(URL, json=chat(text=secret, user="alice"))
        http.post(URL, json=chat(text=secret), headers={"authorization": "Bearer sk-secret-key"})
        http.post(URL, json=chat(text=secret, stream=True), headers={"x-request-id": "req-42"})
    records = list(services.telemetry._recent)
    assert [r.tenant for r in records][:1] == ["user:alice"]
    assert records[1].tenant.startswith("key:") and "sk-secret" not in records[1].tenant
    assert records[2].tenant == "anonymous" and records[2].request_id == "req-42" and records[2].stream
    stored = services.telemetry.writer.store.query(0, 1e12)
    assert len(stored) == 3  # closing the app flushed the buffer
    for record in stored:
        fields = json.dumps(dataclasses.asdict(record))
        assert "xyzzy" not in fields and "Hello" not in fields
    assert b"xyzzy" not in (tmp_path / "data" / "telemetry.db").read_bytes()


async def test_queue_wait_is_measured_by_the_pool(tmp_path: Path) -> None:
    """On the pool's clock: the first answer holds the one slot until the second request queues, then
    takes 0.2 s; the second waited exactly that."""
    clock = FakeClock()
    services: Any = None

    class Held(FakeBackend):
        async def stream(self, request: GenerationRequest) -> AsyncGenerator[Chunk, None]:
            if not self.requests:  # the first answer
                deadline = asyncio.get_running_loop().time() + 10
                while services.pool.states()[0].queued < 1:
                    assert asyncio.get_running_loop().time() < deadline, "the second request never queued"
                    await asyncio.sleep(0.001)
                clock.advance(0.2)
            async for chunk in super().stream(request):
                yield chunk

    slow = Held(model_id="slow", tokens=("a", "b", "c", "d"), delay=0.05)
    services = gateway(tmp_path, {"slow": slow}, persist=False, clock=clock)
    app = create_app(services.settings, services)
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://t") as http:
        first, second = await asyncio.gather(
            http.post(URL, json=chat("slow")), http.post(URL, json=chat("slow"))
        )
    assert first.status_code == second.status_code == 200
    waits = sorted(r.queue_wait_s or 0 for r in services.telemetry._recent)
    assert waits == [0, pytest.approx(0.2)]  # the second waited for the first (one slot)
    ttfts = [r.ttft_s or 0 for r in services.telemetry._recent]
    assert all(t >= 0.05 for t in ttfts)
