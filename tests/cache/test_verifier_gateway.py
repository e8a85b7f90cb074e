"""The verifier in the gateway: the decision shown (headers and the ``groupqwen`` object), the per-request
false-hit rate header and its errors, and a regenerated hit tightening its entry."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from groupqwen.backends.fake import FakeBackend
from groupqwen.cache.embedders import MiniLMEmbedder
from groupqwen.cache.semantic import SemanticCache
from groupqwen.cache.verifier import load

from .helpers import embedded_store, policy
from .test_gateway import chat, gateway_app, settle

RATE = "x-groupqwen-cache-max-false-hit-rate"


@pytest.fixture
def verified(tmp_path: Path, minilm: MiniLMEmbedder) -> Iterator[tuple[TestClient, dict[str, FakeBackend]]]:
    cache = SemanticCache(embedded_store(minilm.dim), minilm, policy(), verifier=load())
    app, backends = gateway_app(tmp_path, cache)
    with TestClient(app) as client:
        yield client, backends


def test_the_stage_and_scores_are_shown(verified: tuple[TestClient, dict[str, FakeBackend]]) -> None:
    client, backends = verified
    first = chat(client, "How do I center a div in CSS?")
    assert first.headers["x-groupqwen-cache"] == "miss" and "x-groupqwen-cache-stage" not in first.headers
    assert first.json()["groupqwen"]["cache"]["status"] == "miss"
    exact = chat(client, "how do i center a div in css?")
    assert exact.headers["x-groupqwen-cache-stage"] == "exact"
    near = chat(client, "How can I center a div with CSS?")
    assert (
        near.headers["x-groupqwen-cache"] == "hit" and near.headers["x-groupqwen-cache-stage"] == "verifier"
    )
    shown = near.json()["groupqwen"]["cache"]
    assert shown["stage"] == "verifier" and shown["status"] == "hit"
    assert shown["similarity"] == pytest.approx(float(near.headers["x-groupqwen-cache-similarity"]), abs=1e-4)
    assert shown["score"] == pytest.approx(float(near.headers["x-groupqwen-cache-score"]), abs=1e-4)
    settle(backends["fake"])
    stream = client.post(
        "/v1/chat/completions",
        json={
            "model": "fake",
            "messages": [{"role": "user", "content": "How can I center a div using CSS?"}],
            "temperature": 0,
            "stream": True,
        },
        headers={"authorization": "Bearer k1"},
    )
    assert stream.headers["x-groupqwen-cache-stage"] == "verifier"
    assert '"stage": "verifier"' in stream.text or '"stage":"verifier"' in stream.text


def test_the_rate_header_moves_the_bar(verified: tuple[TestClient, dict[str, FakeBackend]]) -> None:
    client, backends = verified
    chat(client, "What are the best books to learn statistics?")
    question = "Which statistics books should a beginner read?"
    strict = chat(client, question, headers={RATE: "0"})
    assert strict.headers["x-groupqwen-cache"] == "miss" and "x-groupqwen-cache-score" in strict.headers
    settle(backends["fake"])
    loose = chat(client, question + " ", headers={RATE: "1"})
    assert loose.headers["x-groupqwen-cache"] == "hit"


@pytest.mark.parametrize("rate", ["often", "-0.1", "1.5", "nan", ""])
def test_a_bad_rate_header_is_a_400(verified: tuple[TestClient, dict[str, FakeBackend]], rate: str) -> None:
    client, backends = verified
    response = chat(client, "hello there", headers={RATE: rate})
    assert response.status_code == 400
    error = response.json()["error"]
    assert error["param"] == RATE and "fraction from 0 to 1" in error["message"]
    assert backends["fake"].requests == []


def test_asking_again_with_no_cache_tightens_the_served_entry(
    verified: tuple[TestClient, dict[str, FakeBackend]],
) -> None:
    client, backends = verified
    chat(client, "How do I learn to cook?")
    question = "What is the best way to learn cooking?"
    assert chat(client, question, headers={RATE: "1"}).headers["x-groupqwen-cache"] == "hit"
    settle(backends["fake"])
    fresh = chat(client, question, headers={"cache-control": "no-cache"})
    assert fresh.headers["x-groupqwen-cache"] == "bypass"
    settle(backends["fake"])
    stats = client.get("/v1/cache/stats").json()
    assert stats["regenerated"] == 1 and stats["learned_bars"] == 1


def test_feedback_on_a_hit_tightens_its_entry(verified: tuple[TestClient, dict[str, FakeBackend]]) -> None:
    client, backends = verified
    chat(client, "How do I learn to cook?")
    hit = chat(client, "What is the best way to learn cooking?", headers={RATE: "1"})
    hit_id = hit.headers["x-groupqwen-cache-hit-id"]
    assert hit.json()["groupqwen"]["cache"]["hit_id"] == hit_id and len(hit_id) >= 24
    settle(backends["fake"])
    feedback = client.post("/v1/cache/feedback", json={"hit_id": hit_id, "rating": "bad"})
    assert feedback.status_code == 200 and feedback.json()["hit_id"] == hit_id
    stats = client.get("/v1/cache/stats").json()
    assert stats["disliked"] == 1 and stats["learned_bars"] == 1
    # the same question no longer reaches that entry at the same score
    again = chat(client, "What is the best way to learn cooking?", headers={RATE: "1"})
    assert again.headers["x-groupqwen-cache"] == "miss"
    settle(backends["fake"])
    # once per hit: the id is spent; an exact hit has none
    assert client.post("/v1/cache/feedback", json={"hit_id": hit_id, "rating": "bad"}).status_code == 404
    assert "x-groupqwen-cache-hit-id" not in chat(client, "How do I learn to cook?").headers


@pytest.mark.parametrize(
    ("body", "param"),
    [
        ({"hit_id": "nope", "rating": "bad"}, "hit_id"),
        ({"hit_id": "x", "rating": "meh"}, "rating"),
        ({"rating": "bad"}, "hit_id"),
        ({"hit_id": "x", "rating": "bad", "extra": 1}, "extra"),
    ],
)
def test_bad_feedback_is_refused(
    verified: tuple[TestClient, dict[str, FakeBackend]], body: dict[str, object], param: str
) -> None:
    client, _ = verified
    response = client.post("/v1/cache/feedback", json=body)
    assert response.status_code == (404 if param == "hit_id" and "hit_id" in body else 400)
    error = response.json()["error"]
    assert param in (error.get("param") or "") + error["message"]
