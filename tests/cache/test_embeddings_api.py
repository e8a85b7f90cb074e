"""``POST /v1/embeddings``: the cache's embedder served to OpenAI clients, bad input, and one gateway
embedding through another (``cache.embedder.kind: openai``) over real HTTP, sharing a Redis cache with a
gateway that embeds in-process."""

from __future__ import annotations

import base64
import time
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager
from pathlib import Path
from typing import Any

import numpy as np
import openai
import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from servers import free_port

from groupqwen.api.app import create_app
from groupqwen.api.services import Services, build_services
from groupqwen.cache.embedders import QUANTISED_NAME, MiniLMEmbedder, OpenAIEmbedder
from groupqwen.cache.semantic import SemanticCache
from groupqwen.config import Settings, load_settings
from groupqwen.errors import ConfigError

from .helpers import embedded_store, policy, redis_store
from .test_gateway import REPLY, chat, gateway_app

LiveServer = Callable[[FastAPI], AbstractContextManager[str]]
NO_STORE = {"x-groupqwen-cache-ttl": "0"}  # read the cache, keep no answer


@pytest.fixture
def client(tmp_path: Path, minilm: MiniLMEmbedder) -> Iterator[TestClient]:
    app, _ = gateway_app(tmp_path, SemanticCache(embedded_store(minilm.dim), minilm, policy()))
    with TestClient(app) as test_client:
        yield test_client


def embed(client: TestClient, **body: Any) -> Any:
    return client.post("/v1/embeddings", json={"model": QUANTISED_NAME, **body})


def test_vectors_are_the_cache_embedders(client: TestClient, minilm: MiniLMEmbedder) -> None:
    texts = ["How do I boil an egg?", "What is the capital of France?"]
    response = embed(client, input=texts)
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["object"] == "list" and body["model"] == QUANTISED_NAME
    assert [item["index"] for item in body["data"]] == [0, 1]
    got = np.asarray([item["embedding"] for item in body["data"]], dtype=np.float32)
    assert np.array_equal(got, minilm.embed(texts))  # float32 survives JSON exactly
    tokens = minilm.count_tokens(texts)
    assert tokens > 10 and body["usage"] == {"prompt_tokens": tokens, "total_tokens": tokens}
    single = embed(client, input=texts[0]).json()["data"]
    assert len(single) == 1 and single[0]["embedding"] == body["data"][0]["embedding"]
    assert embed(client, input=texts[0], dimensions=384).status_code == 200


def test_base64_is_little_endian_float32(client: TestClient, minilm: MiniLMEmbedder) -> None:
    response = embed(client, input=["one", "two"], encoding_format="base64")
    assert response.status_code == 200, response.text
    rows = [np.frombuffer(base64.b64decode(i["embedding"]), dtype="<f4") for i in response.json()["data"]]
    assert np.array_equal(np.stack(rows), minilm.embed(["one", "two"]))


def test_the_openai_sdk(client: TestClient, minilm: MiniLMEmbedder) -> None:
    sdk = openai.OpenAI(base_url="http://testserver/v1", api_key="x", http_client=client, max_retries=0)
    created = sdk.embeddings.create(model=QUANTISED_NAME, input=["a cat", "a dog"])  # asks for base64
    got = np.asarray([item.embedding for item in created.data], dtype=np.float32)
    assert np.array_equal(got, minilm.embed(["a cat", "a dog"]))
    assert created.usage.prompt_tokens == minilm.count_tokens(["a cat", "a dog"])
    with pytest.raises(openai.NotFoundError, match=QUANTISED_NAME):
        sdk.embeddings.create(model="text-embedding-3-small", input="x")


@pytest.mark.parametrize(
    ("body", "status", "param", "says"),
    [
        (
            {"model": "text-embedding-3-small", "input": "x"},
            404,
            "model",
            "embeds with 'all-minilm-l6-v2-q8'",
        ),
        ({"input": "x"}, 400, "model", "Field required"),
        ({"model": QUANTISED_NAME, "input": ""}, 400, "input", "'input' is empty"),
        ({"model": QUANTISED_NAME, "input": []}, 400, "input", "must not be empty"),
        ({"model": QUANTISED_NAME, "input": ["ok", ""]}, 400, "input[1]", "'input[1]' is empty"),
        ({"model": QUANTISED_NAME, "input": [[101, 102]]}, 400, "input[0]", "token arrays are not accepted"),
        ({"model": QUANTISED_NAME, "input": [1, 2]}, 400, "input[0]", "send the text"),
        ({"model": QUANTISED_NAME, "input": ["x"] * 2049}, 400, "input", "at most 2048"),
        ({"model": QUANTISED_NAME, "input": "x", "dimensions": 256}, 400, "dimensions", "384 dimensions"),
        ({"model": QUANTISED_NAME, "input": "x", "dimensions": 0}, 400, "dimensions", "greater than"),
        ({"model": QUANTISED_NAME, "input": "x", "encoding_format": "int8"}, 400, "encoding_format", "float"),
        ({"model": QUANTISED_NAME, "input": 7}, 400, "input", "valid"),
    ],
)
def test_bad_input(client: TestClient, body: dict[str, Any], status: int, param: str, says: str) -> None:
    response = client.post("/v1/embeddings", json=body)
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert error["param"] == param and says in error["message"], error


def test_a_body_that_is_not_json(client: TestClient) -> None:
    response = client.post(
        "/v1/embeddings", content=b"{input: x", headers={"content-type": "application/json"}
    )
    assert response.status_code == 400
    assert "not valid JSON" in response.json()["error"]["message"]


def test_served_with_the_cache_off(tmp_path: Path) -> None:
    """No cache: the embedder is built on the first request, once."""
    settings = load_settings(
        models={"fake": {"backend": "fake"}},
        default_model="fake",
        data_dir=tmp_path,
        cache={"backend": "off"},
    )
    with TestClient(create_app(settings)) as test_client:
        services: Services = test_client.app.state.services  # type: ignore[attr-defined]
        assert services.cache is None and services.embedder is None  # MiniLM: loaded when first asked
        first = embed(test_client, input="hello")
        assert first.status_code == 200, first.text
        built = services.embedder
        assert embed(test_client, input="world").status_code == 200
        assert services.embedder is built and isinstance(built, MiniLMEmbedder)


def test_a_remote_embedder_is_probed_at_start_with_the_cache_off(
    tmp_path: Path, minilm: MiniLMEmbedder, live_server: LiveServer
) -> None:
    """Cache or not, a configured embedding server is asked for its width at start: down, the gateway
    does not start; up, /v1/embeddings relays it."""

    def settings(url: str) -> Settings:
        embedder = {"kind": "openai", "url": url, "model": QUANTISED_NAME}
        return load_settings(
            models={"fake": {"backend": "fake"}},
            default_model="fake",
            data_dir=tmp_path,
            cache={"backend": "off", "embedder": embedder},
        )

    with pytest.raises(ConfigError, match=r"cache\.embedder: .*ConnectError"):
        build_services(settings(f"http://127.0.0.1:{free_port()}/v1"))
    a, _ = gateway_app(tmp_path / "a", SemanticCache(embedded_store(minilm.dim), minilm, policy()))
    with live_server(a) as url:
        services = build_services(settings(url + "/v1"))
        assert services.cache is None and isinstance(services.embedder, OpenAIEmbedder)
        with TestClient(create_app(services.settings, services)) as b:
            relayed = embed(b, input="hello")
        assert relayed.status_code == 200, relayed.text
        assert np.array_equal(
            np.asarray([relayed.json()["data"][0]["embedding"]], np.float32), minilm.embed(["hello"])
        )


def test_a_gateway_embeds_through_another(
    tmp_path: Path, minilm: MiniLMEmbedder, redis_url: str, live_server: LiveServer
) -> None:
    """Gateway B asks gateway A's /v1/embeddings (over a real socket) for the same model that gateway C
    runs in-process: the vectors are the same, so B and C share one Redis cache, semantic hits included."""
    a, _ = gateway_app(tmp_path / "a", SemanticCache(embedded_store(minilm.dim), minilm, policy()))
    with live_server(a) as url:
        remote = OpenAIEmbedder(url + "/v1", QUANTISED_NAME, timeout_s=policy().timeout_s)
        assert remote.name == minilm.name and remote.dim == minilm.dim  # probed
        texts = ["What is the capital of France?", "Which city is the capital of France?"]
        assert np.array_equal(remote.embed(texts), minilm.embed(texts))

        def redis_cache(embedder: MiniLMEmbedder | OpenAIEmbedder) -> SemanticCache:
            return SemanticCache(redis_store(redis_url, embedder.dim), embedder, policy())

        b_app, _ = gateway_app(tmp_path / "b", redis_cache(remote))
        c_app, c_backends = gateway_app(tmp_path / "c", redis_cache(minilm))
        with TestClient(c_app) as c, TestClient(b_app) as b:
            assert chat(c, texts[0]).headers["x-groupqwen-cache"] == "miss"
            c.get("/v1/cache/stats")  # drains C's background write
            deadline = time.monotonic() + 60  # B's local index of Redis loads in the background
            while (hit := chat(b, texts[1], headers=NO_STORE)).headers["x-groupqwen-cache"] != "hit":
                assert time.monotonic() < deadline, hit.headers
                time.sleep(0.02)
            assert float(hit.headers["x-groupqwen-cache-similarity"]) < 1.0  # semantic, through A
            assert hit.json()["choices"][0]["message"]["content"].strip() == REPLY  # C's answer
            assert len(c_backends["fake"].requests) == 1


def test_settings_embed_through_a_server(
    tmp_path: Path, live_server: LiveServer, minilm: MiniLMEmbedder
) -> None:
    """``cache.embedder.kind: openai`` from settings: the gateway probes the width at start, then its
    semantic layer embeds through the server."""
    a, _ = gateway_app(tmp_path / "a", SemanticCache(embedded_store(minilm.dim), minilm, policy()))
    with live_server(a) as url:
        embedder = {"kind": "openai", "url": url + "/v1", "model": QUANTISED_NAME}
        settings = load_settings(
            models={"fake": {"backend": "fake", "fake_reply": "Paris."}},
            default_model="fake",
            data_dir=tmp_path,
            cache={"embedder": embedder},
        )
        with TestClient(create_app(settings)) as b:
            services: Services = b.app.state.services  # type: ignore[attr-defined]
            assert services.cache is not None
            remote = services.cache.embedder
            assert isinstance(remote, OpenAIEmbedder) and remote.dim == minilm.dim
            assert remote.url == url + "/v1/embeddings"
            assert chat(b, "How do I center a div in CSS?").headers["x-groupqwen-cache"] == "miss"
            b.get("/v1/cache/stats")  # drains the background write
            hit = chat(b, "How can I center a div with CSS?")
            assert (
                hit.headers["x-groupqwen-cache"] == "hit" and hit.json()["choices"][0]["message"]["content"]
            )
            # the server embeds with the bundled model under its name: the verifier fits and decides
            assert services.cache.verifier is not None
            assert hit.headers["x-groupqwen-cache-stage"] == "verifier"
