"""``/v1/ws`` on the bundled model (SmolLM2-135M on llama.cpp, one thread) in a real ``groupqwen serve``,
with the ``websockets`` client: a whole generation, a cancel that frees the model's slot, and a generation
whose TCP connection is dropped mid-stream then resumed on a new one: the text put together equals an
uninterrupted run at temperature 0, no piece missing, none twice."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from ws_client import (
    abort,
    active_requests,
    ask,
    open_socket,
    receive,
    send,
    seqs,
    text_of,
    until_finished,
    wait_for,
    websocket_gauges,
)

from groupqwen.config import Settings
from groupqwen.pool.bundled import ensure_bundled
from groupqwen.testing import ServedProcess, serve_process

pytestmark = pytest.mark.integration

SMALL = "smollm2-135m"
COUNT = "Count from 1 to 100, one number per line."


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServedProcess]:
    models_dir = Settings().models_dir
    ensure_bundled(Settings().catalog()[SMALL], models_dir)
    with serve_process(
        tmp_path_factory.mktemp("ws-model"),
        models={},
        default_model=SMALL,
        models_dir=str(models_dir),
        n_threads=1,
        n_ctx=1024,
    ) as served:
        yield served


def test_a_whole_generation(server: ServedProcess) -> None:
    with open_socket(server) as ws:
        receive(ws)
        send(ws, ask("a", SMALL, "Say hello.", max_tokens=24, temperature=0))
        frames = until_finished(ws, ["a"])
    assert frames[-1]["type"] == "done" and frames[-1]["usage"]["completion_tokens"] > 0
    assert text_of(frames, "a").strip() and frames[0]["headers"]["x-groupqwen-model"] == SMALL
    assert seqs(frames, "a") == list(range(1, len(frames) + 1))


def test_cancel_frees_the_models_slot(server: ServedProcess) -> None:
    with open_socket(server) as ws:
        receive(ws)
        send(ws, ask("long", SMALL, COUNT, max_tokens=900, temperature=0))
        for _ in range(3):
            assert receive(ws)["type"] == "chunk"
        send(ws, {"type": "cancel", "id": "long"})
        frames = until_finished(ws, ["long"])
        # the generation is closed and the model released before the cancelled frame is sent
        assert frames[-1]["type"] == "cancelled" and active_requests(server, SMALL) == 0


def test_a_dropped_connection_resumed_gives_the_uninterrupted_text(server: ServedProcess) -> None:
    body = {"max_tokens": 120, "temperature": 0}
    with open_socket(server) as ws:
        receive(ws)
        send(ws, ask("whole", SMALL, COUNT, **body))
        uninterrupted = text_of(until_finished(ws, ["whole"]), "whole")
    with open_socket(server) as ws:
        session = receive(ws)["session"]
        send(ws, ask("cut", SMALL, COUNT, **body))
        before = [receive(ws) for _ in range(8)]
        abort(ws)
    wait_for(lambda: websocket_gauges(server)["parked_generations"] == 1, "the generation parked")
    with open_socket(server) as ws:
        receive(ws)
        send(ws, {"type": "resume", "session": session, "generations": [{"id": "cut", "after_seq": 8}]})
        assert receive(ws)["type"] == "resumed"
        after = until_finished(ws, ["cut"])
    frames = before + after
    assert seqs(frames, "cut") == list(range(1, len(frames) + 1))
    assert frames[-1]["type"] == "done"
    assert text_of(frames, "cut") == uninterrupted and len(uninterrupted) > 50
