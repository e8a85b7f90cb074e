"""``/v1/completions`` (legacy text completions) through the official ``openai`` SDK: the prompt reaches the
model as written, JSON and streamed answers, legacy logprobs, echo, and every bad input as a clear 400."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import openai
import pytest
from fastapi.testclient import TestClient

from groupqwen.backends.fake import FakeBackend
from groupqwen.testing import fake_services, fake_settings, gateway


@pytest.fixture
def fake() -> FakeBackend:
    return FakeBackend(model_id="fake", tokens=(" world", "!", " How", " are", " you"))


@pytest.fixture
def http(tmp_path: Path, fake: FakeBackend) -> Iterator[TestClient]:
    with gateway(fake_services(fake_settings(tmp_path, {"fake": {"thinking": True}}), fake)) as client:
        yield client


def _sdk(http: TestClient) -> openai.OpenAI:
    return openai.OpenAI(base_url="http://testserver/v1", api_key="x", http_client=http, max_retries=0)


def test_the_prompt_is_continued_as_written(http: TestClient, fake: FakeBackend) -> None:
    completion = _sdk(http).completions.create(model="fake", prompt="Hello", temperature=0, stop=["?"])
    assert completion.object == "text_completion"
    assert completion.id.startswith("cmpl-")
    assert completion.model == "fake"
    choice = completion.choices[0]
    assert (choice.index, choice.text, choice.finish_reason) == (0, " world! How are you", "stop")
    assert choice.logprobs is None
    assert completion.usage is not None and completion.usage.completion_tokens == 5
    request = fake.requests[-1]
    assert request.raw_prompt is True
    assert [(m.role, m.content) for m in request.messages] == [("user", "Hello")]
    assert request.enable_thinking is False  # a thinking model continues the text, it does not think
    assert request.sampling.stop == ("?",)
    assert (completion.model_extra or {})["groupqwen"]["route"] == "explicit"


def test_max_tokens_defaults_to_16_as_openai(http: TestClient, fake: FakeBackend) -> None:
    _sdk(http).completions.create(model="fake", prompt="Hello")
    assert fake.requests[-1].sampling.max_tokens == 16
    short = _sdk(http).completions.create(model="fake", prompt="Hello", max_tokens=2)
    assert (short.choices[0].text, short.choices[0].finish_reason) == (" world!", "length")


def test_a_list_of_one_prompt_is_that_prompt(http: TestClient, fake: FakeBackend) -> None:
    _sdk(http).completions.create(model="fake", prompt=["Once upon"])
    assert fake.requests[-1].messages[0].content == "Once upon"


def test_streamed_chunks_and_usage(http: TestClient) -> None:
    stream = _sdk(http).completions.create(
        model="fake", prompt="Hello", stream=True, stream_options={"include_usage": True}
    )
    chunks = list(stream)
    texts = [c.choices[0].text for c in chunks if c.choices]
    assert "".join(texts) == " world! How are you"
    assert all(c.object == "text_completion" for c in chunks)
    finishes = [c.choices[0].finish_reason for c in chunks if c.choices]
    assert finishes[-1] == "stop" and set(finishes[:-1]) == {None}
    assert chunks[-1].choices == [] and chunks[-1].usage is not None
    assert chunks[-1].usage.completion_tokens == 5


def test_legacy_logprobs(http: TestClient) -> None:
    completion = _sdk(http).completions.create(model="fake", prompt="Hello", logprobs=1, max_tokens=3)
    logprobs = completion.choices[0].logprobs
    assert logprobs is not None
    assert logprobs.tokens == [" world", "!", " How"]
    assert logprobs.token_logprobs == [-0.1, -0.1, -0.1]
    assert logprobs.top_logprobs == [{" world": -0.1}, {"!": -0.1}, {" How": -0.1}]
    assert logprobs.text_offset == [0, 6, 7]


def test_echo_puts_the_prompt_first(http: TestClient) -> None:
    sdk = _sdk(http)
    completion = sdk.completions.create(model="fake", prompt="Hello", echo=True, max_tokens=2)
    assert completion.choices[0].text == "Hello world!"
    chunks = list(sdk.completions.create(model="fake", prompt="Hello", echo=True, max_tokens=2, stream=True))
    assert chunks[0].choices[0].text == "Hello"
    assert "".join(c.choices[0].text for c in chunks) == "Hello world!"


def test_n_choices_each_with_its_own_seed_and_offsets(http: TestClient, fake: FakeBackend) -> None:
    sdk = _sdk(http)
    done = sdk.completions.create(
        model="fake", prompt="Hello", n=3, seed=5, max_tokens=2, logprobs=0, best_of=3
    )
    assert [(c.index, c.text) for c in done.choices] == [(0, " world!"), (1, " world!"), (2, " world!")]
    assert [r.sampling.seed for r in fake.requests] == [5, 6, 7]
    assert all(c.logprobs is not None and c.logprobs.text_offset == [0, 6] for c in done.choices)
    assert done.usage is not None and done.usage.completion_tokens == 6
    stream = sdk.completions.create(
        model="fake",
        prompt="Hello",
        n=2,
        max_tokens=2,
        stream=True,
        echo=True,
        stream_options={"include_usage": True},
    )
    texts: dict[int, str] = {}
    usage = None
    for chunk in stream:
        usage = chunk.usage or usage
        for choice in chunk.choices:
            texts[choice.index] = texts.get(choice.index, "") + choice.text
    assert texts == {0: "Hello world!", 1: "Hello world!"}
    assert usage is not None and usage.completion_tokens == 4


def test_model_output_is_not_split_into_reasoning(tmp_path: Path) -> None:
    thinker = FakeBackend(model_id="fake", tokens=("<think>", "a", "</think>", "b"))
    with gateway(fake_services(fake_settings(tmp_path, {"fake": {"thinking": True}}), thinker)) as http:
        completion = _sdk(http).completions.create(model="fake", prompt="x")
    assert completion.choices[0].text == "<think>a</think>b"


@pytest.mark.parametrize(
    ("body", "param", "words"),
    [
        ({"model": "fake"}, "prompt", "Field required"),
        ({"model": "fake", "prompt": ""}, "prompt", "is empty"),
        ({"model": "fake", "prompt": ["a", "b"]}, "prompt", "one prompt per request"),
        ({"model": "fake", "prompt": [1, 2, 3]}, "prompt", "token-id prompts"),
        ({"model": "fake", "prompt": []}, "prompt", "token-id prompts"),
        ({"model": "fake", "prompt": "x", "suffix": "y"}, "suffix", "fill-in-the-middle"),
        ({"model": "fake", "prompt": "x", "n": 9}, "n", ""),
        ({"model": "fake", "prompt": "x", "best_of": 3}, "best_of", "greater than 'n' is not supported"),
        ({"model": "fake", "prompt": "x", "n": 3, "best_of": 2}, "best_of", "at least 'n'"),
        ({"model": "fake", "prompt": "x", "echo": True, "logprobs": 1}, "echo", "not scored"),
        ({"model": "fake", "prompt": "x", "logprobs": 6}, "logprobs", ""),
        ({"model": "fake", "prompt": "x", "max_tokens": 0}, "max_tokens", ""),
        ({"model": "fake", "prompt": "x", "stop": ["a", "b", "c", "d", "e"]}, "stop", "at most 4"),
    ],
)
def test_bad_input_is_a_400_naming_the_field(
    http: TestClient, body: dict[str, Any], param: str, words: str
) -> None:
    response = http.post("/v1/completions", json=body)
    assert response.status_code == 400, response.text
    error = response.json()["error"]
    assert error["param"] == param
    assert words in error["message"]


def test_an_unknown_model_is_a_404(http: TestClient) -> None:
    with pytest.raises(openai.NotFoundError, match="does not exist"):
        _sdk(http).completions.create(model="nope", prompt="x")


def test_stream_and_echo_null_are_their_defaults(http: TestClient) -> None:
    """``stream`` and ``echo`` are ``Optional`` in the SDK's types, sent as JSON null: OpenAI's defaults."""
    completion = _sdk(http).completions.create(model="fake", prompt="Hello", stream=None, echo=None)
    assert completion.choices[0].text == " world! How are you"  # not echoed


def test_a_prompt_over_the_context_names_the_prompt(tmp_path: Path) -> None:
    """``context_length_exceeded`` names this surface's field (``prompt``), not chat's ``messages``."""
    tiny = FakeBackend(model_id="tiny", n_ctx=16)
    with gateway(fake_services(fake_settings(tmp_path, ["tiny"]), tiny)) as http:
        for stream in (False, True):
            with pytest.raises(openai.BadRequestError) as err:
                _sdk(http).completions.create(model="tiny", prompt="word " * 20, stream=stream)
            assert err.value.code == "context_length_exceeded" and err.value.param == "prompt"
