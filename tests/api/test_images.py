"""Images end to end with scripted backends: OpenAI ``image_url`` parts parsed and carried in order, a
request with images routed to ``auto:vision``, a 400 that says what to configure wherever an image would
reach a model that cannot take it, the in-process llama.cpp backend without a projector refusing images,
and image URLs into the model server's own network (loopback, private, metadata, however written) refused
unless ``images:`` allows them."""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

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


def gateway(tmp_path: Path, tiers: list[str], routes: dict[str, str], **overrides: Any) -> Iterator[Gateway]:
    """``text`` (no images) is the default model; ``seeing`` (``vision: true``) takes images; ``overrides``
    are other settings."""
    backends = {
        "text": FakeBackend("text", tokens=("Words",)),
        "seeing": FakeBackend("seeing", tokens=("A cat",)),
    }
    settings = fake_settings(
        tmp_path,
        {"text": {}, "seeing": {"vision": True}},
        router={"tiers": [{"model": m} for m in tiers], "routes": routes},
        **overrides,
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


async def test_llama_cpp_backend_without_a_projector_refuses_images() -> None:
    spec = builtin_catalog()["smollm2-135m"]
    backend = LlamaCppBackend(
        replace(spec, path=ensure_bundled(spec, load_settings().models_dir)), n_ctx=256, n_threads=1
    )
    request = GenerationRequest(
        messages=(Message("user", "What is it?", ("What is it?", ImagePart(PNG))),),
        sampling=Sampling(temperature=0.0, max_tokens=4),
    )
    try:
        with pytest.raises(
            InvalidRequest, match=r"without a multimodal projector.*set models\.smollm2-135m\.mmproj"
        ) as err:
            async for _ in backend.stream(request):
                pass
        assert err.value.status_code == 400 and err.value.param == "messages"
        text = [c.text async for c in backend.stream(replace(request, messages=(Message("user", "Hi"),)))]
        assert text  # the model still serves text
    finally:
        await backend.close()


# --------------------------------------------------------------------------------------------------------
# Which image URLs are forwarded (images: in the settings)

IMAGE_PARAM = "messages[0].content[1].image_url.url"


def ask(http: TestClient, url: str) -> dict[str, Any]:
    """A request to ``seeing`` whose one image (the message's second part) is at ``url``: the answer's
    JSON (status 200 or 400)."""
    image = {"type": "image_url", "image_url": {"url": url}}
    messages = [{"role": "user", "content": [{"type": "text", "text": "What is it?"}, image]}]
    response = http.post(URL, json={"model": "seeing", "messages": messages})
    assert response.status_code in (200, 400), response.text
    body: dict[str, Any] = response.json()
    return body


def refused_image(http: TestClient, url: str) -> str:
    error = ask(http, url)["error"]
    assert (error["code"], error["param"], error["type"]) == (
        "invalid_request",
        IMAGE_PARAM,
        "invalid_request_error",
    ), error
    message: str = error["message"]
    assert message.startswith(IMAGE_PARAM)
    return message


def forwarded(http: TestClient, backends: dict[str, FakeBackend], url: str) -> None:
    """``url`` reached the model unchanged."""
    body = ask(http, url)
    assert "error" not in body, body
    (message,) = backends["seeing"].requests[-1].messages
    assert message.images == (ImagePart(url),)


@pytest.fixture
def default_policy(tmp_path: Path) -> Iterator[Gateway]:
    yield from gateway(tmp_path, ["text"], {"auto:vision": "seeing"})


@pytest.mark.parametrize(
    ("url", "shown", "why"),
    [
        ("http://127.0.0.1/cat.png", "'127.0.0.1'", "loopback address (127.0.0.0/8)"),
        ("http://127.0.0.1:8000/v1/models", "'127.0.0.1'", "loopback"),
        ("http://[::1]/cat.png", "'::1'", "loopback address (::1/128)"),
        ("http://169.254.169.254/latest/meta-data/", "'169.254.169.254'", "link-local (cloud metadata"),
        ("http://10.0.0.5/cat.png", "'10.0.0.5'", "private address (10.0.0.0/8)"),
        ("http://172.16.3.4/cat.png", "'172.16.3.4'", "private address (172.16.0.0/12)"),
        ("https://192.168.1.1/cat.png", "'192.168.1.1'", "private address (192.168.0.0/16)"),
        ("http://100.100.100.200/latest/meta-data/", "'100.100.100.200'", "shared"),
        ("http://0.0.0.0:8000/cat.png", "'0.0.0.0'", "unspecified"),
        ("http://[::]/cat.png", "'::'", "unspecified address (::/128)"),
        ("http://[fd00:ec2::254]/latest/meta-data/", "'fd00:ec2::254'", "unique local (private)"),
        ("http://[fe80::1%25eth0]/cat.png", "'fe80::1%25eth0'", "link-local"),
        # 127.0.0.1 however a URL parser (WHATWG, inet_aton) reads it
        ("http://2130706433/cat.png", "'2130706433' (127.0.0.1)", "loopback"),
        ("http://0x7f000001/cat.png", "'0x7f000001' (127.0.0.1)", "loopback"),
        ("http://0177.0.0.1/cat.png", "'0177.0.0.1' (127.0.0.1)", "loopback"),
        ("http://0x7f.0.0.1/cat.png", "'0x7f.0.0.1' (127.0.0.1)", "loopback"),
        ("http://127.1/cat.png", "'127.1' (127.0.0.1)", "loopback"),
        ("http://127.0.0.1./cat.png", "'127.0.0.1.' (127.0.0.1)", "loopback"),
        ("http://%31%32%37.0.0.1/cat.png", "'%31%32%37.0.0.1' (127.0.0.1)", "loopback"),
        ("http://１２７．０．０．１/cat.png", "(127.0.0.1)", "loopback"),
        ("http://0/cat.png", "'0' (0.0.0.0)", "unspecified"),
        ("http://[::ffff:127.0.0.1]/cat.png", "'::ffff:127.0.0.1'", "an IPv6 form of 127.0.0.1, a loopback"),
        ("http://[::ffff:a9fe:a9fe]/", "'::ffff:a9fe:a9fe'", "an IPv6 form of 169.254.169.254"),
        ("http://[64:ff9b::7f00:1]/cat.png", "'64:ff9b::7f00:1'", "an IPv6 form of 127.0.0.1"),
        ("http://[::127.0.0.1]/cat.png", "'::127.0.0.1'", "an IPv6 form of 127.0.0.1"),
        # names kept for the server itself and for internal services
        ("http://localhost/cat.png", "'localhost'", "a name for the model's server itself"),
        ("http://LocalHost.:8080/cat.png", "'localhost.' (localhost)", "a name for the model's server"),
        ("http://images.localhost/cat.png", "'images.localhost'", "a name for the model's server itself"),
        ("http://metadata.google.internal/computeMetadata/v1/", "'metadata.google.internal'", "metadata"),
        ("http://metadata/computeMetadata/v1/", "'metadata'", "cloud metadata"),
        ("http://printer.local/cat.png", "'printer.local'", "multicast DNS"),
    ],
)
def test_image_urls_into_private_networks_are_refused(
    default_policy: Gateway, url: str, shown: str, why: str
) -> None:
    http, backends = default_policy
    message = refused_image(http, url)
    assert shown in message and why in message, message
    assert "images.allowed_hosts" in message and "images.refuse_private: false" in message
    assert backends["seeing"].requests == []


@pytest.mark.parametrize(
    "url",
    [
        "https://images.example/cat.jpg?size=large",
        "http://images.example:8443/cat.jpg",  # any port
        "https://93.184.215.14/cat.jpg",
        "http://8.8.8.8:8080/cat.png",
        "http://[2606:4700:4700::1111]/cat.png",
        "https://127.0.0.1.example.com/cat.png",  # a name: not resolved here (the server's network policy)
        "https://localhost.example.com/cat.png",
    ],
)
def test_public_addresses_and_ordinary_names_are_forwarded_unchanged(
    default_policy: Gateway, url: str
) -> None:
    http, backends = default_policy
    forwarded(http, backends, url)


@pytest.mark.parametrize(
    ("url", "why"),
    [
        ("http://user:secret@images.example/cat.jpg", "carries credentials (user:password@host)"),
        ("http://images.example@127.0.0.1/cat.jpg", "carries credentials"),
        ("http://token@images.example/cat.jpg", "carries credentials"),
        ("http://127.0.0.1\\.images.example/cat.png", "characters no host name can hold"),
        ("http://images.example /cat.png", "whitespace or control characters"),
        ("http://256.0.0.1/cat.png", "'256.0.0.1' that is not a valid IPv4 address"),
        ("http://1.2.3.4.5/cat.png", "not a valid IPv4 address"),
        ("http://images.0x/cat.png", "not a valid IPv4 address"),
        ("http://%ff.example/cat.png", "not UTF-8"),
    ],
)
def test_credentials_and_hosts_that_parsers_could_read_differently_are_refused(
    default_policy: Gateway, url: str, why: str
) -> None:
    http, backends = default_policy
    assert why in refused_image(http, url)
    assert backends["seeing"].requests == []


def test_allowed_hosts_let_private_hosts_through(tmp_path: Path) -> None:
    allowed = ["10.0.0.0/8", "[fd12::7]", "Images.Internal", "*.corp.internal"]
    for http, backends in gateway(
        tmp_path, ["text"], {"auto:vision": "seeing"}, images={"allowed_hosts": allowed}
    ):
        for url in (
            "http://10.0.0.5/cat.png",
            "http://0x0a000005/cat.png",  # 10.0.0.5 written otherwise
            "http://[::ffff:10.0.0.5]/cat.png",
            "http://[fd12::7]:8080/cat.png",
            "http://images.internal/cat.png",
            "http://assets.eu.corp.internal/cat.png",
        ):
            forwarded(http, backends, url)
        for url in ("http://127.0.0.1/cat.png", "http://metadata.google.internal/", "http://corp.internal/"):
            refused_image(http, url)
        assert "credentials" in refused_image(http, "http://user:secret@10.0.0.5/cat.png")


def test_only_allowed_hosts_is_a_strict_allow_list(tmp_path: Path) -> None:
    images = {"only_allowed_hosts": True, "allowed_hosts": ["*.cdn.example", "203.0.113.0/24", "10.0.0.5"]}
    for http, backends in gateway(tmp_path, ["text"], {"auto:vision": "seeing"}, images=images):
        for url in (
            "https://eu.cdn.example/cat.png",
            "http://203.0.113.7/cat.png",
            "http://10.0.0.5/cat.png",
        ):
            forwarded(http, backends, url)
        forwarded(http, backends, PNG)
        for url in (
            "https://images.example/cat.png",
            "http://cdn.example/cat.png",  # *.cdn.example: names under it only
            "http://8.8.8.8/",
            "http://127.0.0.1/cat.png",
        ):
            message = refused_image(http, url)
            assert "images.allowed_hosts does not list" in message
            assert "images.only_allowed_hosts: true" in message
        assert backends["seeing"].requests[-1].messages[0].images == (ImagePart(PNG),)


def test_refuse_private_false_forwards_any_host_but_not_credentials(tmp_path: Path) -> None:
    for http, backends in gateway(
        tmp_path, ["text"], {"auto:vision": "seeing"}, images={"refuse_private": False}
    ):
        for url in ("http://127.0.0.1:9000/cat.png", "http://169.254.169.254/", "http://localhost/cat.png"):
            forwarded(http, backends, url)
        assert "credentials" in refused_image(http, "http://user:secret@images.example/cat.png")


def test_forward_urls_false_keeps_data_urls_only(tmp_path: Path) -> None:
    images = {"forward_urls": False}
    for http, backends in gateway(tmp_path, ["text"], {"auto:vision": "seeing"}, images=images):
        for url in (PHOTO, "http://8.8.8.8/cat.png", "HTTP://images.example/cat.png"):
            message = refused_image(http, url)
            assert "images.forward_urls: false" in message and "data:image/" in message
        assert backends["seeing"].requests == []
        forwarded(http, backends, PNG)


@pytest.mark.parametrize(
    ("entry", "why"),
    [
        ("not a host", "is neither a host name nor an address or CIDR network"),
        ("10.0.0.0/33", "is neither a host name nor an address or CIDR network"),
        ("2130706433", "reads as an IPv4 address: write it dotted"),
        ("http://images.internal", "is neither a host name"),
    ],
)
def test_allowed_hosts_are_checked_when_the_settings_load(entry: str, why: str) -> None:
    with pytest.raises(ConfigError) as err:
        load_settings(images={"allowed_hosts": ["images.internal", entry]})
    ((field, message),) = err.value.errors
    assert field == "images.allowed_hosts" and why in message and repr(entry) in message


def test_allowed_hosts_are_normalised() -> None:
    images = load_settings(images={"allowed_hosts": ["10.1.2.3/8", "[FD12::7]", " Images.Internal. "]}).images
    assert images.allowed_hosts == ["10.0.0.0/8", "fd12::7/128", "images.internal"]
    assert images.forward_urls and images.refuse_private  # the defaults
