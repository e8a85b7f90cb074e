"""Rate limits kept in a real Redis (Valkey): shared by two gateways, and Redis failing — stopped between
requests (``on_redis_down: open`` and ``closed``) and killed and restarted under load against a real
``groupqwen serve`` process; and the ``openai`` SDK's own retry honouring a 429's headers."""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest
from servers import ValkeyServer

from groupqwen.testing import FakeClock, fake_services, fake_settings, gateway, serve_process

CHAT = {"model": "fake", "messages": [{"role": "user", "content": "hi"}]}


def limits(redis_url: str, **more: Any) -> dict[str, Any]:
    return {"anonymous": True, "redis_url": redis_url, "key": {"requests_per_minute": 3}, **more}


def test_two_gateways_share_the_buckets(tmp_path: Path, redis_url: str) -> None:
    clock = FakeClock()
    one = fake_services(fake_settings(tmp_path / "one", limits=limits(redis_url)), clock=clock)
    two = fake_services(fake_settings(tmp_path / "two", limits=limits(redis_url)), clock=clock)
    with gateway(one) as first, gateway(two) as second:
        statuses = [c.post("/v1/chat/completions", json=CHAT).status_code for c in (first, second, first)]
        assert statuses == [200, 200, 200]
        refused = second.post("/v1/chat/completions", json=CHAT)
        assert refused.status_code == 429 and refused.headers["retry-after"] == "20"
        clock.advance(20)
        assert first.post("/v1/chat/completions", json=CHAT).status_code == 200


@pytest.mark.parametrize("mode", ["open", "closed"])
def test_redis_down_fails_open_or_closed_as_configured(
    tmp_path: Path, redis_url: str, valkey: ValkeyServer, mode: str
) -> None:
    clock = FakeClock()
    settings = fake_settings(tmp_path, limits=limits(redis_url, on_redis_down=mode))
    with gateway(fake_services(settings, clock=clock)) as client:
        assert client.post("/v1/chat/completions", json=CHAT).headers["x-ratelimit-remaining-requests"] == "2"
        assert client.get("/v1/health").json()["checks"]["limits"]["status"] == "ok"
        valkey.stop()
        try:
            for _ in range(5):  # more than the limit
                response = client.post("/v1/chat/completions", json=CHAT)
                if mode == "open":
                    assert response.status_code == 200, response.text
                    assert not any(h.startswith("x-ratelimit-") for h in response.headers)
                else:
                    assert response.status_code == 503, response.text
                    assert response.json()["error"]["code"] == "limits_unavailable"
                    assert response.headers["retry-after"] == "1"
            health = client.get("/v1/health").json()
            assert health["status"] == "degraded"
            check = health["checks"]["limits"]
            assert check["status"] == "degraded" and "rate limits' Redis is unavailable" in check["reason"]
        finally:
            valkey.start()  # same port, empty: the counts start afresh
        clock.advance(1)  # the breaker's wait
        assert client.get("/v1/health").json()["checks"]["limits"]["status"] == "ok"
        assert client.post("/v1/chat/completions", json=CHAT).headers["x-ratelimit-remaining-requests"] == "2"


def test_redis_killed_and_restarted_under_load_fails_no_request(
    tmp_path: Path, redis_url: str, valkey: ValkeyServer
) -> None:
    """A real gateway process, 4 clients sending without pause; Redis is killed (SIGKILL) and restarted
    while they do: every request succeeds (``on_redis_down: open``), health is degraded while Redis is
    down and ok once it is back, and the limits count again."""
    many = {
        "anonymous": True,
        "redis_url": redis_url,
        "redis_timeout_s": 5,  # a refused connection fails at once; a busy machine's slow answer must not
        "key": {"requests_per_minute": 1_000_000},
    }
    with serve_process(tmp_path, limits=many) as served:
        failures: list[str] = []
        sent = 0
        stop = threading.Event()

        def load() -> None:
            nonlocal sent
            with httpx.Client(base_url=served.url, timeout=30) as client:
                while not stop.is_set():
                    response = client.post("/v1/chat/completions", json=CHAT)
                    sent += 1
                    if response.status_code != 200:
                        failures.append(f"{response.status_code} {response.text[:200]}")

        def health() -> dict[str, Any]:
            answer: dict[str, Any] = httpx.get(served.url + "/v1/health", timeout=30).json()
            return answer

        def wait_for(condition: Any) -> None:
            for _ in range(600):
                if condition():
                    return
                stop.wait(0.05)
            raise AssertionError("condition never held")

        workers = [threading.Thread(target=load) for _ in range(4)]
        for worker in workers:
            worker.start()
        try:
            wait_for(lambda: sent >= 20)
            assert valkey.process is not None
            valkey.process.kill()
            valkey.process.wait()
            valkey.process = None
            before = sent
            wait_for(lambda: health()["checks"]["limits"]["status"] == "degraded")
            wait_for(lambda: sent >= before + 20)  # served while Redis is down
            valkey.start()
            wait_for(lambda: health()["checks"]["limits"]["status"] == "ok")
            before = sent
            wait_for(lambda: sent >= before + 20)
        finally:
            stop.set()
            for worker in workers:
                worker.join(60)
        assert failures == []

        def counted() -> bool:  # in Redis again: the answer carries the count
            answer = httpx.post(served.url + "/v1/chat/completions", json=CHAT, timeout=30)
            return "x-ratelimit-remaining-requests" in answer.headers

        wait_for(counted)


def test_the_openai_sdk_retries_a_429_after_the_wait_it_names(tmp_path: Path) -> None:
    """A real gateway process, 60 requests a minute: once the burst is spent, the SDK (``max_retries=3``)
    gets a 429, waits what ``retry-after-ms`` says (about a second) and succeeds. Calls are made until one
    met a 429 (the bucket refills while they run; a call that found a request in it just spends it)."""
    statuses: list[int] = []
    with serve_process(tmp_path, limits={"anonymous": True, "key": {"requests_per_minute": 60}}) as served:
        with httpx.Client(base_url=served.url, timeout=30) as plain:
            while plain.post("/v1/chat/completions", json=CHAT).status_code == 200:
                pass  # spend the burst
        hooks = {"response": [lambda response: statuses.append(response.status_code)]}
        with httpx.Client(event_hooks=hooks, timeout=30) as http:
            sdk = openai.OpenAI(base_url=served.url + "/v1", api_key="x", http_client=http, max_retries=3)
            for _ in range(100):
                statuses.clear()
                answer = sdk.chat.completions.create(
                    model="fake", messages=[{"role": "user", "content": "hi"}]
                )
                assert answer.choices[0].message.content
                if 429 in statuses:
                    break
    assert statuses[0] == 429 and statuses[-1] == 200, statuses
