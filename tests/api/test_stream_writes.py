"""How a streamed answer leaves the gateway, as ASGI messages: the first token with its role chunk in one
write, and the end (the finishing frame, the usage, ``[DONE]`` and the end of the body) in one more."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from fastapi.testclient import TestClient
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from groupqwen.api.app import create_app
from groupqwen.backends.fake import FakeBackend
from groupqwen.testing import fake_services, fake_settings


class Recorder:
    """The app, with every message it sends recorded."""

    def __init__(self, app: ASGIApp) -> None:
        self.app, self.sent = app, list[Message]()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        async def record(message: Message) -> None:
            self.sent.append(message)
            await send(message)

        await self.app(scope, receive, record)


def bodies(tmp_path: Path, **request: Any) -> list[Message]:
    fake = FakeBackend(model_id="fake", tokens=("Hello", ",", " world", "!"))
    services = fake_services(fake_settings(tmp_path), fake)
    recorder = Recorder(create_app(services.settings, services))
    body = {"model": "fake", "messages": [{"role": "user", "content": "hi"}], "stream": True, **request}
    with TestClient(recorder) as client:
        response = client.post("/v1/chat/completions", json=body)
        assert response.status_code == 200 and response.text.endswith("data: [DONE]\n\n")
    return [m for m in recorder.sent if m["type"] == "http.response.body"]


def test_the_end_of_a_stream_is_one_write(tmp_path: Path) -> None:
    sent = bodies(tmp_path, stream_options={"include_usage": True})
    *middle, end = sent
    assert end["more_body"] is False and all(m["more_body"] for m in middle)
    frames = end["body"].split(b"\n\n")
    assert b'"finish_reason":"stop"' in frames[0] and b'"usage":{' in frames[1]
    assert frames[2:] == [b"data: [DONE]", b""]
    assert b'"role":"assistant"' in middle[0]["body"] and b"Hello" in middle[0]["body"]
    assert not any(b'finish_reason":"' in m["body"] for m in middle)


def test_with_several_choices_only_the_last_ones_end_waits(tmp_path: Path) -> None:
    sent = bodies(tmp_path, n=2, seed=1)
    finishing = [m for m in sent if b'"finish_reason":"stop"' in m["body"]]
    assert len(finishing) == 2 and finishing[0]["more_body"] is True
    assert finishing[1]["more_body"] is False and finishing[1]["body"].endswith(b"data: [DONE]\n\n")
