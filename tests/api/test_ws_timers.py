"""``/v1/ws``'s timers against a real ``groupqwen serve`` with short settings (heartbeat 0.5 s, resume window
1 s): a peer that stops answering is dropped, a client that stops reading is dropped (its generation paused,
then parked, then cancelled: memory stays bounded), a resume after the window is refused. The tests wait
for each outcome with a generous deadline; they assert that it happens, never when (the same behaviour on
the injected clock, to the tick: tests/api/test_ws_clock.py)."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator

import httpx
import pytest
from ws_client import (
    DEADLINE,
    RawSocket,
    abort,
    active_requests,
    ask,
    open_socket,
    receive,
    send,
    wait_for,
    websocket_gauges,
)

from groupqwen.testing import ServedProcess, serve_process

BIG_REPLY = " ".join(f"b{i}" for i in range(60_000))


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServedProcess]:
    fakes = {
        "big": {"fake_reply": BIG_REPLY},
        "slow": {"fake_reply": " ".join(["tick"] * 2000), "fake_delay_s": 0.02},
    }
    ws = {"heartbeat_s": 0.5, "resume_window_s": 1, "send_queue_frames": 8, "buffer_frames": 64}
    with serve_process(tmp_path_factory.mktemp("ws-timers"), fakes, ws=ws) as served:
        yield served


def _records(served: ServedProcess) -> dict[str, int]:
    status: dict[str, int] = httpx.get(served.url + "/v1/metrics", timeout=DEADLINE).json()["status"]
    return status


def test_the_server_pings_and_drops_a_peer_that_never_answers(server: ServedProcess) -> None:
    client = RawSocket(server)
    try:
        opcode, payload = client.next_frame()
        assert opcode == 0x1 and json.loads(payload)["type"] == "hello"
        opcode, payload = client.next_frame()
        assert json.loads(payload) == {"type": "ping"}
        assert client.close_code() == 1001  # going away: nothing from the client for 2 heartbeats
    finally:
        client.close()


def test_a_client_that_answers_pings_stays(server: ServedProcess) -> None:
    with open_socket(server) as ws:
        receive(ws)
        pings = 0
        while pings < 5:  # 5 heartbeats: well past the 2 after which a silent peer is dropped
            frame = json.loads(ws.recv(timeout=DEADLINE))
            assert frame["type"] == "ping"
            pings += 1
            send(ws, {"type": "pong"})
        send(ws, {"type": "ping", "data": "still here"})
        assert receive(ws) == {"type": "pong", "data": "still here"}


def test_a_client_that_stops_reading_is_dropped_and_its_generation_cancelled(server: ServedProcess) -> None:
    client = RawSocket(server, receive_buffer=4096)
    stop = threading.Event()

    def answer_pings() -> None:  # alive, answering often: a busy machine must not make it look silent
        while not stop.wait(0.05):
            try:
                client.send({"type": "pong"})
            except OSError:
                return  # dropped

    pongs = threading.Thread(target=answer_pings, daemon=True)
    try:
        client.send(ask("flood", "big"))
        pongs.start()
        # it never reads: the kernel's buffers fill, the send queue fills, the generation pauses; the
        # server drops the connection (1008), parks the generation, which fills its buffer or outlives
        # the window: cancelled, its slot free, nothing parked
        wait_for(lambda: _records(server).get("499", 0) >= 1, "the generation cancelled")
        assert active_requests(server, "big") == 0
        assert _records(server).get("200", 0) == 0  # it never ran to its end
        wait_for(lambda: websocket_gauges(server)["parked_generations"] == 0, "nothing parked")
        assert 'code=1008 reason="the client read nothing' in server.log_path.read_text()
        stop.set()
        pongs.join(DEADLINE)
        # the close frame waits behind what the client never read, for at most a heartbeat
        assert client.close_code() in (1008, None)
    finally:
        stop.set()
        client.close()


def test_a_resume_after_the_window_is_refused(server: ServedProcess) -> None:
    before = _records(server).get("499", 0)
    with open_socket(server) as ws:
        session = receive(ws)["session"]
        send(ws, ask("late", "slow"))
        assert receive(ws)["type"] == "chunk"
        abort(ws)
    wait_for(lambda: _records(server).get("499", 0) > before, "the parked generation cancelled")
    assert active_requests(server, "slow") == 0
    with open_socket(server) as again:
        receive(again)
        send(again, {"type": "resume", "session": session, "generations": [{"id": "late", "after_seq": 1}]})
        refusal = receive(again)
    assert refusal["type"] == "error" and refusal["id"] == "late" and refusal["status"] == 410
    assert refusal["error"]["code"] == "resume_expired" and "ask again" in refusal["error"]["message"]
