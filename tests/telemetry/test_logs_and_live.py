"""Every log line of a request carries its request id (JSON and console formats); the live stream sends
summaries and one event per finished request."""

from __future__ import annotations

import io
import json
import logging
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi.testclient import TestClient

from groupqwen import log
from groupqwen.api.app import create_app
from groupqwen.backends.fake import FakeBackend

from .conftest import gateway

URL = "/v1/chat/completions"
CHAT = {"model": "fake", "messages": [{"role": "user", "content": "secret prompt words"}]}


@contextmanager
def captured(fmt: str) -> Iterator[io.StringIO]:
    buffer = io.StringIO()
    handler = logging.StreamHandler(buffer)
    handler.setFormatter(log.formatter(fmt))
    root = logging.getLogger()
    level = root.level
    root.addHandler(handler)
    root.setLevel(logging.INFO)
    try:
        yield buffer
    finally:
        root.removeHandler(handler)
        root.setLevel(level)


@pytest.mark.parametrize("fmt", ["json", "console"])
def test_every_line_of_a_request_carries_its_request_id(tmp_path: Path, fmt: str) -> None:
    flaky = FakeBackend(model_id="flaky", tokens=("a", "b"), fail_after=1)
    services = gateway(tmp_path, {"fake": FakeBackend(), "flaky": flaky}, persist=False)
    ids = ["req-plain", "req-stream", "req-missing", "req-failing"]
    with TestClient(create_app(services.settings, services)) as http, captured(fmt) as out:
        http.post(URL, json=CHAT, headers={"x-request-id": ids[0]})
        http.post(URL, json={**CHAT, "stream": True}, headers={"x-request-id": ids[1]})
        http.post(URL, json={**CHAT, "model": "nope"}, headers={"x-request-id": ids[2]})
        http.post(URL, json={**CHAT, "model": "flaky", "stream": True}, headers={"x-request-id": ids[3]})
    lines = [line for line in out.getvalue().splitlines() if line.strip()]
    if fmt == "json":
        entries = [json.loads(line) for line in lines]
        ours = [
            e
            for e in entries
            if e["logger"].startswith("groupqwen.") and e["logger"] != "groupqwen.telemetry.writer"
        ]
        assert ours and all(e["request_id"] in ids for e in ours), ours
        for request_id in ids:
            finished = [e for e in ours if e["request_id"] == request_id and e["msg"] == "request finished"]
            assert len(finished) == 1
        by_id = {e["request_id"]: e for e in ours if e["msg"] == "request finished"}
        assert by_id["req-missing"]["status"] == 404 and by_id["req-failing"]["status"] == 502
        assert by_id["req-stream"]["stream"] is True
    else:
        ours = [line for line in lines if " logger=groupqwen." in line and "telemetry.writer" not in line]
        assert ours and all(any(f"request_id={i} " in line for i in ids) for line in ours), ours
    assert "secret prompt" not in out.getvalue()  # no prompt text at INFO


def _events(lines: Iterator[str], count: int) -> list[tuple[str, dict[str, object]]]:
    events: list[tuple[str, dict[str, object]]] = []
    name = ""
    for line in lines:
        if line.startswith("event: "):
            name = line.removeprefix("event: ")
        elif line.startswith("data: "):
            events.append((name, json.loads(line.removeprefix("data: "))))
            if len(events) == count:
                break
    return events


def test_live_stream_sends_summaries_and_finished_requests(tmp_path: Path, live_server: Any) -> None:
    services = gateway(tmp_path, {"fake": FakeBackend()}, persist=False)
    with (
        live_server(create_app(services.settings, services)) as url,
        httpx.Client(base_url=url, timeout=10) as http,
    ):
        http.post(URL, json=CHAT)
        with http.stream(
            "GET", "/v1/metrics/stream", params={"interval": 30, "window": "5m", "events": 3}
        ) as stream:
            assert stream.headers["content-type"].startswith("text/event-stream")
            lines = stream.iter_lines()
            [(name, summary)] = _events(lines, 1)
            assert name == "summary" and summary["requests"] == 1 and summary["window_seconds"] == 300
            assert services.telemetry.live.subscribers == 1
            http.post(URL, json={**CHAT, "user": "bob"}, headers={"x-request-id": "req-live"})
            http.post(URL, json={**CHAT, "model": "nope"})
            events = _events(lines, 2)
        assert [name for name, _ in events] == ["request", "request"]
        first, second = events[0][1], events[1][1]
        assert first["request_id"] == "req-live" and first["tenant"] == "user:bob" and first["status"] == 200
        assert second["status"] == 404 and second["model"] == "none"
        assert "messages" not in first and "content" not in first
        deadline = time.monotonic() + 5
        while services.telemetry.live.subscribers and time.monotonic() < deadline:
            time.sleep(0.02)
        assert services.telemetry.live.subscribers == 0  # the stream ended and unsubscribed
