"""``serve``: the app on uvicorn with the settings' ``server:`` section, plus the guards uvicorn lacks.

What uvicorn (its httptools protocol) gives, and what holds:

- ``timeout_keep_alive`` (``server.keep_alive_timeout_s``) closes a kept-alive connection left idle *after a
  response*. It arms no timer on a fresh connection, and the first byte of the next request disarms it.
- So a client that connects and sends nothing, or half a request line or headers, would hold its connection
  forever: ``GuardedHttpToolsProtocol`` closes a connection whose request line and headers are not complete
  ``server.header_timeout_s`` after it opened (or after the first byte of a kept-alive connection's next
  request).
- A body that stops arriving is the ASGI middleware's (``RequestContextMiddleware``): a 408 after
  ``server.body_timeout_s`` without new bytes, then the connection is closed.
- ``limit_concurrency`` (``server.limit_concurrency``): with that many connections open (or requests in
  progress), a new request gets uvicorn's plain-text 503 instead of reaching the app.
- ``server.max_header_bytes``: a longer request line plus headers is a 400 and the connection closed
  (``GuardedHttpToolsProtocol`` too: llhttp sets no limit of its own).
- WebSockets (``/v1/ws``): the implementation is ``ws.implementation`` (chosen by ``bench/ws.py``); a frame
  over 4 × ``ws.max_frame_bytes`` closes the socket (1009), a smaller one over the limit gets an error
  frame from the route; uvicorn's protocol pings are off: the route keeps its own heartbeat (``ping``
  frames a browser's script can see, on the injected clock).

And one thing for speed: once the app and its services are built, what they hold (the imports, the
settings, the services: some 170,000 objects) is moved out of the garbage collector's sight
(``freeze_heap``), so that its full collections stop walking it; they cost ~0.1 s each and a tenth of a
proxied request's CPU (docs/benchmarks.md).
"""

from __future__ import annotations

import asyncio
import gc
import os
from functools import partial
from pathlib import Path
from typing import Any

import uvicorn
from starlette.types import ASGIApp
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol
from uvicorn.supervisors import Multiprocess

from groupqwen import log
from groupqwen.api.app import create_app
from groupqwen.api.services import build_services
from groupqwen.config import Settings, load_settings


class GuardedHttpToolsProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol (llhttp, in C: 0.08 ms of CPU per request against h11's 0.21, docs/
    benchmarks.md), with the two guards it lacks: a connection whose request line and headers are not
    complete ``header_timeout_s`` after it opened (or after the first byte of a kept-alive connection's next
    request) is closed, and a request line plus headers over ``max_header_bytes`` is a 400 and the
    connection closed.

    A head that arrives whole in one read (nearly every request) arms no timer: the guard is armed only
    when a read leaves the head incomplete."""

    _header_timer: asyncio.TimerHandle | None = None

    def __init__(
        self, *args: Any, header_timeout_s: float = 30.0, max_header_bytes: int = 16384, **kwargs: Any
    ) -> None:
        super().__init__(*args, **kwargs)
        self.header_timeout_s, self.max_header_bytes = header_timeout_s, max_header_bytes
        self._in_head = True  # a request line and headers begun (or awaited on a new connection), not ended
        self._head_bytes = 0  # bytes of the reads that left the head incomplete
        self._read_bytes = 0  # bytes of the read being parsed

    def connection_made(  # type: ignore[override]
        self, transport: asyncio.Transport
    ) -> None:
        super().connection_made(transport)
        self._guard_headers()

    def data_received(self, data: bytes) -> None:
        self._read_bytes = len(data)
        super().data_received(data)
        if not self._in_head or self.transport.is_closing():
            return
        self._head_bytes += len(data)  # a read that leaves the head incomplete: (nearly) all of it is head
        if self._head_bytes > self.max_header_bytes:  # the head goes on past the limit: stop buffering it
            self._head_too_large()
        else:
            self._guard_headers()

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._in_head, self._head_bytes = True, 0

    def on_headers_complete(self) -> None:
        self._in_head = False
        self._unguard_headers()
        # the head lies within the reads since it began: measured only when they could exceed the limit
        if (
            self._head_bytes + self._read_bytes > self.max_header_bytes
            and self._head_size() > self.max_header_bytes
        ):
            self._head_too_large()
            return
        super().on_headers_complete()

    def _head_size(self) -> int:
        return len(self.url) + sum(len(name) + len(value) + 4 for name, value in self.headers)

    def connection_lost(self, exc: Exception | None) -> None:
        self._unguard_headers()
        super().connection_lost(exc)

    def _head_too_large(self) -> None:
        self._unguard_headers()
        self.send_400_response(
            f"The request line and headers are larger than {self.max_header_bytes} bytes "
            "(server.max_header_bytes)."
        )

    def _guard_headers(self) -> None:
        if self._header_timer is None and not self.transport.is_closing():
            self._header_timer = self.loop.call_later(self.header_timeout_s, self._headers_timed_out)

    def _unguard_headers(self) -> None:
        if self._header_timer is not None:
            self._header_timer.cancel()
            self._header_timer = None

    def _headers_timed_out(self) -> None:
        self._header_timer = None
        if self._in_head and not self.transport.is_closing():
            self.transport.close()


def uvicorn_config(app: ASGIApp | str, settings: Settings, **options: Any) -> uvicorn.Config:
    """uvicorn's configuration for ``app`` (or an import string): address, timeouts and limits from
    ``settings``; ``options`` (any other ``uvicorn.Config`` argument) win. It pickles, as worker processes
    need."""
    server = settings.server
    protocol = partial(
        GuardedHttpToolsProtocol,
        header_timeout_s=server.header_timeout_s,
        max_header_bytes=server.max_header_bytes,
    )
    kwargs: dict[str, Any] = {
        "host": settings.host,
        "port": settings.port,
        "http": protocol,
        "timeout_keep_alive": server.keep_alive_timeout_s,
        "limit_concurrency": server.limit_concurrency,
        "ws": settings.ws.implementation,
        "ws_max_size": 4 * settings.ws.max_frame_bytes,
        "ws_ping_interval": None,
        "ws_ping_timeout": None,
        "log_config": None,
        # nothing reads the client's address or scheme (callers are told apart by key), so uvicorn's layer
        # that rewrites them from X-Forwarded-* headers would only cost every request its pass
        "proxy_headers": False,
        "timeout_graceful_shutdown": 5,
        **options,
    }
    return uvicorn.Config(app, **kwargs)


def serve(app: ASGIApp, settings: Settings) -> bool:
    """Serve ``app`` until the process is told to stop; ``False`` if the server failed to start."""
    server = uvicorn.Server(uvicorn_config(app, settings))
    freeze_heap()
    server.run()
    return server.started


def serve_workers(config_file: Path | None, settings: Settings) -> None:
    """Serve with ``settings.server.workers`` processes sharing one listening socket (uvicorn's supervisor:
    a worker that dies is replaced; one that fails to start stops them all). Each worker builds its own
    services from ``config_file`` and the environment (``worker_app``); the caller has checked that they
    share what must be shared (``cli/checks.py``, ``worker_problems``)."""
    os.environ[WORKER_CONFIG] = "" if config_file is None else str(config_file.resolve())
    os.environ["GROUPQWEN_HOST"], os.environ["GROUPQWEN_PORT"] = settings.host, str(settings.port)
    config = uvicorn_config(
        f"{__name__}:worker_app",
        settings,
        factory=True,
        workers=settings.server.workers,
        # a worker answers the supervisor's pings once it has imported the gateway, seconds on a busy machine
        timeout_worker_healthcheck=WORKER_HEALTHCHECK_S,
    )
    Multiprocess(config, sockets=[config.bind_socket()]).run()


WORKER_CONFIG = "GROUPQWEN_WORKER_CONFIG_FILE"  # serve_workers → worker_app: the configuration file
WORKER_HEALTHCHECK_S = 60  # a worker silent this long is taken for hung, killed and replaced


def worker_app() -> ASGIApp:
    """A worker process's app (uvicorn calls it in each worker): the settings read again, the services
    built here."""
    path = os.environ.get(WORKER_CONFIG)
    settings = load_settings(Path(path) if path else None)
    log.setup(settings.log_level, settings.log_format)
    app = create_app(settings, build_services(settings))
    freeze_heap()
    return app


def freeze_heap() -> None:
    """Collect what is garbage now, then move every object left out of the garbage collector's sight
    (``gc.freeze``): what a server process has built before serving lives as long as the process, and
    without this each of the collector's full collections walks all of it again (~0.1 s each, several a
    minute under load: about a tenth of a proxied request's CPU). Frozen objects are still freed when
    nothing refers to them; only a reference cycle among them is never collected."""
    gc.collect()
    gc.freeze()
