"""The real thing: `groupqwen serve` as a subprocess on a free port, answering with the bundled models."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest
from servers import free_port

from groupqwen.config import Settings
from groupqwen.pool.bundled import ensure_bundled

pytestmark = pytest.mark.integration

SMALL = "smollm2-135m"
DEFAULT = "qwen2.5-coder-0.5b"
LADDER = (DEFAULT, "qwen2.5-coder-1.5b")  # auto's default tiers


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    settings = Settings()
    for spec in settings.catalog().values():
        if spec.bundled is not None:
            ensure_bundled(spec, settings.models_dir)
    port = free_port()
    workdir = tmp_path_factory.mktemp("server")
    log_path = workdir / "server.log"
    env = {**os.environ, "GROUPQWEN_N_THREADS": "1", "GROUPQWEN_N_CTX": "1024", "GROUPQWEN_PORT": str(port)}
    env["GROUPQWEN_DATA_DIR"] = str(workdir / "data")  # a module fixture: set up before the autouse one
    groupqwen = Path(sys.executable).with_name("groupqwen")
    with log_path.open("wb") as log_file:
        process = subprocess.Popen([str(groupqwen), "serve"], env=env, stdout=log_file, stderr=log_file)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 180  # a busy machine (the suite runs in parallel) starts slowly
        while True:
            try:
                if httpx.get(url + "/health", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if process.poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"the server did not start:\n{log_path.read_text()}")
            time.sleep(0.1)
        yield url
    finally:
        process.terminate()
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
    # uvicorn exits by re-raising the SIGTERM it handled, after a graceful shutdown
    assert process.returncode in (0, -15), log_path.read_text()
    assert "Application shutdown complete" in log_path.read_text()


@pytest.fixture
def client(server: str) -> openai.OpenAI:
    return openai.OpenAI(base_url=server + "/v1", api_key="unused", timeout=120)


def _ask(prompt: str) -> list[dict[str, str]]:
    return [{"role": "user", "content": prompt}]


def test_small_model_answers(client: openai.OpenAI) -> None:
    response = client.chat.completions.with_raw_response.create(
        model=SMALL, messages=_ask("What is the capital of France?"), max_tokens=16, temperature=0
    )
    completion = response.parse()
    assert response.headers["x-groupqwen-model"] == SMALL
    assert response.headers["x-request-id"]
    assert completion.choices[0].message.content
    assert completion.choices[0].finish_reason in ("stop", "length")
    assert completion.usage is not None and completion.usage.prompt_tokens > 5
    assert 0 < completion.usage.completion_tokens <= 16


def test_auto_uses_the_default_qwen_model_and_streams(client: openai.OpenAI) -> None:
    stream = client.chat.completions.create(
        model="auto",
        messages=_ask("Write a Python function that adds two numbers."),
        max_tokens=24,
        temperature=0,
        stream=True,
        stream_options={"include_usage": True},
    )
    pieces, usage, models = [], None, set()
    for chunk in stream:
        models.add(chunk.model)
        if chunk.usage is not None:
            usage = chunk.usage
        for choice in chunk.choices:
            pieces.append(choice.delta.content or "")
    assert len(models) == 1 and models <= set(LADDER)  # one tier answered: the stream never switches
    assert "def" in "".join(pieces)
    assert usage is not None and usage.completion_tokens == 24


def _primes(text: str) -> bool:
    numbers = [int(n) for n in re.findall(r"\d+", text)][:3]
    return len(set(numbers)) == 3 and all(n > 1 and all(n % d for d in range(2, n)) for n in numbers)


README_EXAMPLES: list[tuple[str, Callable[[str], bool]]] = [
    ("What is the capital of France?", lambda text: "Paris" in text),
    ("What is the capital of Italy?", lambda text: "Rome" in text),
    ("What is 7 times 8?", lambda text: "56" in text),
    ("Name three prime numbers.", _primes),
]


@pytest.mark.parametrize(("question", "right"), README_EXAMPLES, ids=[q for q, _ in README_EXAMPLES])
def test_the_readme_examples_are_answered_right_by_default_auto(
    client: openai.OpenAI, question: str, right: Callable[[str], bool]
) -> None:
    """The README's questions, as a new user asks them: model auto, the default ladder, temperature 0."""
    response = client.chat.completions.with_raw_response.create(
        model="auto", messages=_ask(question), max_tokens=64, temperature=0
    )
    completion = response.parse()
    text = completion.choices[0].message.content or ""
    assert right(text), (text, response.headers["x-groupqwen-model"], completion.model_extra)
    assert response.headers["x-groupqwen-model"] in LADDER


def test_logprobs_from_the_real_model(client: openai.OpenAI) -> None:
    completion = client.chat.completions.create(
        model=SMALL, messages=_ask("Say hello."), max_tokens=8, temperature=0, logprobs=True, top_logprobs=3
    )
    content = completion.choices[0].logprobs.content  # type: ignore[union-attr]
    assert content is not None and len(content) == completion.usage.completion_tokens  # type: ignore[union-attr]
    for item in content:
        assert item.logprob <= 0
        assert len(item.top_logprobs) == 3
        assert item.top_logprobs[0].logprob >= item.logprob - 1e-4  # greedy: the sampled token is the top one


def test_json_mode_gives_json(client: openai.OpenAI) -> None:
    completion = client.chat.completions.create(
        model=DEFAULT,
        messages=_ask("Give a JSON object with a key 'name' set to 'Ada'."),
        max_tokens=40,
        temperature=0,
        response_format={"type": "json_object"},
    )
    content = completion.choices[0].message.content or ""
    if completion.choices[0].finish_reason == "stop":
        assert isinstance(json.loads(content), dict)
    else:
        assert content.lstrip().startswith("{")


def test_responses_api_remembers_the_conversation(client: openai.OpenAI) -> None:
    """The Responses API on the real model: a stored response, continued by ``previous_response_id``."""
    first = client.responses.create(
        model=DEFAULT, input="My name is Ada. Reply with one word: OK.", max_output_tokens=8, temperature=0
    )
    assert first.status in ("completed", "incomplete") and first.output_text
    events = list(
        client.responses.create(
            model=DEFAULT,
            input="What is my name? Answer with the name only.",
            previous_response_id=first.id,
            max_output_tokens=8,
            temperature=0,
            stream=True,
        )
    )
    done = events[-1]
    assert done.type in ("response.completed", "response.incomplete")
    streamed = "".join(e.delta for e in events if e.type == "response.output_text.delta")
    assert streamed == done.response.output_text
    assert "Ada" in streamed


def test_text_completion_continues_the_prompt(client: openai.OpenAI) -> None:
    """``/v1/completions`` on the real model: the prompt continued as written (no chat template)."""
    prompt = "def add(a, b):\n    return"
    completion = client.completions.create(model=DEFAULT, prompt=prompt, max_tokens=6, temperature=0)
    text = completion.choices[0].text
    assert "a + b" in text or "a+b" in text, text
    streamed = client.completions.create(
        model=DEFAULT, prompt=prompt, max_tokens=6, temperature=0, stream=True
    )
    assert "".join(c.choices[0].text for c in streamed if c.choices) == text


def test_context_overflow_is_a_clear_400(client: openai.OpenAI) -> None:
    with pytest.raises(openai.BadRequestError) as info:
        client.chat.completions.create(model=SMALL, messages=_ask("word " * 3000), max_tokens=8)
    assert info.value.code == "context_length_exceeded"


def test_disconnect_mid_stream_frees_the_model(server: str, client: openai.OpenAI) -> None:
    body = {
        "model": SMALL,
        "messages": _ask("Count from 1 to 1000, one number per line."),
        "max_tokens": 900,
        "temperature": 0,
        "stream": True,
    }
    with httpx.stream("POST", server + "/v1/chat/completions", json=body, timeout=60) as response:
        assert response.status_code == 200
        lines = response.iter_lines()
        for _ in range(6):
            next(lines)
    # The client is gone: the generation must stop and the model's slot come free.
    deadline = time.monotonic() + 10
    while True:
        models = httpx.get(server + "/v1/models", timeout=5).json()["data"]
        state = next(m for m in models if m["id"] == SMALL)["groupqwen"]
        if state["active_requests"] == 0:
            break
        assert time.monotonic() < deadline, "the model was still busy 10 s after the client left"
        time.sleep(0.05)
    completion = client.chat.completions.create(model=SMALL, messages=_ask("Hi"), max_tokens=4, temperature=0)
    assert completion.choices[0].message.content is not None


def test_bad_input_leaves_the_server_serving(server: str, client: openai.OpenAI) -> None:
    bad_bodies = [
        b"{not json",
        b"\xff\xfe\x00garbage",
        json.dumps({"model": SMALL, "messages": "hi"}).encode(),
        json.dumps({"model": SMALL, "messages": []}).encode(),
        json.dumps({"model": SMALL, "messages": _ask("hi"), "stop": [str(i) for i in range(100)]}).encode(),
        b'{"model": "x", "messages": [' + b'{"role": "user", "content": "aaaa"},' * 300_000 + b"]}",
    ]
    for body in bad_bodies:
        response = httpx.post(
            server + "/v1/chat/completions", content=body, headers={"content-type": "application/json"}
        )
        assert 400 <= response.status_code < 500, response.text
        error = response.json()["error"]
        assert error["message"] and error["type"] == "invalid_request_error"
    completion = client.chat.completions.create(model=SMALL, messages=_ask("Hi"), max_tokens=4, temperature=0)
    assert completion.choices[0].message.content is not None


def test_langchain_bind_tools_loop(server: str) -> None:
    """An agent framework's tool loop against the real server: LangChain's ``bind_tools`` gets a call it
    can run, the result goes back as a ``ToolMessage``, and the model answers from it (asked without
    tools: this small model would call again)."""
    from langchain_core.messages import HumanMessage, ToolMessage
    from langchain_core.tools import tool
    from langchain_openai import ChatOpenAI

    @tool
    def get_weather(city: str) -> str:
        """Get the current weather in a city."""
        return f"31 C and sunny in {city}"

    llm = ChatOpenAI(
        model=DEFAULT, base_url=server + "/v1", api_key="unused", temperature=0, max_tokens=48, timeout=120
    )
    messages: list[Any] = [HumanMessage("What is the weather in Paris?")]
    called = llm.bind_tools([get_weather]).invoke(messages)
    assert [(c["name"], c["args"]) for c in called.tool_calls] == [("get_weather", {"city": "Paris"})]
    messages.append(called)
    for call in called.tool_calls:
        messages.append(ToolMessage(get_weather.invoke(call["args"]), tool_call_id=call["id"]))
    final = llm.invoke(messages)
    assert not final.tool_calls and "31" in str(final.content)
