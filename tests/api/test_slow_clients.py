"""Slow clients are dropped: against a real ``groupqwen serve`` on loopback with raw sockets, a body that
stops arriving gets a 408 and the connection closed, and a connection that never completes its request
line and headers (or sends nothing) is closed. Timeouts of 1 s; the tests wait for the close with a
generous deadline and assert that it happens, never when."""

from __future__ import annotations

import http.client
import json
import socket
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager
from pathlib import Path

import httpx
import pytest
from fastapi import FastAPI

from groupqwen.api.app import create_app
from groupqwen.backends.fake import FakeBackend
from groupqwen.testing import ServedProcess, fake_services, fake_settings, serve_process

DEADLINE = 60.0  # far beyond the 1 s timeouts: a busy machine only makes the close later
CHAT = json.dumps({"model": "fake", "messages": [{"role": "user", "content": "hello there"}]}).encode()


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServedProcess]:
    timeouts = {"header_timeout_s": 1, "body_timeout_s": 1, "keep_alive_timeout_s": 1}
    with serve_process(tmp_path_factory.mktemp("slow"), server=timeouts) as served:
        yield served


def _connect(served: ServedProcess) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", served.port), timeout=DEADLINE)
    return sock


def _read_until_closed(sock: socket.socket) -> bytes:
    """Everything the server sends until it closes the connection (fails after ``DEADLINE``)."""
    received = b""
    while True:
        try:
            chunk = sock.recv(65536)
        except ConnectionResetError:
            return received
        except TimeoutError:
            pytest.fail(f"the server kept the connection open for {DEADLINE:g} s; got {received!r}")
        if not chunk:
            return received
        received += chunk


def test_a_body_that_stops_arriving_gets_408_and_the_connection_closed(server: ServedProcess) -> None:
    with _connect(server) as sock:
        head = (
            "POST /v1/chat/completions HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(CHAT)}\r\n\r\n"
        )
        sock.sendall(head.encode() + CHAT[: len(CHAT) // 2])  # then nothing more
        answer = _read_until_closed(sock)
    status_line, _, rest = answer.partition(b"\r\n")
    assert status_line.startswith(b"HTTP/1.1 408"), answer
    headers, _, body = rest.partition(b"\r\n\r\n")
    assert b"connection: close" in headers.lower()
    error = json.loads(body)["error"]
    assert error["code"] == "request_timeout" and error["type"] == "invalid_request_error"
    assert "server.body_timeout_s" in error["message"]


def test_half_a_request_head_is_closed(server: ServedProcess) -> None:
    with _connect(server) as sock:
        sock.sendall(b"POST /v1/chat/completions HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Le")
        assert _read_until_closed(sock) == b""


def test_a_connection_that_sends_nothing_is_closed(server: ServedProcess) -> None:
    with _connect(server) as sock:
        assert _read_until_closed(sock) == b""


def test_a_request_head_over_max_header_bytes_gets_400_and_the_connection_closed(
    server: ServedProcess,
) -> None:
    """The head whole (one write), and a head that never ends (llhttp would buffer it without a limit):
    both a 400 that names the setting, then the close."""
    big = "x-padding: " + "a" * 20_000 + "\r\n"  # past server.max_header_bytes (16384 by default)
    whole = f"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\n{big}\r\n"
    endless = f"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\n{big}"  # no blank line: the head goes on
    for writes in ([whole], [endless], [whole[:9_000], whole[9_000:]]):
        with _connect(server) as sock:
            for part in writes:
                sock.sendall(part.encode())
            answer = _read_until_closed(sock)
        assert answer.startswith(b"HTTP/1.1 400"), answer[:200]
        assert b"server.max_header_bytes" in answer


def test_a_head_under_the_limit_is_served_when_its_body_comes_in_the_same_write(
    server: ServedProcess,
) -> None:
    """The head alone is under ``max_header_bytes``, the head and body together are over it."""
    body = json.dumps({"model": "fake", "messages": [{"role": "user", "content": "word " * 3_000}]}).encode()
    head = (
        "POST /v1/chat/completions HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
        f"X-Note: {'n' * 12_000}\r\nContent-Length: {len(body)}\r\n\r\n"
    ).encode()
    assert len(head) < 16384 < len(head) + len(body)
    with _connect(server) as sock:
        sock.sendall(head + body)
        response = http.client.HTTPResponse(sock)
        response.begin()
        assert response.status == 200 and json.loads(response.read())["choices"]


def test_a_head_in_many_small_writes_is_served(server: ServedProcess) -> None:
    """A head that arrives in pieces (the guard armed, then disarmed) is answered, and the connection kept."""
    with _connect(server) as sock:
        for _ in range(2):
            head = b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Note: " + b"n" * 500 + b"\r\n\r\n"
            for start in range(0, len(head), 64):
                sock.sendall(head[start : start + 64])
            response = http.client.HTTPResponse(sock)
            response.begin()
            assert response.status == 200 and json.loads(response.read())


def test_kept_alive_connections_still_serve_and_idle_ones_close(server: ServedProcess) -> None:
    connection = http.client.HTTPConnection("127.0.0.1", server.port, timeout=DEADLINE)
    try:
        for _ in range(3):  # one connection, three requests
            connection.request("POST", "/v1/chat/completions", CHAT, {"content-type": "application/json"})
            response = connection.getresponse()
            assert response.status == 200 and json.loads(response.read())["choices"]
        sock = connection.sock
        assert sock is not None
        assert _read_until_closed(sock) == b""  # idle after its response: keep_alive_timeout_s
    finally:
        connection.close()


def test_the_body_timeout_does_not_cut_a_slow_answer(
    tmp_path: Path, live_server: Callable[[FastAPI], AbstractContextManager[str]]
) -> None:
    """Once the body is in, the route waits on ``receive`` for the client's disconnect while the model
    answers: that wait is not timed, however long the answer takes."""
    settings = fake_settings(tmp_path, server={"body_timeout_s": 0.05})
    services = fake_services(settings, FakeBackend(delay=0.05))  # four tokens: longer than the timeout
    with live_server(create_app(settings, services)) as url:
        request = json.loads(CHAT)
        answer = httpx.post(url + "/v1/chat/completions", json=request, timeout=DEADLINE)
        assert answer.status_code == 200, answer.text
        assert answer.json()["choices"][0]["message"]["content"] == "Hello, world!"
        with httpx.stream(
            "POST", url + "/v1/chat/completions", json={**request, "stream": True}, timeout=DEADLINE
        ) as streamed:
            assert streamed.status_code == 200
            assert streamed.read().rstrip().endswith(b"data: [DONE]")
