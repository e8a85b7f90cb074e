"""``groupqwen.testing``: the helpers it ships for tests written against GroupQwen work as documented."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from groupqwen.backends.fake import FakeBackend
from groupqwen.testing import FakeClock, fake_services, fake_settings, gateway


def test_the_readme_example(tmp_path: Path) -> None:
    backend = FakeBackend(model_id="fake", tokens=["Hello", "!"])
    with gateway(fake_services(fake_settings(tmp_path), backend)) as client:
        body = {"model": "fake", "messages": [{"role": "user", "content": "Hi"}]}
        response = client.post("/v1/chat/completions", json=body)
    assert response.json()["choices"][0]["message"]["content"] == "Hello!"
    assert len(backend.requests) == 1


def test_fake_settings_serve_only_the_fakes(tmp_path: Path) -> None:
    settings = fake_settings(tmp_path, {"text": {}, "seeing": {"vision": True}}, max_queue=3)
    assert set(settings.available()) == {"text", "seeing"}
    assert settings.default_model == "text" and settings.max_queue == 3
    assert settings.catalog()["seeing"].vision and settings.cache.backend == "off"
    assert settings.data_dir == tmp_path / "data"


def test_without_backends_the_settings_fakes_answer(tmp_path: Path) -> None:
    settings = fake_settings(tmp_path, {"echo": {"fake_reply": "Configured reply."}})
    services = fake_services(settings)
    assert services.telemetry.writer is None  # in memory
    with gateway(services) as client:
        models = client.get("/v1/models").json()["data"]
        body = {"model": "auto", "messages": [{"role": "user", "content": "Hi"}]}
        answer = client.post("/v1/chat/completions", json=body).json()
    assert [m["id"] for m in models] == ["echo", "auto"]
    assert answer["choices"][0]["message"]["content"] == "Configured reply."


async def test_fake_clock_wakes_sleepers_when_advanced() -> None:
    clock = FakeClock()
    start, wall = clock.monotonic(), clock.time()
    woke: list[float] = []

    async def sleeper(seconds: float) -> None:
        await clock.sleep(seconds)
        woke.append(seconds)

    tasks = [asyncio.create_task(sleeper(s)) for s in (1, 2)]
    await asyncio.sleep(0)  # both start, and wait on the clock
    assert clock.sleepers == 2
    clock.advance(1.5)
    await tasks[0]
    assert woke == [1] and not tasks[1].done()
    clock.advance(0.5)
    await tasks[1]
    assert woke == [1, 2] and clock.sleepers == 0
    assert (clock.monotonic() - start, clock.time() - wall) == (2, 2)
    await clock.sleep(0)  # no wait
    cancelled = asyncio.create_task(clock.sleep(5))
    await asyncio.sleep(0)
    cancelled.cancel()
    with pytest.raises(asyncio.CancelledError):
        await cancelled
    assert clock.sleepers == 0
