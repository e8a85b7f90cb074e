"""A WebSocket client for the tests of ``/v1/ws`` against a real ``groupqwen serve``: the ``websockets``
library's synchronous client, frames as dicts, the server's heartbeat pings answered on the way."""

from __future__ import annotations

import json
import socket
import struct
import time
from collections.abc import Iterable
from typing import Any

import httpx
from websockets.sync.client import ClientConnection, connect

from groupqwen.testing import ServedProcess

DEADLINE = 60.0  # generous: a busy machine only makes things later
TERMINAL = ("done", "error", "cancelled")


def open_socket(served: ServedProcess, **options: Any) -> ClientConnection:
    return connect(f"ws://127.0.0.1:{served.port}/v1/ws", open_timeout=DEADLINE, **options)


def send(ws: ClientConnection, frame: dict[str, Any]) -> None:
    ws.send(json.dumps(frame))


def receive(ws: ClientConnection) -> dict[str, Any]:
    """The next frame that is not the server's ping (answered with a pong)."""
    while True:
        frame: dict[str, Any] = json.loads(ws.recv(timeout=DEADLINE))
        if frame["type"] != "ping":
            return frame
        send(ws, {"type": "pong"})


def ask(gid: str, model: str, content: str = "hello", **body: Any) -> dict[str, Any]:
    messages = [{"role": "user", "content": content}]
    return {"type": "chat.create", "id": gid, "body": {"model": model, "messages": messages, **body}}


def until_finished(ws: ClientConnection, ids: Iterable[str]) -> list[dict[str, Any]]:
    """Every frame until each of ``ids`` has its last frame (done, error or cancelled)."""
    waiting = set(ids)
    frames = []
    while waiting:
        frame = receive(ws)
        frames.append(frame)
        if frame["type"] in TERMINAL and frame.get("id") in waiting:
            waiting.discard(frame["id"])
    return frames


def text_of(frames: Iterable[dict[str, Any]], gid: str) -> str:
    return "".join(
        f["data"]["choices"][0]["delta"].get("content", "")
        for f in frames
        if f["type"] == "chunk" and f["id"] == gid and f["data"]["choices"]
    )


def seqs(frames: Iterable[dict[str, Any]], gid: str) -> list[int]:
    return [f["seq"] for f in frames if f.get("id") == gid and "seq" in f]


def abort(ws: ClientConnection) -> None:
    """Drop the TCP connection as a network failure does: a reset, no close frame."""
    ws.socket.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    ws.socket.close()


def wait_for(check: Any, what: str) -> Any:
    """Poll ``check()`` until it returns something true; fail after ``DEADLINE`` (never a timing claim)."""
    deadline = time.monotonic() + DEADLINE
    while not (value := check()):
        assert time.monotonic() < deadline, f"{what}: never happened"
        time.sleep(0.02)
    return value


def active_requests(served: ServedProcess, model: str) -> int:
    models = httpx.get(served.url + "/v1/models", timeout=DEADLINE).json()["data"]
    state: int = next(m for m in models if m["id"] == model)["groupqwen"]["active_requests"]
    return state


def websocket_gauges(served: ServedProcess) -> dict[str, int]:
    gauges: dict[str, int] = httpx.get(served.url + "/v1/metrics", timeout=DEADLINE).json()["websockets"]
    return gauges
