"""The cache inside the gateway, in-process with the fake backend: headers, scoping, streams, admin, Redis
outages and bad input."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from servers import ValkeyServer

from groupqwen import testing
from groupqwen.api.app import create_app
from groupqwen.backends.fake import FakeBackend
from groupqwen.cache import SemanticCache, VectorStore
from groupqwen.cache.embedders import HashingEmbedder, MiniLMEmbedder, Vectors
from groupqwen.clock import SYSTEM_CLOCK, Clock
from groupqwen.testing import FakeClock, fake_services, fake_settings

from .helpers import embedded_store, policy, redis_store

REPLY = "Paris is the capital of France."


def gateway_app(
    tmp_path: Path, cache: SemanticCache, reply: str = REPLY
) -> tuple[FastAPI, dict[str, FakeBackend]]:
    """The gateway over ``cache``, with two fake models ("fake", "other") answering ``reply``."""
    backends = {
        m: FakeBackend(model_id=m, tokens=[f"{w} " for w in reply.split()]) for m in ("fake", "other")
    }
    services = fake_services(
        fake_settings(tmp_path, list(backends), data_dir=tmp_path), backends, cache=cache
    )
    return create_app(services.settings, services), backends


@contextmanager
def gateway(
    tmp_path: Path, store: VectorStore, embedder: MiniLMEmbedder, clock: Clock = SYSTEM_CLOCK
) -> Iterator[tuple[TestClient, dict[str, FakeBackend]]]:
    """The gateway over a cache on ``store``; give the cache the store's ``clock``."""
    app, backends = gateway_app(tmp_path, SemanticCache(store, embedder, policy(), clock=clock))
    with TestClient(app) as client:
        yield client, backends


def chat(
    client: TestClient, text: str, *, key: str = "k1", headers: dict[str, str] | None = None, **body: Any
) -> Any:
    payload = {"model": "fake", "messages": [{"role": "user", "content": text}], "temperature": 0, **body}
    return client.post(
        "/v1/chat/completions", json=payload, headers={"authorization": f"Bearer {key}", **(headers or {})}
    )


def settle(backend: FakeBackend) -> None:
    """Wait for generations the gateway abandoned (closed in the background) to end."""
    deadline = time.monotonic() + 5
    while backend.active and time.monotonic() < deadline:
        time.sleep(0.01)
    assert backend.active == 0


@pytest.fixture
def embedded(tmp_path: Path, minilm: MiniLMEmbedder) -> Iterator[tuple[TestClient, dict[str, FakeBackend]]]:
    with gateway(tmp_path, embedded_store(minilm.dim), minilm) as pair:
        yield pair


def test_miss_then_exact_and_semantic_hits(embedded: tuple[TestClient, dict[str, FakeBackend]]) -> None:
    client, backends = embedded
    first = chat(client, "What is the capital of France?")
    assert first.status_code == 200 and first.headers["x-groupqwen-cache"] == "miss"
    assert first.headers["x-groupqwen-route"] == "explicit"
    again = chat(client, "what is the capital of france?")
    assert again.headers["x-groupqwen-cache"] == "hit"
    assert again.headers["x-groupqwen-cache-similarity"] == "1.0000"
    assert again.headers["x-groupqwen-route"] == "cache" and again.headers["x-groupqwen-model"] == "fake"
    assert (
        again.json()["choices"][0]["message"]["content"] == first.json()["choices"][0]["message"]["content"]
    )
    assert len(backends["fake"].requests) == 1  # the model was cold: the semantic layer ran before it
    near = chat(client, "Which city is the capital of France?")
    assert near.headers["x-groupqwen-cache"] == "hit"
    assert policy().threshold <= float(near.headers["x-groupqwen-cache-similarity"]) < 1.0
    assert near.json()["choices"][0]["message"]["content"] == first.json()["choices"][0]["message"]["content"]
    # the model was warm: generation started beside the semantic layer, and the hit cancelled it
    settle(backends["fake"])
    assert len(backends["fake"].requests) == 2 and backends["fake"].cancelled == 1
    refused = chat(client, "What is the capital of Germany?")
    assert refused.headers["x-groupqwen-cache"] == "miss"
    assert refused.json()["choices"][0]["message"]["content"] == REPLY + " "
    settle(backends["fake"])
    assert len(backends["fake"].requests) == 3 and backends["fake"].cancelled == 1
    metrics = client.get("/v1/metrics", params={"window": "1h"}).json()  # telemetry saw each result
    served = sum(r.json()["usage"]["completion_tokens"] for r in (again, near))
    hit_latency = metrics["cache"].pop("hit_latency_seconds")
    assert metrics["cache"] == {"hit": 2, "miss": 2, "bypass": 0, "hit_rate": 0.5, "served_tokens": served}
    assert served > 2 and hit_latency["p50"] is not None
    assert metrics["by_route"]["cache"]["requests"] == 2
    # hits generated nothing: they have no decode speed (they read as hundreds of thousands of tokens/s)
    assert metrics["by_route"]["cache"]["tokens_per_second_mean"] is None
    prometheus = client.get("/metrics").text
    assert f'groupqwen_cache_served_tokens_total{{model="fake"}} {float(served)}' in prometheus
    assert 'groupqwen_cache_hit_duration_seconds_count{model="fake",route="cache"} 2.0' in prometheus


def test_never_a_hit_across_tenants_models_system_prompts_or_sampling(
    embedded: tuple[TestClient, dict[str, FakeBackend]],
) -> None:
    client, _ = embedded
    assert chat(client, "Tell me about the Moon.").headers["x-groupqwen-cache"] == "miss"
    variants: list[dict[str, Any]] = [
        {"key": "k2"},
        {"user": "alice"},
        {"model": "other"},
        {"temperature": 0.3},
        {"max_tokens": 50},
        {"top_p": 0.5},
        {"stop": ["\n"]},
        {"response_format": {"type": "json_object"}},
    ]
    for variant in variants:
        assert chat(client, "Tell me about the Moon.", **variant).headers["x-groupqwen-cache"] == "miss", (
            variant
        )
    system = {"role": "system", "content": "Answer like a pirate."}
    payload = {
        "model": "fake",
        "temperature": 0,
        "messages": [system, {"role": "user", "content": "Tell me about the Moon."}],
    }
    response = client.post("/v1/chat/completions", json=payload, headers={"authorization": "Bearer k1"})
    assert response.headers["x-groupqwen-cache"] == "miss"
    assert chat(client, "Tell me about the Moon.").headers["x-groupqwen-cache"] == "hit"


def test_bypass_for_hot_or_seeded_requests(embedded: tuple[TestClient, dict[str, FakeBackend]]) -> None:
    client, _ = embedded
    for body in ({"temperature": 1.5}, {"seed": 3}, {"logprobs": True}):
        response = chat(client, "Name a prime number.", **body)
        assert response.status_code == 200 and response.headers["x-groupqwen-cache"] == "bypass"
        assert "x-groupqwen-cache-similarity" not in response.headers


def sse(response: Any) -> list[dict[str, Any]]:
    frames = [line.removeprefix("data: ") for line in response.text.splitlines() if line.startswith("data: ")]
    assert frames[-1] == "[DONE]"
    return [json.loads(f) for f in frames[:-1]]


def test_a_hit_is_served_to_a_stream_and_a_stream_is_stored(
    embedded: tuple[TestClient, dict[str, FakeBackend]],
) -> None:
    client, backends = embedded
    streamed = chat(client, "How far away is the Sun?", stream=True, stream_options={"include_usage": True})
    assert streamed.headers["x-groupqwen-cache"] == "miss"
    text = "".join(c["choices"][0]["delta"].get("content", "") for c in sse(streamed) if c["choices"])
    replay = chat(client, "How far away is the Sun?", stream=True, stream_options={"include_usage": True})
    assert replay.headers["x-groupqwen-cache"] == "hit"
    assert replay.headers["content-type"].startswith("text/event-stream")
    chunks = sse(replay)
    assert "".join(c["choices"][0]["delta"].get("content", "") for c in chunks if c["choices"]) == text
    assert any(c["choices"] and c["choices"][0]["finish_reason"] == "stop" for c in chunks)
    assert chunks[-1]["usage"]["completion_tokens"] > 0
    plain = chat(client, "How far away is the Sun?")  # and to a plain request
    assert plain.headers["x-groupqwen-cache"] == "hit"
    assert plain.json()["choices"][0]["message"]["content"] == text
    assert len(backends["fake"].requests) == 1


class Watching:
    """MiniLM that, once ``armed``, waits (up to ``patience_s``) inside the embedding until the backend has
    been asked for one more generation than before the request: it only sees that when the gateway
    generates while the semantic layer is still looking. The wait ends as soon as it does, so a long
    patience costs nothing when the overlap works, and a busy machine cannot make it miss the generation
    (the semantic layer's own timeout, 10 s here, bounds the wait when it does not)."""

    def __init__(self, inner: MiniLMEmbedder, backend: FakeBackend, patience_s: float = 60.0) -> None:
        self.inner, self.backend, self.patience_s = inner, backend, patience_s
        self.name, self.dim = inner.name, inner.dim
        self.armed = False
        self.before = 0
        self.saw_generation: list[bool] = []

    def ask(self, client: TestClient, text: str, **body: Any) -> Any:
        self.armed, self.before = True, len(self.backend.requests)
        return chat(client, text, **body)

    def embed(self, texts: Sequence[str]) -> Vectors:
        if self.armed:
            deadline = time.monotonic() + self.patience_s
            while len(self.backend.requests) == self.before and time.monotonic() < deadline:
                time.sleep(0.005)
            self.saw_generation.append(len(self.backend.requests) > self.before)
        return self.inner.embed(texts)

    def count_tokens(self, texts: Sequence[str]) -> int | None:
        return self.inner.count_tokens(texts)

    def close(self) -> None:
        self.inner.close()


def test_a_warm_model_generates_while_the_semantic_layer_looks(
    tmp_path: Path, minilm: MiniLMEmbedder
) -> None:
    backend = FakeBackend(model_id="fake", tokens=[f"{w} " for w in REPLY.split()])
    watching = Watching(minilm, backend)
    cache = SemanticCache(embedded_store(minilm.dim), watching, policy(timeout_s=10))
    settings = fake_settings(tmp_path, data_dir=tmp_path)
    with testing.gateway(fake_services(settings, backend, cache=cache)) as client:
        assert chat(client, "What is the capital of France?").headers["x-groupqwen-cache"] == "miss"  # loads
        client.get("/v1/cache/stats")  # its write (which embeds: the scope was empty) lands before arming
        plain = watching.ask(client, "How tall is Mount Everest?")
        streamed = watching.ask(client, "How deep is the Mariana Trench?", stream=True)
        near = watching.ask(client, "Which city is the capital of France?", stream=True)
    assert plain.headers["x-groupqwen-cache"] == "miss"
    assert plain.json()["choices"][0]["message"]["content"] == REPLY + " "
    assert streamed.headers["x-groupqwen-cache"] == "miss"
    assert "".join(c["choices"][0]["delta"].get("content", "") for c in sse(streamed)) == REPLY + " "
    assert near.headers["x-groupqwen-cache"] == "hit" and near.headers["x-groupqwen-route"] == "cache"
    assert "".join(c["choices"][0]["delta"].get("content", "") for c in sse(near)) == REPLY + " "
    assert watching.saw_generation == [True, True, True]
    settle(backend)
    assert backend.cancelled == 1  # the hit's speculative generation


def test_with_overlap_off_the_semantic_layer_answers_before_any_generation(
    tmp_path: Path, minilm: MiniLMEmbedder
) -> None:
    """Overlap off (``cache.overlap: never``, or ``auto`` for a model that fills the CPU): a loaded model is
    not asked to generate until the semantic layer has answered, so a semantic hit never starts (and
    cancels) a generation."""
    backend = FakeBackend(model_id="fake", tokens=[f"{w} " for w in REPLY.split()])
    watching = Watching(minilm, backend, patience_s=0.3)
    cache = SemanticCache(embedded_store(minilm.dim), watching, policy(timeout_s=10))
    settings = fake_settings(tmp_path, data_dir=tmp_path, cache={"overlap": "never"})
    with testing.gateway(fake_services(settings, backend, cache=cache)) as client:
        assert chat(client, "What is the capital of France?").headers["x-groupqwen-cache"] == "miss"  # loads
        client.get("/v1/cache/stats")  # its write (which embeds: the scope was empty) lands before arming
        plain = watching.ask(client, "How tall is Mount Everest?")
        near = watching.ask(client, "Which city is the capital of France?", stream=True)
    assert plain.headers["x-groupqwen-cache"] == "miss"
    assert plain.json()["choices"][0]["message"]["content"] == REPLY + " "
    assert near.headers["x-groupqwen-cache"] == "hit"
    assert watching.saw_generation == [False, False]
    assert len(backend.requests) == 2 and backend.cancelled == 0  # the two misses only


def test_ttl_header_and_cache_control(embedded: tuple[TestClient, dict[str, FakeBackend]]) -> None:
    client, _ = embedded
    assert (
        chat(client, "What is a quasar?", headers={"x-groupqwen-cache-ttl": "0"}).headers["x-groupqwen-cache"]
        == "miss"
    )
    assert chat(client, "What is a quasar?").headers["x-groupqwen-cache"] == "miss"  # the first was not kept
    assert chat(client, "What is a quasar?").headers["x-groupqwen-cache"] == "hit"
    assert (
        chat(client, "What is a quasar?", headers={"cache-control": "no-cache"}).headers["x-groupqwen-cache"]
        == "bypass"
    )
    assert (
        chat(client, "What is a pulsar?", headers={"x-groupqwen-cache-ttl": "3600"}).headers[
            "x-groupqwen-cache"
        ]
        == "miss"
    )
    assert chat(client, "What is a magnetar?", headers={"cache-control": "no-store"}).status_code == 200
    assert chat(client, "What is a magnetar?").headers["x-groupqwen-cache"] == "miss"


@pytest.mark.parametrize("ttl", ["soon", "-5", "nan", "inf", ""])
def test_a_bad_ttl_header_is_a_400(embedded: tuple[TestClient, dict[str, FakeBackend]], ttl: str) -> None:
    client, backends = embedded
    response = chat(client, "hello there", headers={"x-groupqwen-cache-ttl": ttl})
    assert response.status_code == 400
    error = response.json()["error"]
    assert error["param"] == "x-groupqwen-cache-ttl" and "seconds" in error["message"]
    assert backends["fake"].requests == []


def test_admin_stats_invalidate_and_clear(embedded: tuple[TestClient, dict[str, FakeBackend]]) -> None:
    client, _ = embedded
    chat(client, "What is the climate like on Mars?")
    chat(client, "What is the climate like on Mars?")
    chat(client, "Who discovered penicillin?", model="other")
    stats = client.get("/v1/cache/stats").json()
    assert stats["backend"] == "embedded" and stats["status"] == "ok"
    assert (stats["entries"], stats["hits"], stats["misses"]) == (2, 1, 2)
    assert stats["hit_rate"] == pytest.approx(1 / 3, abs=1e-3) and stats["bytes"] > 0
    removed = client.post("/v1/cache/invalidate", json={"pattern": "*mars*"})
    assert removed.status_code == 200 and removed.json()["removed"] == 1
    assert (
        client.post("/v1/cache/invalidate", json={"model": "other", "older_than_s": 0}).json()["removed"] == 1
    )
    chat(client, "Who discovered penicillin?", model="other")
    cleared = client.delete("/v1/cache")
    assert cleared.status_code == 200 and cleared.json()["removed"] == 1
    assert client.get("/v1/cache/stats").json()["entries"] == 0


@pytest.mark.parametrize(
    ("body", "param"),
    [
        (b"{}", "body"),
        (b"not json", None),
        (b'{"model": 5}', "model"),
        (b'{"older_than_s": -1}', "older_than_s"),
        (b'{"pattern": "*x*", "surprise": true}', "surprise"),
        (b"[]", None),
    ],
)
def test_a_bad_invalidation_is_a_400(
    embedded: tuple[TestClient, dict[str, FakeBackend]], body: bytes, param: str | None
) -> None:
    client, _ = embedded
    response = client.post("/v1/cache/invalidate", content=body, headers={"content-type": "application/json"})
    assert response.status_code == 400, response.text
    error = response.json()["error"]
    assert error["type"] == "invalid_request_error"
    if param is not None:
        assert error["param"] == param


def test_redis_stopped_requests_still_succeed(
    tmp_path: Path, redis_url: str, valkey: ValkeyServer, minilm: MiniLMEmbedder
) -> None:
    clock = FakeClock(wall=time.time())  # the store's retry window moves only when told
    store = redis_store(redis_url, minilm.dim, timeout_s=5.0, retry_after_s=1.0, clock=clock)
    cache = SemanticCache(store, minilm, policy(), clock=clock, bars=store.bars())  # as build.py wires it
    app, backends = gateway_app(tmp_path, cache)
    with TestClient(app) as client:
        assert chat(client, "What is the speed of sound?").headers["x-groupqwen-cache"] == "miss"
        assert chat(client, "What is the speed of sound?").headers["x-groupqwen-cache"] == "hit"
        similar = chat(client, "What's the speed of sound?")  # a semantic hit: one that feedback can name
        hit_id = similar.headers["x-groupqwen-cache-hit-id"]
        settle(backends["fake"])
        valkey.stop()
        try:
            feedback = client.post("/v1/cache/feedback", json={"hit_id": hit_id, "rating": "bad"})
            assert feedback.status_code == 503, feedback.text
            assert feedback.json()["error"]["code"] == "cache_unavailable"
            for stream in (False, True):
                response = chat(client, "What is the speed of sound?", stream=stream)
                assert response.status_code == 200 and response.headers["x-groupqwen-cache"] == "bypass"
            health = client.get("/v1/health").json()
            assert health["checks"]["cache"]["status"] == "degraded"
            assert client.get("/v1/cache/stats").status_code == 503
        finally:
            valkey.start()
        assert client.get("/v1/health").json()["checks"]["cache"]["status"] == "degraded"  # still waiting
        clock.advance(1.0)  # retry_after_s has passed: the store tries Redis again
        assert client.get("/v1/health").json()["checks"]["cache"]["status"] == "ok"
        asked = len(backends["fake"].requests)
        assert chat(client, "What is the speed of sound?").headers["x-groupqwen-cache"] == "miss"
        assert chat(client, "What is the speed of sound?").headers["x-groupqwen-cache"] == "hit"
        assert len(backends["fake"].requests) == asked + 1


def test_settings_build_the_embedded_cache(tmp_path: Path) -> None:
    """``cache:`` settings → the cache ``build_services`` wires in (here with in-memory telemetry)."""

    def app_for(backend: str) -> Any:
        settings = fake_settings(tmp_path, data_dir=tmp_path, cache={"backend": backend, "threshold": 0.9})
        services = fake_services(settings, FakeBackend(model_id="fake", tokens=["Four."]))
        return create_app(settings, services)

    with TestClient(app_for("embedded")) as client:
        assert chat(client, "What is two plus two?").headers["x-groupqwen-cache"] == "miss"
        assert chat(client, "What is two plus two?").headers["x-groupqwen-cache"] == "hit"
    assert (tmp_path / "cache.sqlite").is_file()  # data_dir/cache.sqlite by default
    with TestClient(app_for("embedded")) as client:  # a restarted gateway keeps its cache
        assert chat(client, "What is two plus two?").headers["x-groupqwen-cache"] == "hit"
    with TestClient(app_for("off")) as client:
        response = chat(client, "What is two plus two?")
        assert response.status_code == 200 and "x-groupqwen-cache" not in response.headers
        assert client.get("/v1/cache/stats").json() == {"object": "cache.stats", "backend": "off"}


def test_the_services_clock_times_the_cache(tmp_path: Path) -> None:
    """``build_services(clock=…)`` builds the cache on that clock: an answer expires when it moves."""
    clock = FakeClock()
    settings = fake_settings(tmp_path, data_dir=tmp_path, cache={"backend": "embedded"})
    services = fake_services(settings, FakeBackend(model_id="fake", tokens=["Four."]), clock=clock)
    ttl = {"x-groupqwen-cache-ttl": "60"}
    with TestClient(create_app(settings, services)) as client:
        assert chat(client, "What is two plus two?", headers=ttl).headers["x-groupqwen-cache"] == "miss"
        clock.advance(59)
        assert chat(client, "What is two plus two?").headers["x-groupqwen-cache"] == "hit"
        clock.advance(2)
        assert chat(client, "What is two plus two?").headers["x-groupqwen-cache"] == "miss"
        assert client.get("/v1/cache/stats").json()["expired"] == 1


def test_the_embedding_is_paid_once_per_miss_and_never_when_no_hit_can_be(tmp_path: Path) -> None:
    """Embeddings counted at the embedder, through the gateway: a request the policy refuses (hotter
    than ``max_temperature``, asking for logprobs, seeded) or an exact hit embeds nothing; a miss embeds
    once: in an empty scope its write does, in a scope with entries its lookup does and the write reuses
    the vector; a semantic hit once (its lookup)."""
    embedder = HashingEmbedder()
    app, _ = gateway_app(tmp_path, SemanticCache(embedded_store(embedder.dim), embedder, policy()))
    with TestClient(app) as client:

        def embedded_after(text: str, **body: Any) -> tuple[str, int]:
            status = chat(client, text, **body).headers["x-groupqwen-cache"]
            client.get("/v1/cache/stats")  # waits for the writes in flight
            return status, embedder.calls

        assert embedded_after("What is the capital of France?") == ("miss", 1)  # the write's
        assert embedded_after("What is the capital of France?") == ("hit", 1)  # exact
        assert embedded_after("How tall is Mount Everest?") == ("miss", 2)  # the lookup's, reused
        for body in ({"temperature": 1.5}, {"logprobs": True}, {"seed": 3}):
            assert embedded_after("How far away is the Moon?", **body) == ("bypass", 2), body
        assert embedded_after("How tall is Mount Everest now?") == ("hit", 3)  # semantic
