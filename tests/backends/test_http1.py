"""The ``openai_http`` backend's HTTP/1.1 client against real servers on loopback: raw asyncio servers that
answer as told (Content-Length, chunked, to the close, keep-alive or not, garbage, nothing), and one over
TLS with a self-signed certificate made here by ``openssl``."""

from __future__ import annotations

import asyncio
import gc
import ssl
import subprocess
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field, replace
from pathlib import Path

import pytest
from servers import free_port
from waiting import until

from groupqwen.backends.http1 import ConnectError, Disconnected, HTTPClient, InvalidURL, ProtocolError
from groupqwen.backends.openai_http import OpenAIHTTPBackend
from groupqwen.catalog import builtin_catalog
from groupqwen.errors import BackendError
from groupqwen.messages import GenerationRequest, Message, Sampling


@dataclass
class Request:
    head: bytes
    body: bytes


# answers one request on its connection; returns False to close the connection after it
Answer = Callable[[Request, asyncio.StreamWriter], Awaitable[bool]]


@dataclass
class Server:
    answer: Answer
    connections: int = 0
    requests: list[Request] = field(default_factory=list)
    closed: asyncio.Event = field(default_factory=asyncio.Event)  # a connection was closed by the client
    port: int = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    async def serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        try:
            while True:
                try:
                    head = await reader.readuntil(b"\r\n\r\n")
                except asyncio.IncompleteReadError:
                    self.closed.set()
                    return
                length = next(
                    (
                        int(line.split(b":")[1])
                        for line in head.split(b"\r\n")
                        if line.lower().startswith(b"content-length")
                    ),
                    0,
                )
                request = Request(head, await reader.readexactly(length))
                self.requests.append(request)
                if not await self.answer(request, writer):
                    return
        except ConnectionError:
            self.closed.set()
        finally:
            writer.close()


@asynccontextmanager
async def serving(answer: Answer, ssl_context: ssl.SSLContext | None = None) -> AsyncIterator[Server]:
    server = Server(answer)
    listener = await asyncio.start_server(server.serve, "127.0.0.1", 0, ssl=ssl_context)
    server.port = listener.sockets[0].getsockname()[1]
    async with listener:
        yield server


def client(limit: int = 4, keepalive: float = 4.0, **options: object) -> HTTPClient:
    return HTTPClient(limit=limit, keepalive=keepalive, connect_timeout=2.0, **options)  # type: ignore[arg-type]


def replying(raw: bytes, *, keep: bool = True) -> Answer:
    """An answer that writes ``raw`` to every request; ``keep=False`` closes the connection after it."""

    async def answer(_: Request, writer: asyncio.StreamWriter) -> bool:
        writer.write(raw)
        await writer.drain()
        return keep

    return answer


sized = replying(
    b'HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 11\r\n\r\n{"ok": 1}\r\n'
)
# says it will close the connection, and leaves the closing to the client
closing = replying(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok")


async def test_a_sized_body_and_the_connection_kept_alive() -> None:
    async with serving(sized) as server:
        http = client(headers={"Authorization": "Bearer k"})
        for _ in range(3):
            response = await http.request("POST", f"{server.url}/chat/completions?x=1", body=b'{"a": 1}')
            assert (response.status, response.reason, response.content_type) == (
                200,
                "OK",
                "application/json",
            )
            assert await response.read() == b'{"ok": 1}\r\n'
            response.release()
        await http.close()
    assert server.connections == 1 and len(server.requests) == 3
    head = server.requests[0].head.decode()
    assert head.startswith("POST /v1/chat/completions?x=1 HTTP/1.1\r\n")
    assert f"Host: 127.0.0.1:{server.port}\r\n" in head and "Authorization: Bearer k\r\n" in head
    assert "Content-Length: 8\r\n" in head and "encoding" not in head.lower()  # no compression asked for
    assert server.requests[0].body == b'{"a": 1}'


async def test_a_chunked_body_read_as_it_arrives() -> None:
    go = asyncio.Event()

    async def chunked(_: Request, writer: asyncio.StreamWriter) -> bool:
        writer.write(
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nX-A: 1\r\nx-a: 2\r\n\r\n5\r\nhello\r\n"
        )
        await writer.drain()
        await go.wait()
        writer.write(b"6\r\n world\r\n0\r\n\r\n")
        await writer.drain()
        return True

    async with serving(chunked) as server:
        http = client()
        response = await http.request("GET", f"{server.url}/models")
        assert response.headers["x-a"] == "1, 2"
        assert await response.readany() == b"hello" and not response.at_eof()
        assert response.read_nowait() == b""
        go.set()
        assert await response.read() == b" world" and response.at_eof()
        response.release()
        assert b"Content-Length" not in server.requests[0].head  # a GET without a body
        await http.close()


@pytest.mark.parametrize(
    ("url", "host"),
    [
        ("http://example.test/v1", "example.test"),
        ("http://example.test:80/v1", "example.test"),
        ("https://example.test:443/v1", "example.test"),
        ("https://example.test:80/v1", "example.test:80"),
        ("http://[::1]:8000/v1", "[::1]:8000"),
    ],
)
def test_the_host_header_names_the_port_only_when_not_the_schemes_default(url: str, host: str) -> None:
    origin, target = client()._parse(url)
    assert (origin.host_header, target) == (host, "/v1")


until_close = replying(b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n\r\nall of it", keep=False)


@pytest.mark.parametrize(
    ("answer", "body"),
    [(until_close, b"all of it"), (closing, b"ok")],
    ids=["a body that ends with the connection", "Connection: close"],
)
async def test_a_connection_the_server_ends_is_not_reused(answer: Answer, body: bytes) -> None:
    async with serving(answer) as server:
        http = client()
        for _ in range(2):  # a new connection each time
            response = await http.request("GET", server.url)
            assert await response.read() == body
            response.release()
        await http.close()
    assert server.connections == 2


async def test_an_idle_connection_the_server_closed_is_not_used() -> None:
    async def once(request: Request, writer: asyncio.StreamWriter) -> bool:
        await sized(request, writer)
        return False  # closes the connection after answering, without saying so

    async with serving(once) as server:
        http = client()
        response = await http.request("GET", server.url)
        await response.read()
        idle = response._conn
        response.release()
        await until(lambda: idle.closed)  # the close reaches the client's idle connection
        response = await http.request("GET", server.url)  # on a new connection: the closed one is dropped
        assert not response._conn.reused
        assert await response.read() == b'{"ok": 1}\r\n'
        response.release()
        await http.close()
    assert server.connections == 2


async def test_a_kept_alive_connection_closed_under_the_request_is_sent_once_more() -> None:
    """The race at a server's keep-alive timeout: it closes the connection as the next request arrives."""

    async def second_dropped(request: Request, writer: asyncio.StreamWriter) -> bool:
        if len(server.requests) == 2:
            return False  # the second request: closed unanswered
        return await sized(request, writer)

    async with serving(second_dropped) as server:
        http = client()
        for _ in range(2):
            response = await http.request("POST", server.url, body=b"{}")
            assert await response.read() == b'{"ok": 1}\r\n'
            response.release()
        await http.close()
    assert server.connections == 2 and len(server.requests) == 3


async def test_a_new_connection_closed_unanswered_is_not_sent_again() -> None:
    async def drop(_: Request, __: asyncio.StreamWriter) -> bool:
        return False

    async with serving(drop) as server:
        http = client()
        with pytest.raises(Disconnected, match="closed the connection before its response ended"):
            await http.request("POST", server.url, body=b"{}")
        await http.close()
    assert len(server.requests) == 1


async def test_a_body_cut_short_is_an_error() -> None:
    cut = replying(b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\npart", keep=False)

    async with serving(cut) as server:
        http = client()
        response = await http.request("GET", server.url)
        with pytest.raises(Disconnected):
            await response.read()
        response.release()
        await http.close()


async def test_a_timeout_releases_the_connection_and_its_slot() -> None:
    async def silent(_: Request, __: asyncio.StreamWriter) -> bool:
        await asyncio.Event().wait()
        return False

    async with serving(silent) as server:
        http = client(limit=1)
        for _ in range(2):  # the second would wait forever for the slot if the first kept it
            with pytest.raises(TimeoutError):
                async with asyncio.timeout(0.2):
                    await http.request("POST", server.url, body=b"{}")
        await http.close()
    assert server.connections == 2


async def test_the_limit_is_the_connections_in_use() -> None:
    async with serving(sized) as server:
        http = client(limit=1)
        first = await http.request("GET", server.url)
        second = asyncio.ensure_future(http.request("GET", server.url))
        await asyncio.sleep(0.05)
        assert not second.done()  # waits for the one connection
        await first.read()
        first.release()
        response = await second
        assert await response.read() == b'{"ok": 1}\r\n'
        response.release()
        await http.close()
    assert server.connections == 1


async def test_a_response_not_read_to_its_end_closes_its_connection() -> None:
    # the body never ends; the server reads on (the client's close)
    endless = replying(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nfirst\r\n")

    async with serving(endless) as server:
        http = client()
        response = await http.request("GET", server.url)
        assert await response.readany() == b"first"
        response.release()
        async with asyncio.timeout(5):
            await server.closed.wait()  # the server saw the connection go
        await http.close()


async def test_a_refused_connection_and_a_bad_url() -> None:
    http = client()
    with pytest.raises(ConnectError, match=r"127\.0\.0\.1:\d+: .*(refused|failed)"):
        await http.request("GET", f"http://127.0.0.1:{free_port()}/v1")
    for url in ("http://[::1/v1", "ftp://example.com/", "http:///v1"):
        with pytest.raises(InvalidURL):
            await http.request("GET", url)
    await http.close()


async def test_a_malformed_response_is_a_protocol_error() -> None:
    garbage = replying(b"HELLO THERE\r\n\r\n")

    async with serving(garbage) as server:
        http = client()
        with pytest.raises(ProtocolError, match="malformed response"):
            await http.request("GET", server.url)
        await http.close()


async def test_the_backend_turns_a_malformed_answer_into_a_backend_error() -> None:
    async def models_ok_else_garbage(request: Request, writer: asyncio.StreamWriter) -> bool:
        if request.head.startswith(b"GET "):
            return await sized(request, writer)
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: nope\r\n\r\n")
        await writer.drain()
        return True

    async with serving(models_ok_else_garbage) as server:
        spec = replace(builtin_catalog()["smollm2-135m"], backend="openai_http", urls=(server.url,))
        backend = OpenAIHTTPBackend(spec)
        await backend.load()
        request = GenerationRequest(messages=(Message("user", "hi"),), sampling=Sampling(max_tokens=2))
        with pytest.raises(BackendError, match="ProtocolError: malformed response"):
            async for _ in backend.stream(request):
                pass
        await backend.close()


def self_signed(directory: Path) -> tuple[Path, Path]:
    cert, key = directory / "cert.pem", directory / "key.pem"
    subprocess.run(
        [
            "openssl",
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
            "-keyout",
            str(key),
            "-out",
            str(cert),
            "-days",
            "1",
            "-subj",
            "/CN=127.0.0.1",
            "-addext",
            "subjectAltName=IP:127.0.0.1",
        ],
        check=True,
        capture_output=True,
    )
    return cert, key


async def test_tls_with_a_self_signed_certificate(tmp_path: Path) -> None:
    cert, key = self_signed(tmp_path)
    server_side = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server_side.load_cert_chain(cert, key)
    async with serving(sized, server_side) as server:
        url = f"https://127.0.0.1:{server.port}/v1"
        untrusting = client()  # the system's trust store: refused
        with pytest.raises(ConnectError, match="CERTIFICATE_VERIFY_FAILED"):
            await untrusting.request("GET", url)
        await untrusting.close()
        trusting = client(ssl_context=ssl.create_default_context(cafile=str(cert)))
        for _ in range(2):
            response = await trusting.request("GET", url)
            assert await response.read() == b'{"ok": 1}\r\n'
            response.release()
        await trusting.close()
    assert server.connections == 1  # one kept-alive connection (the refused handshake never reached it)


async def test_a_second_response_to_one_request_closes_the_connection() -> None:
    twice = replying(
        b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nokHTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nno"
    )

    async with serving(twice) as server:
        http = client()
        for _ in range(2):
            response = await http.request("GET", server.url)
            assert await response.read() == b"ok"
            response.release()
        await http.close()
    assert server.connections == 2  # the first connection was not trusted again


async def test_idle_connections_are_closed_after_keepalive() -> None:
    async with serving(sized) as server:
        http = client(keepalive=0.1)
        response = await http.request("GET", server.url)
        await response.read()
        response.release()
        async with asyncio.timeout(5):
            await server.closed.wait()  # the client closed its idle connection on its own
        response = await http.request("GET", server.url)  # and opens a new one
        assert await response.read() == b'{"ok": 1}\r\n'
        response.release()
        await http.close()
    assert server.connections == 2


async def test_a_closed_connection_leaves_no_reference_cycle() -> None:
    """Freed by reference counting once closed (the parser's callbacks are the connection itself): cyclic
    garbage would wait for the collector, whose walks cost every request in flight."""
    async with serving(closing) as server:
        http = client()
        gc.collect()
        gc.disable()
        gc.set_debug(gc.DEBUG_SAVEALL)
        try:
            for _ in range(3):
                response = await http.request("GET", server.url)
                assert await response.read() == b"ok"
                response.release()
            for _ in range(3):
                await asyncio.sleep(0)  # the transports' close
            gc.collect()
            left = [type(o).__qualname__ for o in gc.garbage if type(o).__module__.startswith("groupqwen")]
        finally:
            gc.set_debug(0)
            gc.garbage.clear()
            gc.enable()
        await http.close()
    assert left == []
