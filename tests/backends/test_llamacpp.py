"""``LlamaCppBackend`` with real bundled models (SmolLM2-135M, and Qwen2.5-Coder-0.5B once), one thread."""

from __future__ import annotations

import asyncio
import json
import re
import threading
from collections.abc import AsyncIterator
from dataclasses import replace
from pathlib import Path

import pytest

from groupqwen.backends.base import Backend
from groupqwen.backends.llamacpp import LlamaCppBackend
from groupqwen.backends.text import StopFilter
from groupqwen.catalog import ModelSpec, builtin_catalog
from groupqwen.config import load_settings
from groupqwen.errors import BackendError, ContextLengthExceeded, InvalidRequest, ModelLoadError
from groupqwen.messages import Chunk, GenerationRequest, Message, ResponseFormat, Sampling
from groupqwen.pool.bundled import ensure_bundled

pytestmark = pytest.mark.integration

QUESTION = (Message("user", "What is the capital of France?"),)


def _bundled(model_id: str) -> ModelSpec:
    spec = builtin_catalog()[model_id]
    return replace(spec, path=ensure_bundled(spec, load_settings().models_dir))


@pytest.fixture(scope="module")
def smol() -> ModelSpec:
    return _bundled("smollm2-135m")


@pytest.fixture
async def backend(smol: ModelSpec) -> AsyncIterator[LlamaCppBackend]:
    b = LlamaCppBackend(smol, n_ctx=512, n_threads=1)
    await b.load()
    yield b
    await b.close()


def _request(
    messages: tuple[Message, ...] = QUESTION,
    *,
    logprobs: bool = False,
    top_logprobs: int = 0,
    response_format: ResponseFormat | None = None,
    **sampling: object,
) -> GenerationRequest:
    options: dict[str, object] = {"temperature": 0.0, "max_tokens": 24, **sampling}
    return GenerationRequest(
        messages=messages,
        sampling=Sampling(**options),  # type: ignore[arg-type]
        logprobs=logprobs,
        top_logprobs=top_logprobs,
        response_format=response_format,
    )


async def _collect(backend: LlamaCppBackend, request: GenerationRequest) -> list[Chunk]:
    return [chunk async for chunk in backend.stream(request)]


def _text(chunks: list[Chunk]) -> str:
    return "".join(c.text for c in chunks)


def _workers() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name.startswith("llamacpp-")]


async def test_is_a_backend(backend: LlamaCppBackend) -> None:
    assert isinstance(backend, Backend)
    assert backend.model_id == "smollm2-135m"


async def test_answers_with_usage_and_a_logprob_per_token(backend: LlamaCppBackend) -> None:
    chunks = await _collect(backend, _request(top_logprobs=3))
    *tokens, last = chunks
    assert _text(chunks).strip()
    assert "\ufffd" not in _text(chunks)
    assert last.finish_reason in ("stop", "length")
    assert last.usage is not None
    assert last.usage.prompt_tokens > 10
    assert last.usage.completion_tokens == len(tokens) > 0
    assert all(len(c.logprobs) == 1 for c in tokens)
    raw = b"".join(bytes(c.logprobs[0].bytes) for c in tokens)
    assert raw.decode("utf-8") == _text(chunks)
    for chunk in tokens:
        lp = chunk.logprobs[0]
        assert lp.logprob <= 0.0
        assert len(lp.top) == 3
        assert [t.logprob for t in lp.top] == sorted((t.logprob for t in lp.top), reverse=True)
        # temperature 0: the sampled token is the most likely one
        assert lp.top[0].bytes == lp.bytes
        assert lp.top[0].logprob == pytest.approx(lp.logprob, abs=1e-6)


async def test_logprobs_come_without_top_when_not_asked(backend: LlamaCppBackend) -> None:
    chunks = await _collect(backend, _request(max_tokens=4, logprobs=True))
    assert all(len(c.logprobs) == 1 and c.logprobs[0].top == () for c in chunks[:-1])
    assert all(c.logprobs[0].logprob <= 0.0 for c in chunks[:-1])


async def test_no_logprobs_are_computed_unless_asked(backend: LlamaCppBackend) -> None:
    chunks = await _collect(backend, _request(max_tokens=4))
    assert _text(chunks) and all(c.logprobs == () for c in chunks)


async def test_max_tokens_finishes_with_length(backend: LlamaCppBackend) -> None:
    chunks = await _collect(backend, _request(max_tokens=3))
    assert chunks[-1].finish_reason == "length"
    assert chunks[-1].usage is not None
    assert chunks[-1].usage.completion_tokens == 3


async def test_without_max_tokens_the_context_is_the_limit(smol: ModelSpec) -> None:
    b = LlamaCppBackend(smol, n_ctx=64, n_threads=1)
    try:
        ask = (Message("user", "Count from 1 to 100, separated by commas."),)
        last = (await _collect(b, _request(ask, max_tokens=None)))[-1]
    finally:
        await b.close()
    assert last.finish_reason == "length"
    assert last.usage is not None
    assert last.usage.total_tokens == 64


async def test_stop_string_is_never_emitted(backend: LlamaCppBackend) -> None:
    full = _text(await _collect(backend, _request()))
    words = full.split()
    assert len(words) >= 3, full
    stop = words[2]
    chunks = await _collect(backend, _request(stop=(stop,)))
    text = _text(chunks)
    assert stop not in text
    assert text == full[: full.index(stop)]
    assert chunks[-1].finish_reason == "stop"


async def test_prompt_too_long_raises_before_anything(backend: LlamaCppBackend) -> None:
    long = (Message("user", "word " * 600),)
    with pytest.raises(ContextLengthExceeded) as info:
        await _collect(backend, _request(long))
    assert info.value.param == "messages"
    assert "512" in str(info.value)


async def test_prompt_plus_max_tokens_too_long(backend: LlamaCppBackend) -> None:
    with pytest.raises(ContextLengthExceeded, match=r"512.*1000"):
        await _collect(backend, _request(max_tokens=1000))
    assert not backend._lock.locked()  # and the model is free again
    assert _text(await _collect(backend, _request(max_tokens=2)))


async def test_json_object_gives_json(backend: LlamaCppBackend) -> None:
    ask = (Message("user", 'Reply with JSON like {"city": "..."}: the capital of France?'),)
    chunks = await _collect(
        backend, _request(ask, max_tokens=24, response_format=ResponseFormat(type="json_object"))
    )
    assert chunks[-1].finish_reason == "stop"
    assert isinstance(json.loads(_text(chunks)), dict)


async def test_json_schema_is_enforced(backend: LlamaCppBackend) -> None:
    schema = {
        "type": "object",
        "properties": {"answer": {"type": "integer"}},
        "required": ["answer"],
        "additionalProperties": False,
    }
    ask = (Message("user", "What is 2 + 2? Answer in JSON."),)
    fmt = ResponseFormat(type="json_schema", schema=schema)
    chunks = await _collect(backend, _request(ask, response_format=fmt))
    value = json.loads(_text(chunks))
    assert isinstance(value["answer"], int)


async def test_unusable_schema_is_an_invalid_request(backend: LlamaCppBackend) -> None:
    fmt = ResponseFormat(type="json_schema", schema={"$ref": "#/definitions/missing"})
    with pytest.raises(InvalidRequest) as info:
        await _collect(backend, _request(response_format=fmt))
    assert info.value.param == "response_format"


async def test_same_seed_same_text(backend: LlamaCppBackend) -> None:
    story = (Message("user", "Tell me a short story about a cat."),)
    texts = [_text(await _collect(backend, _request(story, temperature=0.8, seed=s))) for s in (7, 8, 7, 9)]
    assert texts[0] == texts[2]
    assert len(set(texts)) > 1  # and the seed does matter


async def test_a_seeded_answer_does_not_depend_on_the_request_before() -> None:
    """llama.cpp's logits for a prompt depend on how its tokens were evaluated (Qwen2.5-Coder-0.5B's
    Q4_K_M: the last one alone, as after the same prompt, moves them by up to 0.23 from a batch): a seeded
    request evaluates its whole prompt itself, so the same request gives the same tokens and logprobs
    whatever came before it (on the gateway, "Say a color" with seed 1 answered "Hello! How may I" or
    "Sorry, but as an" by turns)."""
    b = LlamaCppBackend(_bundled("qwen2.5-coder-0.5b"), n_ctx=512, n_threads=1)
    color = (Message("user", "Say a color"),)
    seeded = _request(color, temperature=0.7, seed=1, max_tokens=4, logprobs=True)
    runs = []
    try:
        for before in (QUESTION, color, None):  # another prompt, the same prompt unseeded, itself
            if before is not None:
                await _collect(b, _request(before, temperature=0.7, max_tokens=4))
            chunks = await _collect(b, seeded)
            runs.append((_text(chunks), [t.logprob for c in chunks for t in c.logprobs]))
    finally:
        await b.close()
    assert runs[1] == runs[0] and runs[2] == runs[0]


async def test_a_seeded_request_reuses_whole_batches_only(monkeypatch: pytest.MonkeyPatch) -> None:
    """A seeded request reuses the cached prefix in whole batches evaluated from the first token (batches
    of 16 here, to see it on short prompts), never the part an unseeded request or an answer evaluated:
    the same answer after any history, with the shared batches not evaluated again."""
    monkeypatch.setattr("groupqwen.backends.llamacpp.N_BATCH", 16)
    b = LlamaCppBackend(_bundled("qwen2.5-coder-0.5b"), n_ctx=512, n_threads=1)
    system = Message("system", "You are a helpful assistant who answers in one short sentence.")
    color, story = (system, Message("user", "Say a color")), (system, Message("user", "Tell a story"))
    seeded = _request(color, temperature=0.7, seed=1, max_tokens=4, logprobs=True)
    runs, reused = [], []
    try:
        await b.load()
        loaded = b._model
        assert loaded is not None and loaded.llm.n_batch == 16
        for before in ((), (color,), (story,), (story, color)):  # the same prompt, a shared system prompt
            for messages in before:
                await _collect(b, _request(messages, temperature=0.7, max_tokens=4))
            reused.append(loaded.whole_batches)
            chunks = await _collect(b, seeded)
            runs.append((_text(chunks), [t.logprob for c in chunks for t in c.logprobs]))
            assert loaded.whole_batches == chunks[-1].usage.prompt_tokens // 16 * 16  # type: ignore[union-attr]
        story_after = await _collect(b, _request(story, temperature=0.7, seed=2, max_tokens=4))
        assert story_after[-1].usage is not None
        assert loaded.whole_batches == story_after[-1].usage.prompt_tokens // 16 * 16 > 0
        chunks = await _collect(b, seeded)  # after a seeded request sharing the system prompt's batches
        runs.append((_text(chunks), [t.logprob for c in chunks for t in c.logprobs]))
    finally:
        await b.close()
    assert all(run == runs[0] for run in runs), runs
    assert reused[0] == 0 and reused[1] > 0  # the seeded run's batches, kept by the unseeded one after it


def test_whole_batches_reused_give_the_logits_of_the_prompt_alone() -> None:
    """``eval_prompt`` with ``whole_batches``: after another prompt sharing the first 50 tokens, 48 of them
    (3 batches of 16) are reused and the logits are bit for bit those of the prompt evaluated alone."""
    import llama_cpp
    import numpy as np

    from groupqwen.backends.llamacpp import eval_prompt

    spec = _bundled("qwen2.5-coder-0.5b")
    llm = llama_cpp.Llama(model_path=str(spec.path), n_ctx=256, n_batch=16, n_threads=1, verbose=False)
    never = threading.Event()

    def logits() -> list[float]:
        row = llama_cpp.llama_get_logits_ith(llm.ctx, -1)
        return list(np.ctypeslib.as_array(row, shape=(llm.n_vocab(),)))

    try:
        words = llm.tokenize(b" ".join(b"word%d" % i for i in range(40)))
        first, second = words[:50] + words[60:70], words[:50] + words[70:80]
        assert eval_prompt(llm, second, never, whole_batches=0) == 0
        alone = logits()
        assert eval_prompt(llm, first, never, whole_batches=0) == 0
        assert eval_prompt(llm, second, never, whole_batches=len(first) // 16 * 16) == 48
        assert logits() == alone
    finally:
        llm.close()


async def test_closing_the_stream_stops_the_worker(backend: LlamaCppBackend) -> None:
    stream = backend.stream(_request(max_tokens=None))
    assert isinstance(stream, AsyncIterator)
    first = [await anext(stream), await anext(stream)]
    assert all(c.finish_reason is None for c in first)
    await stream.aclose()  # type: ignore[attr-defined]
    assert not backend._lock.locked()  # released by the worker, once its job has left llama.cpp
    chunks = await asyncio.wait_for(_collect(backend, _request(max_tokens=4)), timeout=60)
    assert chunks[-1].finish_reason == "length"


async def test_cancelling_the_consumer_frees_the_model(backend: LlamaCppBackend) -> None:
    got = asyncio.Event()

    async def consume() -> None:
        async for _ in backend.stream(_request(max_tokens=None)):
            got.set()

    task = asyncio.create_task(consume())
    await asyncio.wait_for(got.wait(), timeout=60)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    chunks = await asyncio.wait_for(_collect(backend, _request(max_tokens=2)), timeout=60)
    assert chunks[-1].usage is not None


async def test_one_worker_thread_per_model_until_closed(smol: ModelSpec) -> None:
    """llama.cpp's OpenMP team belongs to the calling thread: every request runs on the same one."""
    before = set(_workers())
    backend = LlamaCppBackend(smol, n_ctx=512, n_threads=1)
    for _ in range(3):
        await _collect(backend, _request(max_tokens=2))
    workers = set(_workers()) - before
    assert len(workers) == 1
    await backend.close()
    for worker in workers:
        worker.join(timeout=5)
        assert not worker.is_alive()
    await _collect(backend, _request(max_tokens=1))  # a closed backend loads again on use
    await backend.close()


async def test_close_during_a_stream_ends_it_with_an_error(backend: LlamaCppBackend) -> None:
    stream = backend.stream(_request(max_tokens=None))
    await anext(stream)
    closing = asyncio.create_task(backend.close())
    with pytest.raises(BackendError, match="cancelled"):
        async for _ in stream:
            pass
    await asyncio.wait_for(closing, timeout=60)
    assert not backend.loaded


async def test_prompt_that_opens_thinking_is_flagged(backend: LlamaCppBackend) -> None:
    model = backend._model
    assert model is not None
    original = model.template
    model.template = original.environment.from_string(
        "{% for m in messages %}<|im_start|>{{ m.role }}\n{{ m.content }}<|im_end|>\n{% endfor %}"
        "<|im_start|>assistant\n{% if enable_thinking %}<think>\n{% endif %}"
    )
    thinking = await _collect(backend, _request(max_tokens=2))
    plain = await _collect(backend, replace(_request(max_tokens=2), enable_thinking=False))
    assert thinking[0].prompt_opens_thinking
    assert not any(c.prompt_opens_thinking for c in thinking[1:])
    assert not any(c.prompt_opens_thinking for c in plain)


async def test_load_is_idempotent_and_concurrent_loads_load_once(smol: ModelSpec) -> None:
    b = LlamaCppBackend(smol, n_ctx=256, n_threads=1)
    await asyncio.gather(b.load(), b.load(), b.load())
    model = b._model
    await b.load()
    assert b._model is model is not None
    await b.close()
    await b.close()
    assert not b.loaded


async def test_missing_file_is_a_load_error(smol: ModelSpec, tmp_path: Path) -> None:
    path = tmp_path / "nope.gguf"
    b = LlamaCppBackend(replace(smol, path=path), n_ctx=256, n_threads=1)
    with pytest.raises(ModelLoadError, match=r"nope\.gguf"):
        await b.load()


async def test_corrupt_file_is_a_load_error(smol: ModelSpec, tmp_path: Path) -> None:
    for name, data in (("junk.gguf", bytes(range(256)) * 4), ("truncated.gguf", b"GGUF" + b"\x03" * 1020)):
        path = tmp_path / name
        path.write_bytes(data)
        b = LlamaCppBackend(replace(smol, path=path), n_ctx=256, n_threads=1)
        with pytest.raises(ModelLoadError, match=re.escape(name)):
            await b.load()


async def test_a_foreign_error_while_loading_leaves_as_a_load_error(
    smol: ModelSpec, monkeypatch: pytest.MonkeyPatch
) -> None:
    def unreadable(self: LlamaCppBackend) -> None:
        raise PermissionError("the file went away")

    monkeypatch.setattr(LlamaCppBackend, "_load_sync", unreadable)
    b = LlamaCppBackend(smol, n_ctx=256, n_threads=1)
    with pytest.raises(ModelLoadError, match=r"smollm2-135m.*PermissionError: the file went away") as info:
        await b.load()
    assert isinstance(info.value.__cause__, PermissionError)
    await b.close()


def test_stop_filter_holds_back_and_decodes_split_characters() -> None:
    f = StopFilter(("END",))
    assert f.feed(b"caf") == ("caf", False)
    e_acute = "é".encode()
    assert f.feed(e_acute[:1]) == ("", False)
    assert f.feed(e_acute[1:] + b" E") == ("é ", False)
    assert f.feed(b"N") == ("", False)
    assert f.feed(b"Dless") == ("", True)
    assert f.flush() == ""
    g = StopFilter(("END",))
    assert g.feed(b"a EN") == ("a ", False)
    assert g.feed(b"!") == ("EN!", False)
    assert g.feed(b" E") == (" ", False)
    assert g.flush() == "E"


async def test_default_model_qwen_answers() -> None:
    b = LlamaCppBackend(_bundled("qwen2.5-coder-0.5b"), n_ctx=512, n_threads=1)
    try:
        chunks = await _collect(b, _request(max_tokens=12))
    finally:
        await b.close()
    assert "Paris" in _text(chunks)
    assert chunks[-1].usage is not None
    assert chunks[-1].usage.completion_tokens == len(chunks) - 1
