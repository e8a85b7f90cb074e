"""The shipped fake backend: what a served fake keeps of its requests stays bounded."""

from __future__ import annotations

from pathlib import Path

from groupqwen.backends.fake import FakeBackend
from groupqwen.messages import GenerationRequest, Message, Sampling
from groupqwen.pool.factory import backend_for
from groupqwen.testing import fake_settings


def _ask(text: str) -> GenerationRequest:
    return GenerationRequest(messages=(Message("user", text),), sampling=Sampling())


async def test_keep_requests_keeps_the_last_ones() -> None:
    backend = FakeBackend(keep_requests=2)
    for text in ("one", "two", "three"):
        [chunk async for chunk in backend.stream(_ask(text))]
    assert [r.messages[0].content for r in backend.requests] == ["two", "three"]


def test_a_served_fake_keeps_a_bounded_number_of_requests(tmp_path: Path) -> None:
    settings = fake_settings(tmp_path)
    backend = backend_for(settings.catalog()["fake"], settings)
    assert isinstance(backend, FakeBackend) and backend.keep_requests == 1000
