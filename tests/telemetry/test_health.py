"""Health: checks time out instead of hanging, Redis plugs in through a ping, the overall status follows
the checks (degraded when Redis or the database stops, back to ok when they return)."""

from __future__ import annotations

import asyncio
import threading
import time
from pathlib import Path

import redis.asyncio as aioredis
from fastapi.testclient import TestClient
from servers import ValkeyServer

from groupqwen.api.app import create_app
from groupqwen.backends.fake import FakeBackend
from groupqwen.telemetry.health import (
    CheckResult,
    Health,
    ModelHealth,
    blocking,
    gpu_check,
    models_check,
    ping_check,
)

from .conftest import gateway


async def test_a_hung_check_times_out_and_the_others_still_answer() -> None:
    release = threading.Event()

    def hung() -> CheckResult:
        release.wait(60)
        return CheckResult("ok")

    async def never() -> CheckResult:
        await asyncio.sleep(60)
        return CheckResult("ok")

    health = Health(timeout=0.2)
    health.add("hung", blocking(hung))
    health.add("never", never)
    health.add("fine", models_check(lambda: [ModelHealth("m", "loaded")]), critical=True)
    started = time.perf_counter()
    report = await health.run()
    assert time.perf_counter() - started < 30  # not the hung probe's minute
    assert report["status"] == "degraded"  # non-critical checks down: degraded, not down
    assert report["checks"]["hung"]["reason"] == "no answer within 0.2s"
    assert report["checks"]["never"]["status"] == "down"
    assert report["checks"]["fine"]["status"] == "ok"
    again = await health.run()  # the stuck probe is not started a second time
    assert again["checks"]["hung"]["reason"] == "the previous probe has not answered yet"
    release.set()  # the probe's thread answers; the next run after that reports it
    deadline = time.monotonic() + 10
    while (await health.run())["checks"]["hung"]["status"] != "ok":
        assert time.monotonic() < deadline, "the released probe never answered"
        await asyncio.sleep(0.01)


async def test_models_decide_between_degraded_and_down() -> None:
    states = [ModelHealth("a", "loaded"), ModelHealth("b", "failed", "no such file")]
    health = Health()
    health.add("models", models_check(lambda: states), critical=True)
    report = await health.run()
    assert report["status"] == "degraded"
    assert report["checks"]["models"]["reason"] == "b failed: no such file"
    states[0] = ModelHealth("a", "failed", "bad GGUF")
    report = await health.run()
    assert report["status"] == "down" and report["checks"]["models"]["reason"] == "every model failed to load"
    states.clear()
    assert (await health.run())["checks"]["models"]["reason"] == "no model can be served"


async def test_gpu_reports_none_on_cpu_hosts_and_memory_through_nvml() -> None:
    health = Health()
    health.add("cpu", gpu_check(lambda: None))
    health.add("gpu", gpu_check(lambda: ("NVIDIA H100", 80 * 2**30, 60 * 2**30)))
    checks = (await health.run())["checks"]
    assert checks["cpu"]["gpu"] == "none" and checks["cpu"]["status"] == "ok"
    assert checks["gpu"]["gpu"] == "NVIDIA H100"
    assert (
        checks["gpu"]["memory_used_bytes"] == 20 * 2**30 and checks["gpu"]["memory_free_bytes"] == 60 * 2**30
    )


def test_detailed_health_is_503_when_down(tmp_path: Path) -> None:
    services = gateway(tmp_path, {"fake": FakeBackend()}, persist=False)
    services.telemetry.health.add("models", models_check(lambda: []), critical=True)
    with TestClient(create_app(services.settings, services)) as http:
        response = http.get("/v1/health")
        assert http.get("/health").status_code == 200  # liveness stays cheap and up
    assert response.status_code == 503 and response.json()["status"] == "down"


def test_health_flips_to_degraded_when_redis_stops_and_back(
    redis_server: ValkeyServer, tmp_path: Path
) -> None:
    services = gateway(tmp_path, {"fake": FakeBackend()})
    client = aioredis.Redis(
        host="127.0.0.1", port=redis_server.port, socket_timeout=0.5, socket_connect_timeout=0.5
    )
    services.telemetry.health.add("redis", ping_check(client.ping, "redis"))
    with TestClient(create_app(services.settings, services)) as http:
        report = http.get("/v1/health").json()
        assert report["status"] == "ok" and report["checks"]["redis"]["status"] == "ok"
        redis_server.stop()
        report = http.get("/v1/health").json()
        assert report["status"] == "degraded"
        assert report["checks"]["redis"]["status"] == "down"  # refused, or retried past the timeout
        assert report["checks"]["redis"]["reason"].startswith(("redis unreachable", "no answer within"))
        redis_server.start()
        report = http.get("/v1/health").json()
        assert report["status"] == "ok", report
