"""``Pipeline.run``, the orchestrator's one entry point: decide → exact cache → semantic cache (started
beside a warm model's generation) → cascade → background store; the answer's outcome on the ``Answer``,
errors before the first delta raised from ``run``, the request's trace marked by the pipeline."""

from __future__ import annotations

import asyncio
import gc
import sys
from collections.abc import AsyncGenerator, AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from groupqwen.backends.fake import FakeBackend
from groupqwen.cache import CachePolicy, EmbeddedStore, HashingEmbedder, SemanticCache
from groupqwen.cache.embedders import Vectors
from groupqwen.config import CacheConfig
from groupqwen.errors import BackendError, ContextLengthExceeded, ModelNotFound
from groupqwen.messages import ChatRequest, Message, Sampling
from groupqwen.orchestrator.answer import Answer, RequestContext
from groupqwen.orchestrator.pipeline import Pipeline
from groupqwen.pool.scheduler import Pool
from groupqwen.telemetry.timing import Trace
from groupqwen.testing import fake_services, fake_settings

REPLY = "Paris is the capital of France."
CONTEXT = RequestContext(tenant="t")


class Watching(HashingEmbedder):
    """The fake embedder, noting at each embedding how many generations the backend had been asked for."""

    def __init__(self, backend: FakeBackend) -> None:
        super().__init__()
        self.backend = backend
        self.generations_seen: list[int] = []

    def embed(self, texts: Sequence[str]) -> Vectors:
        self.generations_seen.append(len(self.backend.requests))
        return super().embed(texts)


@dataclass
class Setup:
    pipeline: Pipeline
    backend: FakeBackend
    cache: SemanticCache
    embedder: Watching
    pool: Pool


@asynccontextmanager
async def setup(
    tmp_path: Path, *, overlap: bool = True, cached: bool = True, **backend: object
) -> AsyncIterator[Setup]:
    fake = FakeBackend(model_id="fake", tokens=[f"{w} " for w in REPLY.split()], **backend)  # type: ignore[arg-type]
    overlapping = "always" if overlap else "never"
    settings = fake_settings(
        tmp_path,
        data_dir=tmp_path,
        cache={"backend": "embedded" if cached else "off", "overlap": overlapping},
    )
    embedder = Watching(fake)
    config = CacheConfig(threshold=0.75, timeout_s=10)  # the hashing embedder knows no synonyms
    store = EmbeddedStore(None, embedder.dim, max_entries=config.max_entries)
    cache = SemanticCache(store, embedder, CachePolicy.from_config(config))
    services = fake_services(settings, fake, cache=cache if cached else None)
    try:
        yield Setup(services.pipeline, fake, cache, embedder, services.pool)
    finally:
        await services.close()
        if not cached:
            await cache.close()


def ask(question: str, model: str = "fake", **sampling: object) -> ChatRequest:
    return ChatRequest(
        messages=(Message("user", question),),
        model=model,
        sampling=Sampling(temperature=0.0, **sampling),  # type: ignore[arg-type]
    )


async def settled(condition: Callable[[], bool], turns: int = 1000) -> None:
    """Let the loop run until ``condition`` holds (background work of the pipeline, no timers)."""
    for _ in range(turns):
        if condition():
            return
        await asyncio.sleep(0)
    raise AssertionError("never settled")


async def test_a_miss_is_generated_then_stored_in_the_background(tmp_path: Path) -> None:
    async with setup(tmp_path) as s:
        answer = await s.pipeline.run(ask("What is the capital of France?"), CONTEXT)
        assert answer.cache is not None and answer.cache.status == "miss"
        assert (answer.decision.model, answer.decision.route) == ("fake", "explicit")
        completion = await answer.collect()
        assert completion.content == REPLY + " " and completion.finish_reason == "stop"
        assert await s.cache.drain()  # the write was scheduled, not awaited by the answer
        again = await s.pipeline.run(ask("what is the capital of France"), CONTEXT)
        assert again.cache is not None and again.cache.status == "hit"
        assert (again.decision.model, again.decision.route) == ("fake", "cache")
        assert (await again.collect()).content == REPLY + " "
    assert len(s.backend.requests) == 1


async def test_a_hit_streams_the_stored_answer_and_a_bypass_is_generated(tmp_path: Path) -> None:
    async with setup(tmp_path) as s:
        await (await s.pipeline.run(ask("What is the capital of France?"), CONTEXT)).collect()
        await s.cache.drain()
        hit = await s.pipeline.run(ask("What is the capital of France?"), CONTEXT)
        deltas = [d async for d in hit]
        assert "".join(d.content for d in deltas) == REPLY + " "
        assert deltas[-1].finish_reason == "stop" and deltas[-1].usage is not None
        unread = RequestContext(tenant="t", read_cache=False)
        fresh = await s.pipeline.run(ask("What is the capital of France?"), unread)
        assert fresh.cache is not None and fresh.cache.status == "bypass"
        await fresh.collect()
        other = await s.pipeline.run(ask("What is the capital of France?"), RequestContext(tenant="u"))
        assert other.cache is not None and other.cache.status == "miss"  # tenants do not share
        await other.aclose()
    assert len(s.backend.requests) == 3


async def test_a_semantic_hit_abandons_the_generation_started_for_a_warm_model(tmp_path: Path) -> None:
    async with setup(tmp_path) as s:
        await (await s.pipeline.run(ask("What is the capital of France?"), CONTEXT)).collect()
        await s.cache.drain()
        near = await s.pipeline.run(ask("Tell me: what is the capital of France?"), CONTEXT)
        assert near.cache is not None and near.cache.status == "hit" and near.cache.similarity is not None
        assert near.decision.route == "cache"
        assert (await near.collect()).content == REPLY + " "
        # the loaded model was asked to generate before the embedding, and that generation is abandoned
        assert s.embedder.generations_seen[-1] == 2
        await settled(lambda: s.backend.cancelled == 1 and s.backend.active == 0)


async def test_without_overlap_the_semantic_layer_answers_before_any_generation(tmp_path: Path) -> None:
    async with setup(tmp_path, overlap=False) as s:
        await (await s.pipeline.run(ask("What is the capital of France?"), CONTEXT)).collect()
        await s.cache.drain()
        near = await s.pipeline.run(ask("Tell me: what is the capital of France?"), CONTEXT)
        assert near.cache is not None and near.cache.status == "hit"
        await near.collect()
        miss = await s.pipeline.run(ask("How tall is Mount Everest?"), CONTEXT)
        await miss.collect()
    assert s.embedder.generations_seen[-2:] == [1, 1]  # the hit's and the miss's lookups: nothing started
    assert len(s.backend.requests) == 2 and s.backend.cancelled == 0


@pytest.mark.parametrize(
    ("request_", "backend", "error"),
    [
        (ask("hi", model="nope"), {}, ModelNotFound),
        (ask("hi", model="auto:nope"), {}, ModelNotFound),  # no such route
        (ask("hi"), {"fail_after": 0}, BackendError),
        (ask("hi", max_tokens=10_000), {"n_ctx": 64}, ContextLengthExceeded),
    ],
    ids=["unknown-model", "unknown-route", "backend-fails", "too-long"],
)
async def test_errors_before_the_first_delta_raise_from_run(
    tmp_path: Path, request_: ChatRequest, backend: dict[str, object], error: type[Exception]
) -> None:
    async with setup(tmp_path, **backend) as s:
        with pytest.raises(error):
            await s.pipeline.run(request_, CONTEXT)
        assert s.backend.active == 0  # nothing left running


async def test_an_error_after_the_first_delta_is_raised_while_reading(tmp_path: Path) -> None:
    async with setup(tmp_path, fail_after=2) as s:
        answer = await s.pipeline.run(ask("What is the capital of France?"), CONTEXT)
        with pytest.raises(BackendError):
            await answer.collect()
        assert s.backend.active == 0
        assert await s.cache.drain() and (await s.cache.stats()).entries == 0  # a failure is not stored


async def test_closing_an_answer_stops_its_generation(tmp_path: Path) -> None:
    async with setup(tmp_path, cached=False) as s:
        answer = await s.pipeline.run(ask("What is the capital of France?"), CONTEXT)
        assert answer.cache is None  # no cache configured
        assert isinstance(answer, Answer) and (await anext(answer)).content == "Paris "
        await answer.aclose()
        assert s.backend.cancelled == 1 and s.backend.active == 0


async def test_the_pipeline_marks_the_request_trace(tmp_path: Path) -> None:
    async with setup(tmp_path) as s:
        trace = Trace("miss").activate()
        answer = await s.pipeline.run(ask("What is the capital of France?"), CONTEXT)
        assert (trace.model, trace.route, trace.cache) == ("fake", "explicit", "miss")
        first = trace.first_token_at
        assert first is not None and trace.queue_wait is not None
        assert (trace.prompt_tokens, trace.completion_tokens) == (0, 0)  # known with the last delta
        completion = await answer.collect()
        assert trace.first_token_at == first  # marked once
        usage = completion.usage
        assert (trace.prompt_tokens, trace.completion_tokens) == (
            usage.prompt_tokens,
            usage.completion_tokens,
        )
        await s.cache.drain()

        hit_trace = Trace("hit").activate()
        hit = await s.pipeline.run(ask("What is the capital of France?"), CONTEXT)
        await hit.collect()
        assert (hit_trace.model, hit_trace.route, hit_trace.cache) == ("fake", "cache", "hit")
        assert hit_trace.first_token_at is not None and hit_trace.queue_wait is None  # no model leased
        assert hit_trace.completion_tokens == usage.completion_tokens
        assert (trace.route, trace.cache) == ("explicit", "miss")  # the first request's trace is its own


async def test_without_a_trace_the_pipeline_marks_nothing(tmp_path: Path) -> None:
    async with setup(tmp_path, cached=False) as s:
        trace = Trace("outside")  # not made current
        answer = await s.pipeline.run(ask("What is the capital of France?"), CONTEXT)
        await answer.collect()
        assert (trace.model, trace.cache, trace.first_token_at) == ("none", "bypass", None)


@pytest.mark.parametrize("cached", [False, True])  # with the cache, a miss's generation starts ahead
async def test_an_answer_read_to_its_end_leaves_no_generator_to_the_loop(
    tmp_path: Path, cached: bool
) -> None:
    """A generator dropped unfinished is closed by the event loop's finalizer hook, which schedules a
    task for it (uvloop: and wakes itself through its eventfd): three syscalls and a task per request.
    Every layer of an answer is closed by the layer above it instead."""
    hooks = sys.get_asyncgen_hooks()
    left: list[str] = []

    def finalizer(generator: AsyncGenerator[Any, Any]) -> None:
        left.append(repr(generator))
        assert hooks.finalizer is not None
        hooks.finalizer(generator)

    sys.set_asyncgen_hooks(firstiter=hooks.firstiter, finalizer=finalizer)
    try:
        async with setup(tmp_path, cached=cached) as s:
            answer = await s.pipeline.run(ask("What is the capital of France?"), CONTEXT)
            assert answer.cache is None or answer.cache.status == "miss"
            assert (await answer.collect()).content == REPLY + " "
            del answer
            gc.collect()
    finally:
        sys.set_asyncgen_hooks(*hooks)
    assert left == []
