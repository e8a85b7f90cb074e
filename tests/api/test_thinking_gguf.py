"""``reasoning_content`` from a real Qwen3-style GGUF in-process: a tiny model written by the test
(``tiny_gguf.py``: Qwen3's chat template, a vocabulary with ``<think>``, weights that always answer
``<think>Let me think.</think>Paris.``), pointed at as a user would (``models.qwen3-0.6b.path``)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import openai
import pytest
from tiny_gguf import ANSWER, OPENING_TEMPLATE, QWEN3_TEMPLATE, REASONING, write_thinking_gguf

from groupqwen.config import load_settings
from groupqwen.testing import fake_services, gateway

pytestmark = pytest.mark.integration
ASK: Any = [{"role": "user", "content": "What is the capital of France?"}]


@pytest.fixture(params=[QWEN3_TEMPLATE, OPENING_TEMPLATE], ids=["model-opens", "prompt-opens"])
def client(tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[openai.OpenAI]:
    gguf = write_thinking_gguf(tmp_path / "tiny-qwen3.gguf", request.param)
    settings = load_settings(
        models_dir=tmp_path,
        data_dir=tmp_path / "data",
        default_model="qwen3-0.6b",
        models={"qwen3-0.6b": {"path": gguf}},
        n_threads=1,
        n_ctx=256,
        cache={"backend": "off"},
    )
    with gateway(fake_services(settings)) as http:
        yield openai.OpenAI(base_url="http://testserver/v1", api_key="x", http_client=http, max_retries=0)


def test_thinking_is_split_into_reasoning_content(client: openai.OpenAI) -> None:
    asked: Any = {"model": "qwen3-0.6b", "messages": ASK, "max_tokens": 16}
    response = client.chat.completions.with_raw_response.create(**asked)
    done = response.parse()
    message = done.choices[0].message
    assert message.content == ANSWER
    assert (message.model_extra or {})["reasoning_content"] == REASONING
    assert done.choices[0].finish_reason == "stop"
    assert response.http_response.json()["groupqwen"]["thinking"] is True

    reasoning, content = [], []
    for chunk in client.chat.completions.create(**asked, stream=True):
        for choice in chunk.choices:
            reasoning.append((choice.delta.model_extra or {}).get("reasoning_content") or "")
            content.append(choice.delta.content or "")
    assert "".join(reasoning) == REASONING and "".join(content) == ANSWER
    assert "<think>" not in "".join(content)
