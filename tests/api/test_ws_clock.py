"""``/v1/ws``'s timers on the injected clock (in-process, ``groupqwen.testing.FakeClock``): the heartbeat
drops a silent peer at 2 intervals and not before, a parked generation runs until the resume window ends
and not after. Nothing here sleeps for the code's timers: the test moves the clock."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from starlette.testclient import WebSocketTestSession

from groupqwen.api.app import create_app
from groupqwen.backends.fake import FakeBackend
from groupqwen.testing import FakeClock, fake_services, fake_settings, gateway

HEARTBEAT = 10.0
WINDOW = 30.0


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def backend() -> FakeBackend:
    return FakeBackend(tokens=[f" t{i}" for i in range(2000)], delay=0.005)


@pytest.fixture
def client(tmp_path: Path, clock: FakeClock, backend: FakeBackend) -> Iterator[TestClient]:
    settings = fake_settings(tmp_path, ws={"heartbeat_s": HEARTBEAT, "resume_window_s": WINDOW})
    with gateway(fake_services(settings, backend, clock=clock)) as test_client:
        yield test_client


def _advance(client: TestClient, clock: FakeClock, seconds: float) -> None:
    assert client.portal is not None
    client.portal.call(clock.advance, seconds)


def _settled(ws: WebSocketTestSession) -> None:
    """Every frame sent before has been handled (a ping answered comes after them)."""
    ws.send_json({"type": "ping", "data": "sync"})
    while (frame := ws.receive_json()) != {"type": "pong", "data": "sync"}:
        assert frame["type"] in ("ping", "chunk"), frame


def _until(condition: Callable[[], Any]) -> None:
    deadline = time.monotonic() + 30
    while not condition():
        assert time.monotonic() < deadline, "never happened"
        time.sleep(0.005)


def test_a_silent_peer_is_dropped_at_two_heartbeats(client: TestClient, clock: FakeClock) -> None:
    with client.websocket_connect("/v1/ws") as ws:
        assert ws.receive_json()["type"] == "hello"
        _settled(ws)  # the client's last frame: now
        _until(lambda: clock.sleepers >= 1)
        _advance(client, clock, HEARTBEAT)
        assert ws.receive_json() == {"type": "ping"}
        _advance(client, clock, HEARTBEAT - 0.001)
        _until(lambda: clock.sleepers >= 1)
        _advance(client, clock, 0.001)
        closed = ws.receive()
    assert closed["type"] == "websocket.close" and closed["code"] == 1001


def test_a_peer_that_answers_is_kept(client: TestClient, clock: FakeClock) -> None:
    with client.websocket_connect("/v1/ws") as ws:
        ws.receive_json()
        for _ in range(5):
            _until(lambda: clock.sleepers >= 1)
            _advance(client, clock, HEARTBEAT)
            assert ws.receive_json() == {"type": "ping"}
            ws.send_json({"type": "pong"})
            _settled(ws)
        ws.send_json({"type": "ping"})
        assert ws.receive_json() == {"type": "pong"}


def _start(ws: WebSocketTestSession) -> str:
    session: str = ws.receive_json()["session"]
    body = {"model": "fake", "messages": [{"role": "user", "content": "hi"}]}
    ws.send_json({"type": "chat.create", "id": "g", "body": body})
    assert ws.receive_json()["type"] == "chunk"
    return session


def test_a_parked_generation_runs_until_the_window_ends(
    client: TestClient, clock: FakeClock, backend: FakeBackend
) -> None:
    sessions = client.app.state.services.sessions  # type: ignore[attr-defined]
    with client.websocket_connect("/v1/ws") as ws:
        session = _start(ws)
        ws.close(1006)  # abnormal closure: the connection dropped
    _until(lambda: sessions.gauges() == (0, 1))
    _until(lambda: clock.sleepers >= 1)
    _advance(client, clock, WINDOW - 0.001)
    assert backend.active == 1 and sessions.gauges() == (0, 1)  # still running, still resumable
    _advance(client, clock, 0.001)
    _until(lambda: backend.active == 0 and sessions.gauges() == (0, 0))
    assert backend.cancelled == 1
    with client.websocket_connect("/v1/ws") as ws:
        ws.receive_json()
        ws.send_json({"type": "resume", "session": session, "generations": [{"id": "g", "after_seq": 1}]})
        refusal = ws.receive_json()
    assert refusal["error"]["code"] == "resume_expired" and refusal["id"] == "g"


def test_resume_within_the_window_continues_the_same_generation(
    client: TestClient, clock: FakeClock, backend: FakeBackend
) -> None:
    with client.websocket_connect("/v1/ws") as ws:
        session = _start(ws)
        ws.close(1006)
    _until(lambda: clock.sleepers >= 1)
    _advance(client, clock, WINDOW - 0.001)
    with client.websocket_connect("/v1/ws") as ws:
        ws.receive_json()
        ws.send_json({"type": "resume", "session": session, "generations": [{"id": "g", "after_seq": 1}]})
        assert ws.receive_json() == {"type": "resumed", "session": session}
        _advance(client, clock, 1.0)  # past the old window: the session is attached, nothing expires
        seen = [ws.receive_json() for _ in range(5)]
        assert [f["seq"] for f in seen] == [2, 3, 4, 5, 6]  # from after_seq on, in order
        assert [f["data"]["choices"][0]["delta"]["content"] for f in seen] == list(backend.tokens[:5])
        ws.send_json({"type": "cancel", "id": "g"})
        while (frame := ws.receive_json())["type"] == "chunk":
            pass
    assert frame["type"] == "cancelled" and frame["id"] == "g"
    _until(lambda: backend.active == 0)


def test_a_normal_close_cancels_the_generations(client: TestClient, backend: FakeBackend) -> None:
    sessions = client.app.state.services.sessions  # type: ignore[attr-defined]
    with client.websocket_connect("/v1/ws") as ws:
        _start(ws)
    _until(lambda: backend.active == 0 and sessions.gauges() == (0, 0))
    assert backend.cancelled == 1


def test_each_generation_is_one_record(client: TestClient) -> None:
    telemetry = client.app.state.services.telemetry  # type: ignore[attr-defined]
    with client.websocket_connect("/v1/ws", headers={"Authorization": "Bearer k"}) as ws:
        ws.receive_json()
        for gid, user in (("a", "ann"), ("b", None)):
            body: dict[str, Any] = {"model": "fake", "messages": [{"role": "user", "content": "x"}]}
            body |= {"max_tokens": 3, **({"user": user} if user else {})}
            ws.send_text(json.dumps({"type": "chat.create", "id": gid, "body": body}))
            while ws.receive_json()["type"] != "done":
                pass
    records = list(telemetry._recent)
    assert [r.transport for r in records] == ["ws", "ws"]
    assert records[0].tenant == "user:ann" and records[1].tenant.startswith("key:")
    assert all(r.status == 200 and r.completion_tokens == 3 and r.stream for r in records)


def test_several_choices_are_refused_for_that_id(client: TestClient) -> None:
    """``n`` > 1 has no frame shape over /v1/ws (one choice per id): a 400 naming ``n``, not one choice."""
    body = {"model": "fake", "n": 2, "messages": [{"role": "user", "content": "hi"}]}
    with client.websocket_connect("/v1/ws") as ws:
        ws.receive_json()
        ws.send_json({"type": "chat.create", "id": "g", "body": body})
        while (frame := ws.receive_json())["type"] != "error":
            pass
    assert (frame["id"], frame["status"], frame["error"]["param"]) == ("g", 400, "n")


async def test_a_normal_close_cancels_even_when_a_write_fails_before_the_close_is_read(
    tmp_path: Path, backend: FakeBackend
) -> None:
    """The race a busy machine runs into: the client's close frame (1000) has arrived, and the writer's
    next frame fails before the reader takes the close. The close still says goodbye (the generation is
    cancelled, nothing parked for a resume), as when the reader comes first. Driven through ASGI itself,
    so that the order is the test's, not the scheduler's."""
    services = fake_services(fake_settings(tmp_path), backend)
    app = create_app(services.settings, services)
    inbox: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
    chunk, closed, failed = asyncio.Event(), asyncio.Event(), asyncio.Event()

    async def send(message: dict[str, Any]) -> None:
        if closed.is_set():  # the peer's close frame is in: the server's writes fail
            failed.set()
            raise OSError("the connection is closing")
        if '"type":"chunk"' in message.get("text", "").replace(" ", ""):
            chunk.set()

    scope = {
        "type": "websocket",
        "path": "/v1/ws",
        "raw_path": b"/v1/ws",
        "query_string": b"",
        "headers": [],
        "scheme": "ws",
        "client": ("127.0.0.1", 50000),
        "server": ("127.0.0.1", 8000),
        "root_path": "",
        "subprotocols": [],
        "asgi": {"version": "3.0"},
    }
    await services.start()
    try:
        served = asyncio.create_task(app(scope, inbox.get, send))
        await inbox.put({"type": "websocket.connect"})
        body = {"model": "fake", "messages": [{"role": "user", "content": "hi"}]}
        await inbox.put(
            {
                "type": "websocket.receive",
                "text": json.dumps({"type": "chat.create", "id": "g", "body": body}),
            }
        )
        await chunk.wait()
        closed.set()
        await failed.wait()
        await inbox.put({"type": "websocket.disconnect", "code": 1000})
        await served
        assert services.sessions.gauges() == (0, 0)  # nothing parked for a resume
        for _ in range(100):
            if backend.active == 0:
                break
            await asyncio.sleep(0.01)
        assert backend.active == 0 and backend.cancelled == 1
    finally:
        await services.close()
