"""The remote vision path: the tiny Qwen2-VL model (tests/tiny_vlm.py) behind llama-cpp-python's own
OpenAI-compatible server with its projector (``--clip_model_path``, the generic ``mtmd`` chat handler),
served by the gateway as an ``openai_http`` model. An inline image within the model's budget travels as the
client sent it; one over it is re-encoded smaller first, which the server's prompt size shows."""

from __future__ import annotations

import base64
import io
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi.testclient import TestClient
from PIL import Image
from servers import ALIAS, LlamaServer

from groupqwen import testing
from groupqwen.testing import fake_services, fake_settings

pytestmark = pytest.mark.integration

URL = "/v1/chat/completions"


def data_url(size: tuple[int, int]) -> str:
    out = io.BytesIO()
    Image.new("RGB", size, (20, 120, 220)).save(out, format="PNG")
    return "data:image/png;base64," + base64.b64encode(out.getvalue()).decode()


@pytest.fixture(scope="module")
def server(tiny_vlm_files: tuple[Path, Path]) -> Iterator[LlamaServer]:
    model, mmproj = tiny_vlm_files
    with LlamaServer(model, "--clip_model_path", str(mmproj), "--chat_format", "mtmd").serving() as one:
        yield one


@pytest.fixture(scope="module")
def client(server: LlamaServer, tmp_path_factory: pytest.TempPathFactory) -> Iterator[TestClient]:
    models = {
        "remote-vl": {
            "backend": "openai_http", "urls": [server.url], "remote_model": ALIAS, "vision": True,
            "family": "qwen2-vl",
        }
    }  # fmt: skip
    settings = fake_settings(
        tmp_path_factory.mktemp("remote-vision"),
        models=models,
        default_model="remote-vl",
        images={"max_pixels": 112 * 112},
    )
    with testing.gateway(fake_services(settings)) as one:
        yield one


def message(image: str | None) -> list[dict[str, Any]]:
    content: list[dict[str, Any]] = [{"type": "text", "text": "Describe it."}]
    if image is not None:
        content.append({"type": "image_url", "image_url": {"url": image}})
    return [{"role": "user", "content": content}]


def first_logprobs(client: TestClient, image: str | None) -> list[float]:
    """The model's top log-probabilities for its first token, through the gateway."""
    body = {"model": "remote-vl", "messages": message(image), "max_tokens": 1, "temperature": 0}
    response = client.post(URL, json={**body, "logprobs": True, "top_logprobs": 5})
    assert response.status_code == 200, response.text
    return [t["logprob"] for t in response.json()["choices"][0]["logprobs"]["content"][0]["top_logprobs"]]


def direct(server: LlamaServer, image: str) -> httpx.Response:
    """The same question asked of the server directly: the image as the client wrote it."""
    body = {"model": ALIAS, "messages": message(image), "max_tokens": 1, "temperature": 0}
    return httpx.post(f"{server.url}/chat/completions", json=body, timeout=120)


def test_images_reach_the_remote_server_within_the_models_budget(
    client: TestClient, server: LlamaServer
) -> None:
    text_only = first_logprobs(client, None)
    small = first_logprobs(client, data_url((112, 112)))  # within max_pixels: sent untouched
    large = first_logprobs(client, data_url((1400, 1400)))  # 156 times the budget: re-encoded to 112 × 112
    assert small != pytest.approx(text_only, abs=1e-4)  # the server's model saw the image
    # the large image reached the server at the budget's size: the model computes what it computes for the
    # small one (the same colour, through JPEG: within 0.01) ...
    assert large == pytest.approx(small, abs=1e-2)
    # ... where the image as the client sent it is thousands of tokens to that server, past its context
    raw = direct(server, data_url((1400, 1400)))
    assert raw.status_code == 500 and "exceeds n_ctx" in raw.text
