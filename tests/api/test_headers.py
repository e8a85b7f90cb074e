"""``auth.headers``: a request's headers read once into a dict, the same values Starlette's ``Headers``
gives (the first of a repeated name), for the auth and cache headers read on every request."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from starlette.requests import Request

from groupqwen.api import auth
from groupqwen.api.app import RequestContextMiddleware
from groupqwen.api.openai import cache_control


def _request(headers: list[tuple[bytes, bytes]]) -> Request:
    return Request({"type": "http", "method": "POST", "path": "/v1/chat/completions", "headers": headers})


def test_the_same_values_as_starlettes_headers_first_of_a_repeated_name() -> None:
    raw = [
        (b"authorization", b"Bearer first"),
        (b"x-groupqwen-cache-ttl", b"30"),
        (b"authorization", b"Bearer second"),
        (b"cache-control", b"no-cache"),
        (b"x-latin", "café".encode("latin-1")),
    ]
    request = _request(raw)
    found = auth.headers(request)
    for name in ("authorization", "x-groupqwen-cache-ttl", "cache-control", "x-latin", "absent"):
        assert found.get(name) == request.headers.get(name)
    assert found["authorization"] == "Bearer first"
    assert auth.headers(_request(raw)) == found
    assert cache_control(found) == cache_control(request.headers) == (30.0, False, None)


def test_made_once_a_request() -> None:
    request = _request([(b"authorization", b"Bearer k")])
    first = auth.headers(request)
    assert auth.headers(Request(request.scope)) is first  # another Request over the same scope reuses it


async def _through_the_middleware(headers: list[tuple[bytes, bytes]]) -> list[dict[str, object]]:
    """What ``RequestContextMiddleware`` (a 10-byte body limit) sends for an empty POST with ``headers``,
    around an app that answers 204."""

    async def app(scope: dict[str, object], receive: object, send: Callable[..., Awaitable[None]]) -> None:
        await send({"type": "http.response.start", "status": 204, "headers": []})
        await send({"type": "http.response.body", "body": b""})

    async def receive() -> dict[str, object]:
        return {"type": "http.request", "body": b"", "more_body": False}

    sent: list[dict[str, object]] = []

    async def send(message: dict[str, object]) -> None:
        sent.append(message)

    scope = {"type": "http", "method": "POST", "path": "/v1/x", "headers": headers}
    await RequestContextMiddleware(app, max_body_bytes=10)(scope, receive, send)  # type: ignore[arg-type]
    return sent


async def test_the_middleware_reads_the_same_dict() -> None:
    """The request id and the declared length come from ``auth.scope_headers`` (the first of a repeated
    name); a length that is no decimal number (``²`` is a digit to ``str.isdigit``, not to ``int``) is left
    to the route, not a 500."""
    ids = [(b"x-request-id", b"first-id"), (b"x-request-id", b"second-id")]
    sent = await _through_the_middleware(ids)
    assert sent[0]["status"] == 204 and (b"x-request-id", b"first-id") in sent[0]["headers"]  # type: ignore[operator]
    assert (await _through_the_middleware([(b"content-length", b"11")]))[0]["status"] == 413
    assert (await _through_the_middleware([(b"content-length", b"10")]))[0]["status"] == 204
    assert (await _through_the_middleware([(b"content-length", "²".encode("latin-1"))]))[0]["status"] == 204
