"""The gateway's own image fetch against a real HTTP server on loopback (allow-listed where a test means
to reach it), and each refusal: every one a 400 naming the image and the reason."""

from __future__ import annotations

import io
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
from PIL import Image

from groupqwen.config import ImagesConfig
from groupqwen.errors import ImageRefused
from groupqwen.modalities.fetch import fetch

WHERE = "messages[0].content[1]"


def _png() -> bytes:
    out = io.BytesIO()
    Image.new("RGB", (32, 16), (12, 34, 56)).save(out, format="PNG")
    return out.getvalue()


PNG = _png()


@dataclass
class ImageServer:
    """A real ``http.server`` on 127.0.0.1: ``/cat.png`` answers the image, ``/to?<url>`` redirects to
    ``<url>``, ``/big`` declares 50 MB, ``/endless`` streams without a length, ``/stall`` never answers
    (until the test ends), ``/missing`` is a 404, ``/empty`` has no body, ``/page`` is HTML sent as
    ``image/png``. ``hosts`` records each request's ``Host`` header."""

    port: int = 0
    hosts: list[str] = field(default_factory=list)
    release: threading.Event = field(default_factory=threading.Event)

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}"


@pytest.fixture(scope="module")
def server() -> Iterator[ImageServer]:
    state = ImageServer()

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *args: Any) -> None:
            pass

        def _send(self, status: int, body: bytes, kind: str = "image/png", **headers: str) -> None:
            self.send_response(status)
            self.send_header("content-type", kind)
            self.send_header("content-length", str(len(body)))
            for name, value in headers.items():
                self.send_header(name, value)
            self.end_headers()
            self.wfile.write(body)

        def do_GET(self) -> None:
            state.hosts.append(self.headers.get("host", ""))
            path, _, query = self.path.partition("?")
            if path == "/cat.png":
                self._send(200, PNG, kind="application/octet-stream")  # the header is not trusted anyway
            elif path == "/to":
                self._send(302, b"", location=query)
            elif path == "/big":
                self.send_response(200)
                self.send_header("content-length", str(50_000_000))
                self.end_headers()
                self.wfile.write(b"\0" * 1024)
            elif path == "/endless":
                self.send_response(200)
                self.send_header("transfer-encoding", "chunked")
                self.end_headers()
                block = b"\0" * 65536
                try:
                    for _ in range(1000):
                        self.wfile.write(f"{len(block):x}\r\n".encode() + block + b"\r\n")
                except OSError:
                    pass  # the client stopped reading: what the test wants
            elif path == "/stall":
                state.release.wait(60)
            elif path == "/missing":
                self._send(404, b"no such image", kind="text/plain")
            elif path == "/empty":
                self._send(200, b"")
            elif path == "/page":
                self._send(200, b"<html>hello</html>")
            else:
                self._send(404, b"")

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    httpd.daemon_threads = True
    state.port = httpd.server_address[1]
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield state
    finally:
        state.release.set()
        httpd.shutdown()
        httpd.server_close()


def policy(**changes: Any) -> ImagesConfig:
    return ImagesConfig(**{"allowed_hosts": ["127.0.0.1"], "fetch_timeout_s": 30.0, **changes})


async def test_fetches_from_an_allow_listed_loopback_server(server: ImageServer) -> None:
    assert await fetch(f"{server.base}/cat.png", WHERE, policy()) == PNG
    assert server.hosts[-1] == f"127.0.0.1:{server.port}"


async def test_a_name_is_resolved_once_and_the_connection_keeps_it(server: ImageServer) -> None:
    # 'localhost' is allow-listed by name: resolved by the gateway, connected to by address, and the
    # server still sees the name in Host
    data = await fetch(f"http://localhost:{server.port}/cat.png", WHERE, policy(allowed_hosts=["localhost"]))
    assert data == PNG
    assert server.hosts[-1] == f"localhost:{server.port}"


async def test_redirects_are_followed_and_checked(server: ImageServer) -> None:
    assert await fetch(f"{server.base}/to?/cat.png", WHERE, policy()) == PNG


@pytest.mark.parametrize(
    ("path", "changes", "reason"),
    [
        # the address: loopback unless listed, by name (resolved) or literally
        ("/cat.png", {"allowed_hosts": []}, r"'127\.0\.0\.1' is a loopback address \(127\.0\.0\.0/8\)"),
        ("LOCALHOST", {"allowed_hosts": []}, r"'localhost' \(127\.0\.0\.1\) is a loopback address"),
        # a redirect to an address that is not listed (127.0.0.2 is loopback too, and not allow-listed)
        ("REDIRECT_ELSEWHERE", {}, r"'127\.0\.0\.2' is a loopback address"),
        ("/to?ftp://example.com/cat.png", {}, r"is a ftp URL; only http and https are fetched"),
        ("LOOP", {"max_redirects": 2}, r"redirects more than images\.max_redirects \(2\) times"),
        ("/big", {"max_bytes": 100_000}, r"is larger than images\.max_bytes \(100000 bytes\)"),
        ("/endless", {"max_bytes": 100_000}, r"is larger than images\.max_bytes \(100000 bytes\)"),
        ("/stall", {"fetch_timeout_s": 0.5}, r"took longer than images\.fetch_timeout_s \(0\.5 s\)"),
        ("/missing", {}, r"answered HTTP 404, not an image"),
        ("/empty", {}, r"answered with an empty body"),
        (
            "/cat.png",
            {"only_allowed_hosts": True, "allowed_hosts": ["images.example"]},
            r"not in images\.allowed_hosts",
        ),
    ],
)
async def test_each_refusal_names_the_image_and_why(
    server: ImageServer, path: str, changes: dict[str, Any], reason: str
) -> None:
    url = {
        "LOCALHOST": f"http://localhost:{server.port}/cat.png",
        "REDIRECT_ELSEWHERE": f"{server.base}/to?http://127.0.0.2:{server.port}/cat.png",
        "LOOP": f"{server.base}/to?{server.base}/to?{server.base}/to?{server.base}/cat.png",
    }.get(path, f"{server.base}{path}")
    with pytest.raises(ImageRefused, match=reason) as caught:
        await fetch(url, WHERE, policy(**changes))
    assert caught.value.message.startswith(WHERE)
    assert caught.value.status_code == 400 and caught.value.code == "image_refused"


@pytest.mark.parametrize(
    ("url", "reason"),
    [
        ("http://169.254.169.254/latest/meta-data/", r"a link-local \(cloud metadata"),
        ("http://[::ffff:10.0.0.1]/cat.png", r"a private address \(10\.0\.0\.0/8\)"),
        ("http://100.100.100.200/cat.png", r"a shared"),
        ("http://user:secret@example.com/cat.png", r"carries credentials"),
        ("http://no-such-host.invalid/cat.png", r"'no-such-host\.invalid' does not resolve"),
    ],
)
async def test_refused_before_any_connection(url: str, reason: str) -> None:
    with pytest.raises(ImageRefused, match=reason):
        await fetch(url, WHERE, policy(allowed_hosts=[]))


async def test_the_content_type_header_is_not_trusted(server: ImageServer) -> None:
    # /page says image/png and sends HTML: fetched as bytes, refused when decoded (preprocess), tested
    # end to end in tests/api/test_vision.py
    assert await fetch(f"{server.base}/page", WHERE, policy()) == b"<html>hello</html>"
