"""A WebSocket client for the tests of ``/v1/ws`` against a real ``groupqwen serve``: the ``websockets``
library's synchronous client, frames as dicts, the server's heartbeat pings answered on the way."""

from __future__ import annotations

import base64
import json
import os
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


class RawSocket:
    """A WebSocket client made of a plain socket, for what a library does not let a client do: never read
    (its receive buffer small, so the server's writes block), or never answer a ping."""

    def __init__(self, served: ServedProcess, receive_buffer: int = 4096) -> None:
        self.sock = socket.socket()
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, receive_buffer)
        self.sock.settimeout(DEADLINE)
        self.sock.connect(("127.0.0.1", served.port))
        key = base64.b64encode(os.urandom(16)).decode()
        self.sock.sendall(
            f"GET /v1/ws HTTP/1.1\r\nHost: 127.0.0.1:{served.port}\r\nUpgrade: websocket\r\n"
            f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n".encode()
        )
        self._buffer = b""
        while b"\r\n\r\n" not in self._buffer:
            self._buffer += self._recv()
        head, _, self._buffer = self._buffer.partition(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 101"), head

    def _recv(self) -> bytes:
        data = self.sock.recv(65536)
        if not data:
            raise ConnectionError("closed")
        return data

    def send(self, frame: dict[str, Any]) -> None:
        payload = json.dumps(frame).encode()
        mask = os.urandom(4)
        size = len(payload)
        head = bytes([0x81]) + (
            bytes([0x80 | size]) if size < 126 else bytes([0x80 | 126]) + struct.pack("!H", size)
        )
        self.sock.sendall(head + mask + bytes(b ^ mask[i % 4] for i, b in enumerate(payload)))

    def _exactly(self, n: int) -> bytes:
        while len(self._buffer) < n:
            self._buffer += self._recv()
        out, self._buffer = self._buffer[:n], self._buffer[n:]
        return out

    def next_frame(self) -> tuple[int, bytes]:
        """(opcode, payload) of the server's next frame (servers do not mask)."""
        first, second = self._exactly(2)
        size = second & 0x7F
        if size == 126:
            size = struct.unpack("!H", self._exactly(2))[0]
        elif size == 127:
            size = struct.unpack("!Q", self._exactly(8))[0]
        return first & 0x0F, self._exactly(size)

    def close_code(self) -> int | None:
        """Read until the server's close frame: its code (``None`` if the connection ended without one)."""
        try:
            while True:
                opcode, payload = self.next_frame()
                if opcode == 0x8:
                    return int(struct.unpack("!H", payload[:2])[0])
        except (ConnectionError, OSError):
            return None

    def close(self) -> None:
        self.sock.close()
