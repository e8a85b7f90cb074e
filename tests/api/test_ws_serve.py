"""``/v1/ws`` against a real ``groupqwen serve`` with a real WebSocket client (the ``websockets`` library):
generations, several at once, cancel, resume after a dropped TCP connection, and every bad input. The fake
models stream a long reply, ``slow`` with a pause between tokens so that a generation is still running
when the test acts on it; the tests wait for outcomes, never for a time."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from websockets.exceptions import ConnectionClosed, InvalidStatus
from ws_client import (
    DEADLINE,
    abort,
    active_requests,
    ask,
    open_socket,
    receive,
    send,
    seqs,
    text_of,
    until_finished,
    wait_for,
    websocket_gauges,
)

from groupqwen.testing import ServedProcess, serve_process

REPLY = " ".join(f"w{i}" for i in range(300))
SLOW_REPLY = " ".join(f"s{i}" for i in range(400))
FRAME_LIMIT = 4096


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServedProcess]:
    slow = {"fake_reply": SLOW_REPLY, "fake_delay_s": 0.02, "max_parallel": 4}
    fakes = {"fake": {"fake_reply": REPLY}, "slow": slow}
    ws = {
        "max_generations": 2,
        "max_frame_bytes": FRAME_LIMIT,
        "max_violations": 3,
        "allowed_origins": ["https://allowed.example"],
    }
    with serve_process(tmp_path_factory.mktemp("ws"), fakes, ws=ws) as served:
        yield served


def test_hello_then_a_whole_generation(server: ServedProcess) -> None:
    with open_socket(server) as ws:
        hello = receive(ws)
        assert hello["type"] == "hello" and hello["protocol"] == 1
        assert len(hello["session"]) >= 40 and hello["resume_window_s"] == 30
        send(ws, ask("a", "fake", max_tokens=1000))
        frames = until_finished(ws, ["a"])
    assert seqs(frames, "a") == list(range(1, len(frames) + 1))  # per generation, no gaps
    first, done = frames[0], frames[-1]
    assert first["data"]["choices"][0]["delta"] == {"role": "assistant", "content": ""}
    assert first["headers"]["x-groupqwen-model"] == "fake" and first["headers"]["x-request-id"]
    assert all(f["data"]["object"] == "chat.completion.chunk" for f in frames[:-1])
    assert text_of(frames, "a") == REPLY
    assert done["type"] == "done" and done["usage"]["completion_tokens"] == 300
    assert done["groupqwen"]["model"] == "fake" and done["request_id"] == first["headers"]["x-request-id"]
    assert frames[-2]["data"]["choices"][0]["finish_reason"] == "stop"


def test_two_generations_run_at_once_each_in_order(server: ServedProcess) -> None:
    with open_socket(server) as ws:
        receive(ws)
        send(ws, ask("one", "slow", max_tokens=40))
        send(ws, ask("two", "slow", max_tokens=40))
        frames = until_finished(ws, ["one", "two"])
    ids = [f["id"] for f in frames]
    assert ids.index("two") < len(ids) - 1 - ids[::-1].index("one")  # interleaved, not one after the other
    for gid in ("one", "two"):
        assert seqs(frames, gid) == list(range(1, ids.count(gid) + 1))
        assert text_of(frames, gid) == " ".join(SLOW_REPLY.split()[:40])


def test_over_the_bound_is_429_for_that_id_only(server: ServedProcess) -> None:
    with open_socket(server) as ws:
        receive(ws)
        for gid in ("a", "b", "c"):
            send(ws, ask(gid, "slow", max_tokens=30))
        frames = until_finished(ws, ["a", "b", "c"])
    refused = next(f for f in frames if f["id"] == "c")
    assert refused["type"] == "error" and refused["status"] == 429 and "seq" not in refused
    assert refused["error"]["code"] == "too_many_generations"
    assert "ws.max_generations" in refused["error"]["message"]
    for gid in ("a", "b"):
        assert [f["type"] for f in frames if f["id"] == gid][-1] == "done"


def test_cancel_stops_the_generation_and_frees_the_slot(server: ServedProcess) -> None:
    with open_socket(server) as ws:
        receive(ws)
        send(ws, ask("long", "slow", max_tokens=400))
        assert receive(ws)["type"] == "chunk"
        assert active_requests(server, "slow") == 1
        send(ws, {"type": "cancel", "id": "long"})
        frames = until_finished(ws, ["long"])
        # the model is released before the cancelled frame is sent: no waiting needed
        assert frames[-1]["type"] == "cancelled" and active_requests(server, "slow") == 0
        assert len(text_of(frames, "long").split()) < 400
        send(ws, {"type": "ping"})
        assert receive(ws)["type"] == "pong"


def test_bad_frames_get_errors_and_the_socket_stays_open(server: ServedProcess) -> None:
    with open_socket(server) as ws:
        receive(ws)
        cases: list[tuple[str | bytes, str]] = [
            ("{not json", "invalid_request"),
            (json.dumps({"type": "chat.delete", "id": "x"}), "unknown_type"),
            (
                json.dumps({"type": "chat.create", "id": "x", "body": {}, "pad": "p" * FRAME_LIMIT}),
                "payload_too_large",
            ),
            (b"\x00binary", "invalid_frame"),
            (json.dumps({"type": "chat.create", "body": {}}), "invalid_frame"),
        ]
        for raw, code in cases:
            ws.send(raw)
            error = receive(ws)
            assert error["type"] == "error" and error["error"]["code"] == code, (raw, error)
            assert error["status"] in (400, 413) and error["error"]["message"]
            send(ws, {"type": "ping"})  # a valid frame in between: the violations do not add up
            assert receive(ws)["type"] == "pong"
        send(ws, {"type": "cancel", "id": "nobody"})
        unknown = receive(ws)
        assert (
            unknown["id"] == "nobody"
            and unknown["status"] == 404
            and unknown["error"]["code"] == "unknown_id"
        )
        send(ws, ask("bad", "fake", temperature=9))
        invalid = until_finished(ws, ["bad"])[-1]
        assert invalid["type"] == "error" and invalid["status"] == 400 and invalid["seq"] == 1
        assert invalid["error"]["param"] == "temperature"
        send(ws, ask("dup", "slow", max_tokens=200))
        send(ws, ask("dup", "slow"))
        frames = []
        while not (frames and frames[-1]["type"] == "error"):
            frames.append(receive(ws))
        assert frames[-1]["id"] == "dup" and frames[-1]["error"]["code"] == "duplicate_id"
        send(ws, {"type": "cancel", "id": "dup"})
        assert until_finished(ws, ["dup"])[-1]["type"] == "cancelled"


def test_repeated_violations_close_the_socket(server: ServedProcess) -> None:
    with open_socket(server) as ws:
        receive(ws)
        for _ in range(3):
            ws.send("garbage")
        for _ in range(3):
            assert receive(ws)["type"] == "error"
        with pytest.raises(ConnectionClosed) as closed:
            receive(ws)
    assert closed.value.rcvd is not None and closed.value.rcvd.code == 1008


def test_a_frame_far_over_the_limit_closes_the_socket(server: ServedProcess) -> None:
    with open_socket(server) as ws:
        receive(ws)
        ws.send("x" * (4 * FRAME_LIMIT + 1))
        with pytest.raises(ConnectionClosed) as closed:
            receive(ws)
    assert closed.value.rcvd is not None and closed.value.rcvd.code == 1009


def test_browsers_from_other_origins_are_refused(server: ServedProcess) -> None:
    with pytest.raises(InvalidStatus) as refused:
        open_socket(server, origin="https://evil.example")
    assert refused.value.response.status_code == 403
    for origin in ("https://allowed.example", f"http://127.0.0.1:{server.port}"):
        with open_socket(server, origin=origin) as ws:
            assert receive(ws)["type"] == "hello"


def dropped(
    server: ServedProcess, frames: int, max_tokens: int, **headers: str
) -> tuple[str, list[dict[str, Any]]]:
    """A slow generation ``g`` asked, its first ``frames`` frames read, then the connection dropped and the
    generation parked: the session's token and the frames read."""
    with open_socket(server, additional_headers=headers) as ws:
        session = receive(ws)["session"]
        send(ws, ask("g", "slow", max_tokens=max_tokens))
        before = [receive(ws) for _ in range(frames)]
        abort(ws)
    wait_for(lambda: websocket_gauges(server)["parked_generations"] == 1, "the generation parked")
    return session, before


def test_resume_after_a_dropped_connection_loses_and_repeats_nothing(server: ServedProcess) -> None:
    session, before = dropped(server, frames=10, max_tokens=120)
    with open_socket(server) as again:
        assert receive(again)["type"] == "hello"
        send(again, {"type": "resume", "session": session, "generations": [{"id": "g", "after_seq": 10}]})
        assert receive(again) == {"type": "resumed", "session": session}
        after = until_finished(again, ["g"])
    frames = before + after
    assert seqs(frames, "g") == list(range(1, len(frames) + 1))
    assert text_of(frames, "g") == " ".join(SLOW_REPLY.split()[:120])
    assert frames[-1]["type"] == "done"


def test_a_resume_naming_a_generation_twice_is_refused_and_replays_nothing(server: ServedProcess) -> None:
    """Each frame comes exactly once: a ``resume`` that names an ``id`` twice (two ``after_seq``s) is a bad
    frame, not two replays of the same frames (it used to send the frames after the smaller ``after_seq``,
    then those after the larger one again, interleaved)."""
    session, before = dropped(server, frames=5, max_tokens=60)
    with open_socket(server) as again:
        receive(again)
        twice = [{"id": "g", "after_seq": 2}, {"id": "g", "after_seq": 5}]
        send(again, {"type": "resume", "session": session, "generations": twice})
        refused = receive(again)
        assert refused["type"] == "error" and refused["status"] == 400 and "seq" not in refused
        assert refused["error"]["code"] == "invalid_frame" and "'g'" in refused["error"]["message"]
        send(again, {"type": "resume", "session": session, "generations": [{"id": "g", "after_seq": 5}]})
        assert receive(again) == {"type": "resumed", "session": session}
        after = until_finished(again, ["g"])
    frames = before + after
    assert seqs(frames, "g") == list(range(1, len(frames) + 1))
    assert text_of(frames, "g") == " ".join(SLOW_REPLY.split()[:60])


def test_a_foreign_or_guessed_session_gets_nothing(server: ServedProcess) -> None:
    session, _ = dropped(server, frames=1, max_tokens=400, Authorization="Bearer alice")
    tries = [
        ({"Authorization": "Bearer mallory"}, session),
        ({}, session),
        ({"Authorization": "Bearer alice"}, session[:-2] + "xx"),
    ]
    for headers, token in tries:
        with open_socket(server, additional_headers=headers) as other:
            receive(other)
            send(other, {"type": "resume", "session": token, "generations": [{"id": "g", "after_seq": 0}]})
            refusal = receive(other)
            assert refusal["type"] == "error" and refusal["error"]["code"] == "resume_expired"
            assert refusal["status"] == 410 and "seq" not in refusal
            send(other, {"type": "ping"})
            assert receive(other) == {"type": "pong"}  # and nothing of the generation came
    with open_socket(server, additional_headers={"Authorization": "Bearer alice"}) as owner:
        receive(owner)
        send(owner, {"type": "resume", "session": session, "generations": [{"id": "g", "after_seq": 1}]})
        assert receive(owner)["type"] == "resumed"
        send(owner, {"type": "cancel", "id": "g"})
        assert until_finished(owner, ["g"])[-1]["type"] in ("cancelled", "done")


def test_telemetry_records_each_generation_and_counts_sockets(server: ServedProcess) -> None:
    with open_socket(server) as ws:
        receive(ws)
        gauges = wait_for(lambda: websocket_gauges(server)["open"] >= 1 and websocket_gauges(server), "open")
        assert gauges["open"] >= 1
        prometheus = httpx.get(server.url + "/metrics", timeout=DEADLINE).text
        assert (
            "groupqwen_websockets_open" in prometheus
            and "groupqwen_websocket_generations_parked" in prometheus
        )
        send(ws, ask("t", "fake", max_tokens=5))
        until_finished(ws, ["t"])
    summary = httpx.get(server.url + "/v1/metrics", timeout=DEADLINE).json()
    assert summary["by_transport"]["ws"]["requests"] >= 1
