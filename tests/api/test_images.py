"""Images end to end with scripted backends: OpenAI ``image_url`` parts parsed and carried in order, a
request with images routed to ``auto:vision``, a 400 that says what to configure wherever an image would
reach a model that cannot take it, and the in-process llama.cpp backend refusing images outright."""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from groupqwen import testing
from groupqwen.backends.fake import FakeBackend
from groupqwen.backends.llamacpp import LlamaCppBackend
from groupqwen.catalog import builtin_catalog
from groupqwen.config import load_settings
from groupqwen.errors import ConfigError, InvalidRequest
from groupqwen.messages import GenerationRequest, ImagePart, Message, Sampling
from groupqwen.pool.bundled import ensure_bundled
from groupqwen.testing import fake_services, fake_settings

URL = "/v1/chat/completions"
PNG = (  # a 1×1 PNG
    "data:image/png;base64,"
    "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAQAAAC1HAwCAAAAC0lEQVR42mNkYAAAAAYAAjCB0C8AAAAASUVORK5CYII="
)
PHOTO = "https://images.example/cat.jpg?size=large"
QUESTION = [
    {
        "role": "user",
        "content": [
            {"type": "text", "text": "Compare"},
            {"type": "image_url", "image_url": {"url": PNG}},
            {"type": "text", "text": "with"},
            {"type": "image_url", "image_url": {"url": PHOTO, "detail": "low"}},
        ],
    }
]
Gateway = tuple[TestClient, dict[str, FakeBackend]]


def gateway(tmp_path: Path, tiers: list[str], routes: dict[str, str]) -> Iterator[Gateway]:
    """``text`` (no images) is the default model; ``seeing`` (``vision: true``) takes images."""
    backends = {
        "text": FakeBackend("text", tokens=("Words",)),
        "seeing": FakeBackend("seeing", tokens=("A cat",)),
    }
    settings = fake_settings(
        tmp_path,
        {"text": {}, "seeing": {"vision": True}},
        router={"tiers": [{"model": m} for m in tiers], "routes": routes},
    )
    with testing.gateway(fake_services(settings, backends)) as http:
        yield http, backends


@pytest.fixture
def vision_route(tmp_path: Path) -> Iterator[Gateway]:
    yield from gateway(tmp_path, ["text"], {"auto:vision": "seeing"})


@pytest.fixture
def no_vision_route(tmp_path: Path) -> Iterator[Gateway]:
    yield from gateway(tmp_path, ["text"], {})


def refused(http: TestClient, model: str) -> str:
    response = http.post(URL, json={"model": model, "messages": QUESTION})
    assert response.status_code == 400, response.text
    error = response.json()["error"]
    assert (error["code"], error["param"], error["type"]) == (
        "unsupported_parameter",
        "model",
        "invalid_request_error",
    )
    message: str = error["message"]
    return message


def test_auto_with_images_takes_the_vision_route_with_parts_in_order(vision_route: Gateway) -> None:
    http, backends = vision_route
    response = http.post(URL, json={"model": "auto", "messages": QUESTION, "temperature": 0})
    assert response.status_code == 200, response.text
    assert response.headers["x-groupqwen-route"] == "auto:vision"
    assert response.headers["x-groupqwen-model"] == "seeing"
    body = response.json()
    assert body["groupqwen"]["route"] == "auto:vision" and body["groupqwen"]["model"] == "seeing"
    assert "carries 2 images" in body["groupqwen"]["reason"]
    assert body["choices"][0]["message"]["content"] == "A cat"
    (sent,) = backends["seeing"].requests
    (message,) = sent.messages
    assert message.parts == ("Compare", ImagePart(PNG), "with", ImagePart(PHOTO, "low"))
    assert message.content == "Compare\nwith" and backends["text"].requests == []


def test_streamed_answer_names_the_vision_route_in_its_last_chunk(vision_route: Gateway) -> None:
    http, _ = vision_route
    with http.stream("POST", URL, json={"model": "auto", "messages": QUESTION, "stream": True}) as response:
        assert response.status_code == 200 and response.headers["x-groupqwen-route"] == "auto:vision"
        events = [line[6:] for line in response.iter_lines() if line.startswith("data: ")]
    assert events[-1] == "[DONE]"
    assert json.loads(events[-2])["groupqwen"]["route"] == "auto:vision"


def test_text_only_requests_still_take_the_tiers(vision_route: Gateway) -> None:
    http, backends = vision_route
    response = http.post(URL, json={"model": "auto", "messages": [{"role": "user", "content": "Hi"}]})
    assert response.headers["x-groupqwen-route"] == "auto" and response.headers["x-groupqwen-model"] == "text"
    assert backends["seeing"].requests == []


def test_explicit_models_and_routes(vision_route: Gateway) -> None:
    http, backends = vision_route
    response = http.post(URL, json={"model": "seeing", "messages": QUESTION})
    assert response.status_code == 200 and response.headers["x-groupqwen-route"] == "explicit"
    message = refused(http, "text")
    assert message.startswith("The model 'text' does not take images.")
    assert "if 'text' does take images, set models.text.vision: true" in message
    assert "router.routes.auto:vision" in message
    assert "text takes no images" in refused(http, "auto:fast")
    assert backends["text"].requests == []  # never a silently dropped image


def test_without_a_vision_route_images_are_a_400_saying_what_to_configure(no_vision_route: Gateway) -> None:
    http, backends = no_vision_route
    message = refused(http, "auto")
    assert "no configured tier can serve it (text takes no images)" in message
    assert "router.routes.auto:vision is not set" in message
    assert "send model 'auto' with router.routes.auto:vision set to one (a Qwen3-VL model" in message
    assert backends["text"].requests == [] and backends["seeing"].requests == []


def test_default_model_route(tmp_path: Path) -> None:
    """``auto`` falls back to ``default_model`` when no tier is servable; images still find the vision route
    when one is configured, and are refused with the default model named when none is."""
    for routes in ({"auto:vision": "seeing"}, {}):
        for http, _ in gateway(tmp_path, ["smollm2-135m"], routes):  # smollm2-135m: not on this disk
            text = http.post(URL, json={"model": "auto", "messages": [{"role": "user", "content": "Hi"}]})
            assert text.headers["x-groupqwen-route"] == "default"
            if routes:
                response = http.post(URL, json={"model": "auto", "messages": QUESTION})
                assert response.headers["x-groupqwen-route"] == "auto:vision"
            else:
                message = refused(http, "auto")
                assert "'auto' resolves to the default model 'text', which does not take images" in message


def test_config_sets_the_capability() -> None:
    settings = load_settings(models={"qwen2.5-coder-0.5b": {"vision": True}})
    catalog = settings.catalog()
    assert catalog["qwen2.5-coder-0.5b"].vision and not catalog["smollm2-135m"].vision
    assert "auto:vision" not in load_settings().router.routes  # no text model behind a vision route
    with pytest.raises(ConfigError) as err:
        load_settings(router={"routes": {"auto:vision": "qwen2.5-coder-0.5b"}})
    ((field, message),) = err.value.errors
    assert field == "router.routes.auto:vision" and "models.qwen2.5-coder-0.5b.vision: true" in message
    routed = load_settings(router={"routes": {"auto:vision": "qwen3-vl-8b"}})  # Qwen3-VL takes images
    assert routed.router.routes["auto:vision"] == "qwen3-vl-8b"


async def test_llama_cpp_backend_refuses_images() -> None:
    spec = builtin_catalog()["smollm2-135m"]
    backend = LlamaCppBackend(
        replace(spec, path=ensure_bundled(spec, load_settings().models_dir)), n_ctx=256, n_threads=1
    )
    request = GenerationRequest(
        messages=(Message("user", "What is it?", ("What is it?", ImagePart(PNG))),),
        sampling=Sampling(temperature=0.0, max_tokens=4),
    )
    try:
        with pytest.raises(InvalidRequest, match="cannot take images here") as err:
            async for _ in backend.stream(request):
                pass
        assert err.value.status_code == 400 and err.value.param == "messages"
        text = [c.text async for c in backend.stream(replace(request, messages=(Message("user", "Hi"),)))]
        assert text  # the model still serves text
    finally:
        await backend.close()
