"""A WebSocket client for tests/deploy/test_ui_image.py, run inside the gateway's container (its Python and
its ``websockets``; the containers' network is their own) against nginx on 127.0.0.1:8080: one generation
read to ``done``, a second one dropped after its first token (a reset, no close frame) and resumed on a new
connection. Prints every frame it got, as JSON, for the test to check."""

from __future__ import annotations

import json
import socket
import struct
from collections.abc import Callable
from typing import Any

from websockets.sync.client import ClientConnection, connect

URL = "ws://127.0.0.1:8080/v1/ws"
DEADLINE = 300.0  # generous: two cores shared with other sessions
TERMINAL = ("done", "error", "cancelled")
BODY = {
    "model": "smollm2-135m",
    "max_tokens": 48,
    "messages": [{"role": "user", "content": "Tell me about the sea."}],
}
Frame = dict[str, Any]


def frames(ws: ClientConnection, last: Callable[[Frame], bool]) -> list[Frame]:
    """The server's frames up to the first that ``last`` accepts; its pings answered on the way."""
    got = []
    while True:
        frame: Frame = json.loads(ws.recv(timeout=DEADLINE))
        if frame["type"] == "ping":
            ws.send(json.dumps({"type": "pong"}))
            continue
        got.append(frame)
        if last(frame):
            return got


def ended(frame: Frame) -> bool:
    return frame["type"] in TERMINAL


def has_text(frame: Frame) -> bool:
    choices = frame.get("data", {}).get("choices") or [{}]
    return ended(frame) or bool(choices[0].get("delta", {}).get("content"))


def main() -> None:
    first = connect(URL, open_timeout=DEADLINE)
    hello = frames(first, lambda _: True)
    first.send(json.dumps({"type": "chat.create", "id": "whole", "body": BODY}))
    whole = frames(first, ended)
    first.send(json.dumps({"type": "chat.create", "id": "dropped", "body": BODY}))
    before = frames(first, has_text)
    first.socket.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    first.socket.close()  # a network failure: reset, no close frame; nginx drops its upstream in turn
    second = connect(URL, open_timeout=DEADLINE)
    hello += frames(second, lambda _: True)
    resume = {"id": "dropped", "after_seq": before[-1].get("seq", 0)}
    second.send(json.dumps({"type": "resume", "session": hello[0]["session"], "generations": [resume]}))
    after = frames(second, ended)
    second.close()
    print(json.dumps({"hello": hello, "whole": whole, "before": before, "after": after}))


if __name__ == "__main__":
    main()
