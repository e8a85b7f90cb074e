"""The cache's embedding threads (``cache/embedding.py``): texts queue in order, each embedded alone (its
own vector, bit for bit the one ``embed`` gives it alone), a second thread takes a text while the first
is busy, a text whose waiter left is never embedded, errors reach the waiter, and lookups in different
scopes never share an answer."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Sequence

import numpy as np
import pytest

from groupqwen.cache.embedders import HashingEmbedder, MiniLMEmbedder, Vectors
from groupqwen.cache.embedding import EmbeddingThreads
from groupqwen.cache.semantic import SemanticCache
from groupqwen.errors import EmbedderUnavailable
from groupqwen.messages import ChatRequest, Completion, Message, Sampling, Usage

from .helpers import embedded_store, policy


class Gated:
    """MiniLM whose embedding of ``held`` waits until ``release`` is set (so that the texts asked after it
    queue behind it); records every text it embeds and the thread it ran on."""

    def __init__(self, inner: MiniLMEmbedder, held: str | None = None) -> None:
        self.inner, self.held = inner, held
        self.name, self.dim = inner.name, inner.dim
        self.entered, self.release = threading.Event(), threading.Event()
        self.texts: list[str] = []
        self.threads: list[threading.Thread] = []

    def embed(self, texts: Sequence[str]) -> Vectors:
        self.texts.extend(texts)
        self.threads.append(threading.current_thread())
        if self.held in texts:
            self.entered.set()
            assert self.release.wait(60), "the test never released the held embedding"
        return self.inner.embed(texts)

    def count_tokens(self, texts: Sequence[str]) -> int | None:
        return self.inner.count_tokens(texts)

    def close(self) -> None:
        pass


async def entered(gated: Gated) -> None:
    """Wait (off the loop) until the thread is inside the held embedding."""
    assert await asyncio.to_thread(gated.entered.wait, 60)


async def test_queued_texts_each_get_their_own_vector_in_order(minilm: MiniLMEmbedder) -> None:
    texts = [
        "How tall is Mount Everest?",
        "How deep is the Mariana Trench?",
        "What is the capital of France?",
    ]
    gated = Gated(minilm, held="hold")
    thread = EmbeddingThreads(gated, threads=1)
    first = asyncio.ensure_future(thread.embed("hold"))
    await entered(gated)
    queued = [asyncio.ensure_future(thread.embed(t)) for t in texts]  # all wait behind the held one
    await asyncio.sleep(0)
    gated.release.set()
    vectors = await asyncio.gather(*queued)
    await first
    for text, vector in zip(texts, vectors, strict=True):
        assert np.array_equal(vector, minilm.embed([text])[0])  # alone: never a padded batch
    assert gated.texts == ["hold", *texts]  # in the order asked
    assert len(set(gated.threads)) == 1 and gated.threads[0] is not threading.current_thread()
    thread.close()


async def test_a_second_thread_takes_a_text_while_the_first_is_busy(minilm: MiniLMEmbedder) -> None:
    gated = Gated(minilm, held="hold")
    threads = EmbeddingThreads(gated, threads=2)
    first = asyncio.ensure_future(threads.embed("hold"))
    await entered(gated)
    vector = await threads.embed("How tall is Mount Everest?")  # answered while "hold" still runs
    assert not first.done()
    gated.release.set()
    await first
    assert np.array_equal(vector, minilm.embed(["How tall is Mount Everest?"])[0])
    assert len(set(gated.threads)) == 2
    threads.close()


async def test_a_text_whose_waiter_left_is_not_embedded(minilm: MiniLMEmbedder) -> None:
    gated = Gated(minilm, held="hold")
    thread = EmbeddingThreads(gated, threads=1)
    first = asyncio.ensure_future(thread.embed("hold"))
    await entered(gated)
    abandoned = asyncio.ensure_future(thread.embed("nobody waits for this"))
    kept = asyncio.ensure_future(thread.embed("How tall is Mount Everest?"))
    await asyncio.sleep(0)
    abandoned.cancel()  # the lookup's timeout, or the client leaving
    gated.release.set()
    await first
    assert np.array_equal(await kept, minilm.embed(["How tall is Mount Everest?"])[0])
    assert abandoned.cancelled()
    assert gated.texts == ["hold", "How tall is Mount Everest?"]
    thread.close()


class Failing:
    name, dim = "failing", 384

    def embed(self, texts: Sequence[str]) -> Vectors:
        raise EmbedderUnavailable("the embedding server is down")

    def count_tokens(self, texts: Sequence[str]) -> int | None:
        return None

    def close(self) -> None:
        pass


async def test_the_embedders_error_reaches_the_waiter() -> None:
    thread = EmbeddingThreads(Failing())
    with pytest.raises(EmbedderUnavailable, match="down"):
        await thread.embed("anything")
    thread.close()


async def test_close_ends_the_thread_and_a_later_embedding_starts_another(minilm: MiniLMEmbedder) -> None:
    gated = Gated(minilm)
    thread = EmbeddingThreads(gated)
    before = await thread.embed("How tall is Mount Everest?")
    thread.close()
    first = gated.threads[-1]
    await asyncio.to_thread(first.join, 60)
    assert not first.is_alive()
    after = await thread.embed("How tall is Mount Everest?")
    assert np.array_equal(before, after) and gated.threads[-1] is not first
    thread.close()


async def test_texts_arriving_while_idle_threads_end_are_all_embedded() -> None:
    """A text queued without the lock, while an idle thread decides to end (``idle_s`` near zero: the
    threads end all the time), is embedded all the same: by that thread, or by one started for it."""
    embedder = HashingEmbedder()
    threads = EmbeddingThreads(embedder, threads=2, idle_s=1e-4)
    texts = [f"question {n}" for n in range(300)]
    for n, text in enumerate(texts):
        if n % 3 == 0:
            await asyncio.to_thread(time.sleep, 1e-4)  # let the idle threads reach their end
        got = await asyncio.wait_for(threads.embed(text), 60)  # a lost text would wait for ever
        assert np.array_equal(got, embedder.embed([text])[0])
    batch = await asyncio.wait_for(asyncio.gather(*(threads.embed(t) for t in texts[:50])), 60)
    assert all(np.array_equal(v, embedder.embed([t])[0]) for v, t in zip(batch, texts, strict=False))
    threads.close()


def ask(text: str) -> ChatRequest:
    return ChatRequest(messages=(Message("user", text),), model="m", sampling=Sampling(temperature=0.0))


async def test_concurrent_lookups_in_other_scopes_never_share_an_answer(minilm: MiniLMEmbedder) -> None:
    """Two tenants' lookups of the same paraphrase queue together on the thread: only the tenant that
    stored the answer gets it, each lookup carries its own text's vector."""
    gated = Gated(minilm)
    cache = SemanticCache(embedded_store(minilm.dim), gated, policy())
    for tenant, question, reply in [("a", "France", "Paris."), ("b", "Spain", "Madrid.")]:  # both hold one
        stored = await cache.lookup(ask(f"What is the capital of {question}?"), tenant, "m")
        cache.store(stored, "m", Completion(reply, "", "stop", Usage(5, 2)), None)
    assert await cache.drain()
    gated.held, gated.texts = "how tall is mount everest?", []
    first = asyncio.ensure_future(cache.lookup(ask("How tall is Mount Everest?"), "a", "m"))
    await entered(gated)
    paraphrase = "Which city is the capital of France?"
    lookups = [asyncio.ensure_future(cache.lookup(ask(paraphrase), tenant, "m")) for tenant in "ab"]
    await asyncio.sleep(0)
    gated.release.set()
    hit, miss = await asyncio.gather(*lookups)
    assert (await first).status == "miss"
    assert hit.status == "hit" and hit.completion().content == "Paris."
    assert miss.status == "miss" and miss.entry is None
    expected = minilm.embed([paraphrase.lower()])[0]
    assert hit.vector is not None and np.array_equal(hit.vector, expected)
    assert miss.vector is not None and np.array_equal(miss.vector, expected)
    assert gated.texts == ["how tall is mount everest?", paraphrase.lower(), paraphrase.lower()]
    await cache.close()
