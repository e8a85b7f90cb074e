"""``api/body.read``: a request's body from its ASGI messages, as Starlette's ``Request.body`` gives it."""

from __future__ import annotations

from collections.abc import Sequence

import pytest
from starlette.requests import ClientDisconnect, Request
from starlette.types import Message

from groupqwen.api.body import read


def _request(messages: Sequence[Message]) -> Request:
    pending = list(messages)

    async def receive() -> Message:
        return pending.pop(0)

    return Request({"type": "http", "method": "POST", "path": "/", "headers": []}, receive)


@pytest.mark.parametrize(
    "messages",
    [
        [{"type": "http.request", "body": b'{"a": 1}'}],
        [
            {"type": "http.request", "body": b'{"a"', "more_body": True},
            {"type": "http.request", "body": b": 1}"},
        ],
        [
            {"type": "http.request", "body": b"", "more_body": True},
            {"type": "http.request", "body": b'{"a": 1}', "more_body": True},
            {"type": "http.request"},
        ],
    ],
    ids=["whole", "in-pieces", "empty-pieces"],
)
async def test_the_body_is_its_pieces_joined_as_starlette_reads_it(messages: list[Message]) -> None:
    assert await read(_request(messages)) == b'{"a": 1}' == await _request(messages).body()


async def test_a_client_gone_before_the_end_is_starlettes_client_disconnect() -> None:
    messages: list[Message] = [
        {"type": "http.request", "body": b'{"a"', "more_body": True},
        {"type": "http.disconnect"},
    ]
    with pytest.raises(ClientDisconnect):
        await read(_request(messages))
    with pytest.raises(ClientDisconnect):
        await _request(messages).body()
