"""Routing through the HTTP API: decisions visible in headers and the ``groupqwen`` body object."""

from __future__ import annotations

import json
import math
from collections.abc import Iterator
from pathlib import Path

import openai
import pytest
from fastapi.testclient import TestClient

from groupqwen.backends.fake import FakeBackend
from groupqwen.testing import fake_services, fake_settings, gateway

SURE, UNSURE = math.log(0.97), math.log(0.1)
QUESTION = [{"role": "user", "content": "Hi there, how are you?"}]


def client(tmp_path: Path, small_logprob: float) -> Iterator[tuple[TestClient, dict[str, FakeBackend]]]:
    backends = {
        "small": FakeBackend("small", tokens=("Fine",), logprob=small_logprob),
        "large": FakeBackend("large", tokens=("Very", " well"), logprob=SURE),
    }
    settings = fake_settings(
        tmp_path,
        list(backends),
        default_model="large",
        router={"tiers": [{"model": "small", "bar": 0.5}, {"model": "large"}], "routes": {}},
    )
    with gateway(fake_services(settings, backends)) as http:
        yield http, backends


@pytest.fixture
def sure(tmp_path: Path) -> Iterator[tuple[TestClient, dict[str, FakeBackend]]]:
    yield from client(tmp_path, SURE)


@pytest.fixture
def unsure(tmp_path: Path) -> Iterator[tuple[TestClient, dict[str, FakeBackend]]]:
    yield from client(tmp_path, UNSURE)


def post(http: TestClient, **body: object) -> tuple[dict[str, str], dict[str, object]]:
    response = http.post("/v1/chat/completions", json={"messages": QUESTION, **body})
    return dict(response.headers), response.json()


def test_confident_small_tier_answers(sure: tuple[TestClient, dict[str, FakeBackend]]) -> None:
    http, backends = sure
    headers, body = post(http, model="auto")
    assert headers["x-groupqwen-model"] == "small" and headers["x-groupqwen-route"] == "auto"
    assert headers["x-groupqwen-escalations"] == "0"
    info = body["groupqwen"]
    assert isinstance(info, dict)
    assert info["model"] == "small" and info["escalations"] == 0 and info["confidence"] == pytest.approx(0.97)
    assert "complexity" in info["reason"] and backends["large"].requests == []


def test_unsure_small_tier_escalates_once(unsure: tuple[TestClient, dict[str, FakeBackend]]) -> None:
    http, _ = unsure
    headers, body = post(http, model="auto")
    assert headers["x-groupqwen-model"] == "large" and headers["x-groupqwen-escalations"] == "1"
    assert body["model"] == "large"
    assert body["choices"][0]["message"]["content"] == "Very well"  # type: ignore[index]
    assert body["groupqwen"]["escalations"] == 1  # type: ignore[index]
    metrics = http.get("/v1/metrics", params={"window": "1h"}).json()  # telemetry saw the escalation
    assert metrics["escalations"] == 1 and metrics["by_model"]["large"]["requests"] == 1


def test_stream_escalates_before_the_first_token(unsure: tuple[TestClient, dict[str, FakeBackend]]) -> None:
    http, _ = unsure
    with http.stream(
        "POST", "/v1/chat/completions", json={"messages": QUESTION, "model": "auto", "stream": True}
    ) as r:
        assert r.headers["x-groupqwen-model"] == "large" and r.headers["x-groupqwen-escalations"] == "1"
        frames = [json.loads(line[6:]) for line in r.iter_lines() if line.startswith("data: {")]
    text = "".join(f["choices"][0]["delta"].get("content", "") for f in frames if f["choices"])
    assert text == "Very well" and all(f["model"] == "large" for f in frames)
    final = next(f for f in frames if f["choices"] and f["choices"][0]["finish_reason"])
    assert final["groupqwen"]["model"] == "large" and final["groupqwen"]["escalations"] == 1


def test_explicit_model_always_wins(unsure: tuple[TestClient, dict[str, FakeBackend]]) -> None:
    http, backends = unsure
    headers, _body = post(http, model="small")
    assert headers["x-groupqwen-model"] == "small" and headers["x-groupqwen-route"] == "explicit"
    assert headers["x-groupqwen-escalations"] == "0" and backends["large"].requests == []


def test_named_routes(sure: tuple[TestClient, dict[str, FakeBackend]]) -> None:
    http, _ = sure
    assert post(http, model="auto:best")[0]["x-groupqwen-model"] == "large"
    assert post(http, model="auto:fast")[0]["x-groupqwen-model"] == "small"


def test_unknown_route_is_a_404_naming_the_model_param(
    sure: tuple[TestClient, dict[str, FakeBackend]],
) -> None:
    http, _ = sure
    sdk = openai.OpenAI(base_url="http://testserver/v1", api_key="x", http_client=http, max_retries=0)
    with pytest.raises(openai.NotFoundError) as err:
        sdk.chat.completions.create(model="auto:nope", messages=QUESTION)  # type: ignore[arg-type]
    assert err.value.status_code == 404
    body = err.value.body
    assert isinstance(body, dict) and body["param"] == "model" and "auto:nope" in body["message"]


def test_a_long_answer_that_turns_unsure_is_aborted_early(tmp_path: Path) -> None:
    """The small tier is sure for 10 tokens, then not: the gateway stops it a few tokens later (not at
    its 200th token, nor at the 48-token buffer) and says so in the headers, the body and the metrics."""
    from prometheus_client.parser import text_string_to_metric_families

    backends = {
        "small": FakeBackend("small", tokens=(" w",) * 200, logprobs=[SURE] * 10 + [math.log(0.01)] * 190),
        "large": FakeBackend("large", tokens=("Very", " well"), logprob=SURE),
    }
    settings = fake_settings(
        tmp_path,
        list(backends),
        default_model="large",
        router={"tiers": [{"model": "small", "bar": 0.5}, {"model": "large"}], "routes": {}},
    )
    with gateway(fake_services(settings, backends)) as http:
        headers, body = post(http, model="auto:cascade", max_tokens=200)
        prometheus = http.get("/metrics").text
    assert headers["x-groupqwen-model"] == "large" and headers["x-groupqwen-abandoned-tokens"] == "12"
    info = body["groupqwen"]
    assert isinstance(info, dict) and info["abandoned_tokens"] == 12
    assert "small aborted at token 12 at confidence" in str(info["reason"])
    assert backends["small"].cancelled == 1
    abandoned = {
        tuple(sorted(s.labels.items())): s.value
        for family in text_string_to_metric_families(prometheus)
        for s in family.samples
        if s.name == "groupqwen_abandoned_tokens_total"
    }
    assert abandoned == {(("model", "large"), ("route", "auto:cascade")): 12.0}


def test_auto_serves_a_prompt_its_tiers_hold_though_the_estimate_says_too_long(tmp_path: Path) -> None:
    """The router's token estimate (characters / 3) is rough: a prompt it puts over every tier's context
    goes to the tier with the largest one, whose model counts exactly. One that fits is answered, as the
    named model answers it; one that does not is OpenAI's 400 ``context_length_exceeded`` (what clients
    trim their history on), not an ``invalid_request`` about the model."""
    backends = {
        "small": FakeBackend("small", tokens=("Fine",), logprob=SURE, n_ctx=64),
        "large": FakeBackend("large", tokens=("Very", " well"), logprob=SURE, n_ctx=96),
    }
    settings = fake_settings(
        tmp_path,
        {"small": {"n_ctx": 64}, "large": {"n_ctx": 96}},
        default_model="large",
        router={"tiers": [{"model": "small", "bar": 0.5}, {"model": "large"}], "routes": {}},
    )
    fits = [{"role": "user", "content": "abcdefghijkl " * 40}]  # 44 tokens to the fake, estimated 182
    too_long = [{"role": "user", "content": "abcdefghijkl " * 100}]  # 104 tokens to the fake
    with gateway(fake_services(settings, backends)) as http:
        sdk = openai.OpenAI(base_url="http://testserver/v1", api_key="x", http_client=http, max_retries=0)
        answer = sdk.chat.completions.with_raw_response.create(model="auto", messages=fits)  # type: ignore[arg-type]
        assert answer.headers["x-groupqwen-model"] == "large"
        assert answer.parse().choices[0].message.content == "Very well"
        for stream in (False, True):
            with pytest.raises(openai.BadRequestError) as err:
                sdk.chat.completions.create(model="auto", messages=too_long, stream=stream)  # type: ignore[arg-type]
            assert err.value.code == "context_length_exceeded" and err.value.param == "messages"
            assert "96" in err.value.message
        with pytest.raises(openai.BadRequestError) as err:  # max_tokens alone is over every context
            sdk.chat.completions.create(model="auto", messages=QUESTION, max_tokens=500)  # type: ignore[arg-type]
        assert err.value.code == "context_length_exceeded" and err.value.param == "max_tokens"
        assert "500" in err.value.message and "96" in err.value.message


def test_the_routes_served_here_are_listed_and_retrieved_as_models(tmp_path: Path) -> None:
    """Every route a request may name is a model entry (an alias with the models that may answer it), so
    a client that checks a model with ``models.retrieve`` before using it can use ``auto:fast``."""
    backends = {"small": FakeBackend("small"), "large": FakeBackend("large")}
    settings = fake_settings(
        tmp_path,
        list(backends),
        default_model="large",
        router={"tiers": [{"model": "small"}, {"model": "large"}], "routes": {"auto:tiny": "small"}},
    )
    with gateway(fake_services(settings, backends)) as http:
        sdk = openai.OpenAI(base_url="http://testserver/v1", api_key="x", http_client=http, max_retries=0)
        listed = {m.id: (m.model_extra or {})["groupqwen"] for m in sdk.models.list().data}
        ladder = ["small", "large"]
        assert listed["auto"] == {"status": "alias", "models": ladder, "resolves_to": "large"}
        for name in ("auto:cascade", "auto:fast", "auto:best"):
            assert listed[name] == {"status": "alias", "models": ladder}
        assert listed["auto:tiny"] == {"status": "alias", "models": ["small"], "resolves_to": "small"}
        assert [m for m in listed if m.startswith("auto")] == [
            "auto",
            "auto:cascade",
            "auto:fast",
            "auto:best",
            "auto:tiny",
        ]
        fast = sdk.models.retrieve("auto:fast")
        assert fast.id == "auto:fast" and (fast.model_extra or {})["groupqwen"]["models"] == ladder
        with pytest.raises(openai.NotFoundError):
            sdk.models.retrieve("auto:nope")


def test_a_route_none_of_whose_models_is_served_here_is_not_listed(tmp_path: Path) -> None:
    """The bundled models are known but not here (their GGUFs are not in this models folder): the ladder's
    routes and a route to one of them are left out, and ``auto`` is the default model."""
    backends = {"small": FakeBackend("small")}
    router = {"tiers": [{"model": "qwen2.5-coder-0.5b"}], "routes": {"auto:tiny": "smollm2-135m"}}
    settings = fake_settings(tmp_path, list(backends), router=router)
    with gateway(fake_services(settings, backends)) as http:
        listed = {m["id"]: m["groupqwen"] for m in http.get("/v1/models").json()["data"]}
        assert listed == {
            "small": listed["small"],
            "auto": {"status": "alias", "models": ["small"], "resolves_to": "small"},
        }
        assert http.get("/v1/models/auto:fast").status_code == 404
