"""The ``openai_http`` backend's HTTP/1.1 client: asyncio protocols whose answers llhttp parses
(``httptools``, what uvicorn's fast protocol uses), pooled per origin.

What the backend needs and no more: a request sent whole (its head and body in one write), the answer's
head awaited, its body read as it arrives (``Content-Length``, chunked, or to the connection's close);
kept-alive connections reused (one pool per scheme, host and port; idle ones closed after ``keepalive``
seconds, before servers close theirs), at most ``limit`` connections in use at once (a request past it
waits for one); ``https://`` over asyncio's TLS (``ssl.create_default_context()`` unless given a context);
``connect_timeout`` on the TCP (and TLS) connect. No compression is asked for, no redirects followed, no
cookies kept. A request whose kept-alive connection the server had closed before answering (the race at
its keep-alive timeout) is sent once more on a new connection. A response not read to its end closes its
connection (the server stops generating). The caller's own timers bound the rest: waiting for a
connection, the head, each read.

Every failure is an ``HTTPClientError``: ``InvalidURL``, ``ConnectError``, ``Disconnected`` (the server
closed the connection before the response ended), ``ProtocolError`` (a malformed response).
"""

from __future__ import annotations

import asyncio
import ssl
import time
from collections import deque
from collections.abc import Mapping
from typing import NamedTuple
from urllib.parse import urlsplit

import httptools

_BUFFER = 1 << 18  # a body's bytes held unread before the socket is paused
_URLS = 256  # parsed URLs remembered (the replicas' few)


class HTTPClientError(Exception):
    """The request failed: no connection, or no complete, well-formed response."""


class InvalidURL(HTTPClientError):
    """A URL no request can use."""


class ConnectError(HTTPClientError):
    """The TCP or TLS connection could not be made within the connect timeout."""


class Disconnected(HTTPClientError):
    """The server closed the connection before its response ended."""


class ProtocolError(HTTPClientError):
    """The server's response is not HTTP/1.1 as llhttp reads it."""


class _Origin(NamedTuple):
    scheme: str
    host: str
    port: int
    host_header: str  # the ``Host`` header: the port only when not the scheme's default


class Response:
    """A response's head, and its body as it arrives; ``release`` hands the connection back (or closes it,
    when the body was not read to its end)."""

    __slots__ = (
        "_chunks",
        "_client",
        "_conn",
        "_error",
        "_size",
        "_waiter",
        "complete",
        "headers",
        "reason",
        "status",
    )

    def __init__(self, client: HTTPClient, conn: _Connection) -> None:
        self._client: HTTPClient | None = client
        self._conn = conn
        self.status, self.reason = 0, ""
        self.headers: dict[str, str] = {}  # names in lower case; a repeated header's values joined by ", "
        self.complete = False  # the body's end has been parsed
        self._chunks: list[bytes] = []
        self._size = 0
        self._error: HTTPClientError | None = None
        self._waiter: asyncio.Future[None] | None = None

    @property
    def content_type(self) -> str:
        return self.headers.get("content-type", "").partition(";")[0].strip().lower()

    def read_nowait(self) -> bytes:
        """What has arrived and not been read (``b""``: nothing yet, or the end)."""
        if self._error is not None and not self._chunks:
            raise self._error
        data = b"".join(self._chunks) if len(self._chunks) != 1 else self._chunks[0]
        self._chunks.clear()
        if self._size >= _BUFFER and not self._conn.closed:
            self._conn.transport.resume_reading()
        self._size = 0
        return data

    def at_eof(self) -> bool:
        return self.complete and not self._chunks

    async def readany(self) -> bytes:
        """The next bytes of the body, waiting for them; ``b""`` at its end."""
        while not self._chunks and not self.complete and self._error is None:
            self._waiter = asyncio.get_running_loop().create_future()
            try:
                await self._waiter
            finally:
                self._waiter = None
        return self.read_nowait()

    async def read(self) -> bytes:
        """The rest of the body."""
        pieces = []
        while not self.at_eof():  # a body that has arrived whole: one read, no wait for its end
            pieces.append(await self.readany())
        return b"".join(pieces)

    def release(self) -> None:
        """The connection back to the pool if the body was read to its end and the server keeps it alive,
        else closed (idempotent)."""
        if self._client is not None:
            client, conn, self._client = self._client, self._conn, None
            conn.response = None
            client._release(conn, reuse=self.complete and self._error is None and conn.keep_alive)

    def _wake(self) -> None:
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_result(None)

    def _feed(self, data: bytes) -> None:
        self._chunks.append(data)
        self._size += len(data)
        if self._size >= _BUFFER:
            self._conn.transport.pause_reading()
        self._wake()

    def _fail(self, error: HTTPClientError) -> None:
        if not self.complete and self._error is None:
            self._error = error
            self._wake()


class _Connection(asyncio.Protocol):
    """One socket; the parser's callbacks fill its current ``response``."""

    def __init__(self, origin: _Origin) -> None:
        self.origin = origin
        self.transport: asyncio.Transport = None  # type: ignore[assignment]  # set by connection_made
        self.parser: httptools.HttpResponseParser | None = httptools.HttpResponseParser(self)
        self.response: Response | None = None
        self.head: asyncio.Future[None] | None = None  # the response's head parsed
        self.closed = self.keep_alive = self.received = False
        self.reused = False
        self.idle_since = 0.0
        self._names: list[bytes] = []
        self._values: list[bytes] = []
        self._length = False  # the body's end is known (Content-Length or chunked), not the close

    def send(self, data: bytes, response: Response) -> asyncio.Future[None]:
        self.response, self.received = response, False
        self.head = asyncio.get_running_loop().create_future()
        self.transport.write(data)
        return self.head

    # -- asyncio ---------------------------------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        parser = self.parser
        if parser is None or self.response is None or self.response.complete:  # nobody asked for them
            self.transport.close()
            return
        self.received = True
        try:
            parser.feed_data(data)
        except httptools.HttpParserError as exc:
            self._failed(ProtocolError(f"malformed response: {exc}"))
            self.transport.close()

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self.parser = None  # its callbacks are this connection: the cycle would wait for the collector
        response = self.response
        if response is not None and self.head is not None and self.head.done() and not self._length:
            response.complete = True  # a body that ends with the connection: it has ended
            response._wake()
            return
        reason = f": {exc}" if exc else ""
        self._failed(Disconnected(f"the server closed the connection before its response ended{reason}"))

    def _failed(self, error: HTTPClientError) -> None:
        if self.head is not None and not self.head.done():
            self.head.set_exception(error)
        elif self.response is not None:
            self.response._fail(error)

    # -- llhttp ----------------------------------------------------------------------------------------------

    def on_status(self, reason: bytes) -> None:
        assert self.response is not None
        self.response.reason = reason.decode("latin-1")

    def on_message_begin(self) -> None:
        if self.response is None or self.response.complete:  # a second response to one request
            raise ProtocolError("a response nobody asked for")

    def on_header(self, name: bytes, value: bytes) -> None:
        self._names.append(name)
        self._values.append(value)

    def on_headers_complete(self) -> None:
        response, parser = self.response, self.parser
        assert response is not None and self.head is not None and parser is not None
        response.status = parser.get_status_code()
        headers = response.headers
        for name, value in zip(self._names, self._values, strict=True):
            key, text = name.decode("latin-1").lower(), value.decode("latin-1")
            headers[key] = f"{headers[key]}, {text}" if key in headers else text
        self._names.clear()
        self._values.clear()
        self.keep_alive = parser.should_keep_alive()
        self._length = "content-length" in headers or "chunked" in headers.get("transfer-encoding", "")
        self._length = self._length or response.status in (204, 304)
        if not self.head.done():
            self.head.set_result(None)

    def on_body(self, body: bytes) -> None:
        assert self.response is not None
        self.response._feed(body)

    def on_message_complete(self) -> None:
        response = self.response
        assert response is not None
        response.complete = True
        response._wake()


class HTTPClient:
    """Pooled connections to any number of origins; ``headers`` go with every request."""

    def __init__(
        self,
        *,
        limit: int,
        keepalive: float,
        connect_timeout: float,
        headers: Mapping[str, str] | None = None,
        ssl_context: ssl.SSLContext | None = None,
    ) -> None:
        if limit < 1:
            raise ValueError(f"limit must be at least 1, not {limit}")
        self.keepalive, self.connect_timeout = keepalive, connect_timeout
        self._headers = "".join(f"{name}: {value}\r\n" for name, value in (headers or {}).items())
        self._ssl = ssl_context
        self._slots = asyncio.Semaphore(limit)
        self._idle: dict[_Origin, deque[_Connection]] = {}
        self._urls: dict[str, tuple[_Origin, str]] = {}
        self._sweep: asyncio.TimerHandle | None = None
        self.closed = False

    async def request(
        self, method: str, url: str, *, body: bytes = b"", headers: Mapping[str, str] | None = None
    ) -> Response:
        """The response's head (its body left to read; ``release`` it)."""
        if self.closed:
            raise HTTPClientError("the client is closed")
        origin, target = self._parse(url)
        extra = "".join(f"{name}: {value}\r\n" for name, value in headers.items()) if headers else ""
        length = f"Content-Length: {len(body)}\r\n" if body or method not in ("GET", "HEAD") else ""
        head = (
            f"{method} {target} HTTP/1.1\r\nHost: {origin.host_header}\r\n{self._headers}{extra}{length}\r\n"
        )
        data = head.encode("latin-1") + body
        await self._slots.acquire()
        try:
            conn = await self._connection(origin)
            try:
                return await self._send(conn, data)
            except Disconnected:
                if not conn.reused or conn.received:
                    raise
            return await self._send(await self._connection(origin, fresh=True), data)  # closed while idle
        except BaseException:
            self._slots.release()
            raise

    async def close(self) -> None:
        """Close every idle connection; connections in use close when their responses are released."""
        self.closed = True
        if self._sweep is not None:
            self._sweep.cancel()
        for idle in self._idle.values():
            while idle:
                idle.pop().transport.close()
        await asyncio.sleep(0)  # let the transports close

    # -- internals -------------------------------------------------------------------------------------------

    def _parse(self, url: str) -> tuple[_Origin, str]:
        known = self._urls.get(url)
        if known is not None:
            return known
        try:
            parts = urlsplit(url)
            default = 443 if parts.scheme == "https" else 80
            port = parts.port or default
        except ValueError as exc:
            raise InvalidURL(f"{url}: {exc}") from None
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise InvalidURL(f"{url}: not an http:// or https:// URL with a host")
        target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        if len(self._urls) >= _URLS:
            self._urls.clear()
        host = f"[{parts.hostname}]" if ":" in parts.hostname else parts.hostname
        origin = _Origin(parts.scheme, parts.hostname, port, host if port == default else f"{host}:{port}")
        self._urls[url] = known = (origin, target)
        return known

    async def _send(self, conn: _Connection, data: bytes) -> Response:
        response = Response(self, conn)
        try:
            await conn.send(data, response)
        except BaseException:
            conn.response = None
            conn.transport.close()
            raise
        return response

    async def _connection(self, origin: _Origin, *, fresh: bool = False) -> _Connection:
        idle = self._idle.get(origin)
        now = time.monotonic()
        while idle and not fresh:
            conn = idle.pop()  # the most recently used: the least likely to be closed by the server
            if not conn.transport.is_closing() and now - conn.idle_since < self.keepalive:
                conn.reused = True
                return conn
            conn.transport.close()
        loop = asyncio.get_running_loop()
        tls = None
        if origin.scheme == "https":
            tls = self._ssl = self._ssl or ssl.create_default_context()
        try:
            async with asyncio.timeout(self.connect_timeout):
                _, conn = await loop.create_connection(
                    lambda: _Connection(origin), origin.host, origin.port, ssl=tls
                )
        except TimeoutError:
            raise ConnectError(
                f"{origin.host}:{origin.port}: no connection within {self.connect_timeout:g} s"
            ) from None
        except (OSError, ssl.SSLError) as exc:
            raise ConnectError(f"{origin.host}:{origin.port}: {exc}") from exc
        return conn

    def _release(self, conn: _Connection, *, reuse: bool) -> None:
        self._slots.release()
        if not reuse or conn.closed or conn.transport.is_closing() or self.closed:
            conn.transport.close()
            return
        conn.idle_since = time.monotonic()
        self._idle.setdefault(conn.origin, deque()).append(conn)
        if self._sweep is None:
            self._sweep = asyncio.get_running_loop().call_later(self.keepalive, self._expire)

    def _expire(self) -> None:
        """Close the connections idle for ``keepalive``; once a period while any are idle."""
        self._sweep, now = None, time.monotonic()
        for idle in self._idle.values():
            while idle and (idle[0].closed or now - idle[0].idle_since >= self.keepalive):
                idle.popleft().transport.close()
        if any(self._idle.values()):
            self._sweep = asyncio.get_running_loop().call_later(self.keepalive, self._expire)
