"""A chat completion leaves no reference cycle behind: its objects are freed as it ends, by reference
counting. Cyclic garbage waits for the garbage collector, whose collections then walk it, and with many
requests in flight they walked every one (docs/benchmarks.md: a third of a request's CPU at c=64). Driven
through the ASGI interface itself, as uvicorn drives it, so that no client library adds garbage of its
own."""

from __future__ import annotations

import asyncio
import gc
import json
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi import FastAPI
from starlette.types import Message

from groupqwen.api.app import create_app
from groupqwen.backends.fake import FakeBackend
from groupqwen.testing import fake_services, fake_settings


async def ask(app: FastAPI, *, stream: bool) -> list[Message]:
    """One chat completion through ``app``; the messages it sent."""
    body = json.dumps(
        {"model": "fake", "messages": [{"role": "user", "content": "hi"}], "stream": stream}
    ).encode()
    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "POST",
        "scheme": "http",
        "path": "/v1/chat/completions",
        "raw_path": b"/v1/chat/completions",
        "query_string": b"",
        "root_path": "",
        "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())],
        "client": ("127.0.0.1", 50000),
        "server": ("127.0.0.1", 8000),
    }
    sent: list[Message] = []
    done = asyncio.Event()
    delivered = False

    async def receive() -> Message:
        nonlocal delivered
        if not delivered:
            delivered = True
            return {"type": "http.request", "body": body, "more_body": False}
        await done.wait()  # as uvicorn: after the response, every receive is a disconnect
        return {"type": "http.disconnect"}

    async def send(message: Message) -> None:
        sent.append(message)
        if message["type"] == "http.response.body" and not message.get("more_body", False):
            done.set()

    await app(scope, receive, send)
    return sent


@pytest.fixture
def saved_garbage() -> Iterator[list[object]]:
    """The collector off, and what it would have freed kept in ``gc.garbage`` (given here) instead."""
    gc.collect()
    gc.disable()
    gc.set_debug(gc.DEBUG_SAVEALL)
    try:
        yield gc.garbage
    finally:
        gc.set_debug(0)
        gc.garbage.clear()
        gc.enable()


async def test_a_chat_completion_leaves_no_reference_cycle(
    tmp_path: Path, saved_garbage: list[object]
) -> None:
    services = fake_services(fake_settings(tmp_path), FakeBackend(model_id="fake", tokens=("Hel", "lo")))
    app = create_app(services.settings, services)
    await services.start()
    try:
        for stream in (False, True):  # once each first: what a first request builds and keeps
            await ask(app, stream=stream)
        await asyncio.sleep(0)
        gc.collect()
        saved_garbage.clear()
        for stream in (False, True, False, True):
            sent = await ask(app, stream=stream)
            assert sent[0]["status"] == 200
            assert sent[-1]["type"] == "http.response.body" and not sent[-1].get("more_body", False)
        await asyncio.sleep(0)  # the cancelled watchers' last step
        gc.collect()
        kinds = Counter(type(o).__qualname__ for o in saved_garbage)
        assert not kinds, f"cyclic garbage left by 4 requests: {kinds.most_common(12)}"
    finally:
        await services.close()
