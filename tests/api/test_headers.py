"""``auth.headers``: a request's headers read once into a dict, the same values Starlette's ``Headers``
gives (the first of a repeated name), for the auth and cache headers read on every request."""

from __future__ import annotations

from starlette.requests import Request

from groupqwen.api import auth
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
