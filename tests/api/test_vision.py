"""Vision through the gateway: the tiny Qwen2-VL model (tests/tiny_vlm.py) served in-process answers an
image the gateway fetched itself from a real HTTP server on loopback (allow-listed); every image it cannot
use is a 400 naming the image and why; boxes in an answer come back in the ``groupqwen`` object, in pixels
of the image sent."""

from __future__ import annotations

import base64
import io
import json
import re
import threading
from collections import Counter
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from PIL import Image

from groupqwen import testing
from groupqwen.cache.embedders import HashingEmbedder
from groupqwen.testing import fake_services, fake_settings

URL = "/v1/chat/completions"


def png(size: tuple[int, int], color: tuple[int, int, int] = (200, 30, 30)) -> bytes:
    out = io.BytesIO()
    Image.new("RGB", size, color).save(out, format="PNG")
    return out.getvalue()


def data_url(data: bytes, kind: str = "image/png") -> str:
    return f"data:{kind};base64," + base64.b64encode(data).decode()


def question(url: str | None, text: str = "What is in the picture?") -> list[dict[str, Any]]:
    content: list[dict[str, Any]] = [{"type": "text", "text": text}]
    if url is not None:
        content.append({"type": "image_url", "image_url": {"url": url}})
    return [{"role": "user", "content": content}]


GETS: Counter[str] = Counter()  # the paths the image server was asked for


@pytest.fixture(scope="module")
def image_server() -> Iterator[str]:
    """``/cat.png`` (and ``/dog.png``, ``/bird.png``): a PNG sent as ``application/octet-stream``;
    ``/page``: HTML sent as ``image/png``."""
    cat = (png((100, 60)), "application/octet-stream")
    bodies = {"/cat.png": cat, "/dog.png": cat, "/bird.png": cat, "/page": (b"<html/>", "image/png")}

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args: Any) -> None:
            pass

        def do_GET(self) -> None:
            GETS[self.path] += 1
            body, kind = bodies.get(self.path, (b"", "text/plain"))
            self.send_response(200 if body else 404)
            self.send_header("content-type", kind)
            self.send_header("content-length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}"
    finally:
        httpd.shutdown()
        httpd.server_close()


@pytest.fixture(scope="module")
def client(
    tiny_vlm_files: tuple[Path, Path], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[TestClient]:
    model, mmproj = tiny_vlm_files
    settings = fake_settings(
        tmp_path_factory.mktemp("vision"),
        models={"tiny-vl": {"path": model, "mmproj": mmproj, "family": "qwen2-vl", "n_ctx": 1024}},
        default_model="tiny-vl",
        n_threads=1,
        images={"allowed_hosts": ["127.0.0.1"], "max_pixels": 112 * 112, "max_bytes": 200_000},
    )
    with testing.gateway(fake_services(settings)) as one:
        yield one


def ask(client: TestClient, url: str | None) -> Any:
    body = {"model": "tiny-vl", "messages": question(url), "max_tokens": 2, "temperature": 0}
    return client.post(URL, json=body)


@pytest.mark.integration
def test_an_http_image_is_fetched_by_the_gateway_and_answered_in_process(
    client: TestClient, image_server: str
) -> None:
    text_only = ask(client, None)
    fetched = ask(client, f"{image_server}/cat.png")
    inline = ask(client, data_url(png((100, 60))))
    assert text_only.status_code == fetched.status_code == inline.status_code == 200, fetched.text
    tokens = [r.json()["usage"]["prompt_tokens"] for r in (text_only, fetched, inline)]
    # 100 × 60 → 112 × 56 → 8 merged image tokens and the two vision markers, fetched or inline alike
    assert tokens[1] - tokens[0] == tokens[2] - tokens[0] == 10
    assert fetched.json()["groupqwen"]["model"] == "tiny-vl"
    models = client.get("/v1/models").json()["data"]
    assert next(m for m in models if m["id"] == "tiny-vl")["groupqwen"]["capabilities"]["vision"] is True


@pytest.mark.integration
def test_an_exact_cache_hit_fetches_no_image(
    tiny_vlm_files: tuple[Path, Path], image_server: str, tmp_path: Path
) -> None:
    model, mmproj = tiny_vlm_files
    settings = fake_settings(
        tmp_path,
        models={"tiny-vl": {"path": model, "mmproj": mmproj, "family": "qwen2-vl", "n_ctx": 1024}},
        default_model="tiny-vl",
        n_threads=1,
        images={"allowed_hosts": ["127.0.0.1"], "max_pixels": 112 * 112},
        cache={"backend": "embedded"},
    )
    with testing.gateway(fake_services(settings, embedder=HashingEmbedder())) as http:
        answers = [ask(http, f"{image_server}/dog.png") for _ in range(2)]
    assert [a.headers["x-groupqwen-cache"] for a in answers] == ["miss", "hit"]
    assert answers[0].json()["choices"] == answers[1].json()["choices"]
    assert GETS["/dog.png"] == 1  # the hit was answered without the image fetched again


@pytest.mark.integration
def test_n_choices_fetch_and_prepare_the_image_once(client: TestClient, image_server: str) -> None:
    body = {"model": "tiny-vl", "messages": question(f"{image_server}/bird.png"), "max_tokens": 2, "n": 3}
    response = client.post(URL, json={**body, "seed": 1})
    assert response.status_code == 200, response.text
    assert len(response.json()["choices"]) == 3
    assert GETS["/bird.png"] == 1


@pytest.mark.integration
def test_auto_sends_an_image_through_the_vision_route_to_the_in_process_model(
    tiny_vlm_files: tuple[Path, Path], tmp_path: Path
) -> None:
    model, mmproj = tiny_vlm_files
    settings = fake_settings(
        tmp_path,
        models={"tiny-vl": {"path": model, "mmproj": mmproj, "family": "qwen2-vl", "n_ctx": 1024}},
        default_model="smollm2-135m",  # text goes elsewhere: only the image makes it tiny-vl
        router={"routes": {"auto:vision": "tiny-vl"}},
        n_threads=1,
        images={"max_pixels": 112 * 112},
    )
    with testing.gateway(fake_services(settings)) as routed:
        body = {"model": "auto", "messages": question(data_url(png((100, 60)))), "max_tokens": 2}
        response = routed.post(URL, json={**body, "temperature": 0})
    assert response.status_code == 200, response.text
    assert response.headers["x-groupqwen-route"] == "auto:vision"
    assert response.headers["x-groupqwen-model"] == "tiny-vl"
    assert response.json()["groupqwen"]["route"] == "auto:vision"


@pytest.mark.integration
@pytest.mark.parametrize(
    ("url", "reason"),
    [
        ("SERVER/page", r"is not an image this gateway reads \(by its content"),  # the header said image/png
        ("SERVER/missing", r"answered HTTP 404"),
        (data_url(b"GIF89a but not really"), r"could not be read as an image|is not an image"),
        (data_url(b"hello", "image/jpeg"), r"is not an image this gateway reads"),
        (data_url(png((900, 900), (1, 2, 3)) + b"\0" * 300_000), r"larger than images\.max_bytes"),
    ],
)
def test_every_unusable_image_is_a_400_naming_it(
    client: TestClient, image_server: str, url: str, reason: str
) -> None:
    response = ask(client, url.replace("SERVER", image_server))
    assert response.status_code == 400, response.text
    error = response.json()["error"]
    assert error["code"] == "image_refused" and error["type"] == "invalid_request_error"
    assert error["message"].startswith("messages[0].content[1] (image 1 of the request)")
    assert error["param"] == "messages[0].content[1].image_url.url"
    assert re.search(reason, error["message"]), error["message"]


BOX_REPLY = 'Here: [{"bbox_2d": [504, 252, 1008, 504], "label": "cat"}]'


@pytest.fixture
def boxing(tmp_path: Path) -> Iterator[TestClient]:
    """A Qwen2.5-VL stand-in (fake backend) whose answer holds one box in its resized image's pixels."""
    models = {"vl": {"backend": "fake", "vision": True, "family": "qwen2.5-vl", "fake_reply": BOX_REPLY}}
    with testing.gateway(fake_services(fake_settings(tmp_path, models))) as one:
        yield one


def test_boxes_come_back_in_pixels_of_the_image_sent(boxing: TestClient) -> None:
    # the client sends 1000 × 500; the model sees it as 1008 × 504 (multiples of 28 within max_pixels)
    body = {"model": "vl", "messages": question(data_url(png((1000, 500)))), "max_tokens": 50}
    answer = boxing.post(URL, json=body).json()
    assert answer["choices"][0]["message"]["content"] == BOX_REPLY
    assert answer["groupqwen"]["boxes"] == [
        {"label": "cat", "x1": 500.0, "y1": 250.0, "x2": 1000.0, "y2": 500.0}
    ]

    with boxing.stream("POST", URL, json={**body, "stream": True}) as response:
        frames = [json.loads(line[6:]) for line in response.iter_lines() if line.startswith("data: {")]
    last = next(f for f in reversed(frames) if f.get("choices") and f["choices"][0].get("finish_reason"))
    assert last["groupqwen"]["boxes"] == answer["groupqwen"]["boxes"]


def test_no_boxes_key_without_boxes(boxing: TestClient) -> None:
    answer = boxing.post(URL, json={"model": "vl", "messages": question(None), "max_tokens": 5}).json()
    assert "boxes" not in answer["groupqwen"]


def test_boxes_on_an_http_image_a_remote_model_fetched_are_mapped(tmp_path: Path, image_server: str) -> None:
    """A remote model (the fake backend stands for one) is sent the image's URL and fetches it itself; when
    its answer points at something, the gateway fetches the image (guarded as any fetch) to learn its size
    and maps the boxes. An answer without a box costs no fetch."""
    reply = "<|object_ref_start|>cat<|object_ref_end|><|box_start|>(100,200),(500,1000)<|box_end|>"
    models = {
        "vl": {"backend": "fake", "vision": True, "family": "qwen2-vl", "fake_reply": reply},
        "plain": {"backend": "fake", "vision": True, "family": "qwen2-vl", "fake_reply": "A cat."},
    }
    settings = fake_settings(tmp_path, models, images={"allowed_hosts": ["127.0.0.1"]})
    with testing.gateway(fake_services(settings)) as one:
        before = GETS["/bird.png"]
        body = {"model": "plain", "messages": question(f"{image_server}/bird.png"), "max_tokens": 5}
        answer = one.post(URL, json=body).json()
        assert "boxes" not in answer["groupqwen"] and GETS["/bird.png"] == before
        answer = one.post(URL, json={**body, "model": "vl", "max_tokens": 50}).json()
        assert GETS["/bird.png"] == before + 1
        # the 0–1000 grid of the 100 × 60 image the server sends
        assert answer["groupqwen"]["boxes"] == [
            {"label": "cat", "x1": 10.0, "y1": 12.0, "x2": 50.0, "y2": 60.0}
        ]
        # an image the gateway cannot read (here: not found) maps no boxes, and the answer stands
        gone = {**body, "model": "vl", "max_tokens": 50, "messages": question(f"{image_server}/gone.png")}
        r = one.post(URL, json=gone)
        assert r.status_code == 200 and r.json()["choices"][0]["message"]["content"] == reply
        assert "boxes" not in r.json()["groupqwen"]
