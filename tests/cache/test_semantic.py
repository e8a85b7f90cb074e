"""SemanticCache over the embedded store with the real embedder: scoping, thresholds, TTL, admin."""

from __future__ import annotations

import sqlite3
from dataclasses import replace
from pathlib import Path
from typing import Literal

import pytest
from waiting import until

from groupqwen.cache import build_cache
from groupqwen.cache.embedders import HashingEmbedder, MiniLMEmbedder
from groupqwen.cache.semantic import SemanticCache
from groupqwen.cache.stores import Answer, CacheEntry, EmbeddedStore, Invalidation
from groupqwen.config import CacheConfig
from groupqwen.errors import CacheUnavailable
from groupqwen.messages import ChatRequest, Completion, ImagePart, Message, Sampling, Usage
from groupqwen.testing import FakeClock

from .helpers import DEFAULTS, embedded_store, policy


def ask(text: str, *, system: str | None = None, temperature: float = 0.0, **kw: object) -> ChatRequest:
    messages = ([Message("system", system)] if system else []) + [Message("user", text)]
    return ChatRequest(messages=tuple(messages), model="m", sampling=Sampling(temperature=temperature), **kw)  # type: ignore[arg-type]


def answer(text: str) -> Completion:
    return Completion(text, "", "stop", Usage(5, 3))


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def cache(minilm: MiniLMEmbedder, clock: FakeClock) -> SemanticCache:
    return SemanticCache(embedded_store(minilm.dim, clock=clock), minilm, policy(), clock=clock)


async def remember(
    cache: SemanticCache, request: ChatRequest, text: str, tenant: str = "t", ttl: float | None = None
) -> None:
    """Store an answer the way the gateway does: scheduled, not awaited (lookups read it back)."""
    lookup = await cache.lookup(request, tenant, "m")
    assert lookup.status == "miss", lookup
    cache.store(lookup, "m", answer(text), ttl)


async def test_exact_then_semantic_hit_and_guarded_miss(cache: SemanticCache) -> None:
    await remember(cache, ask("How do I convert Celsius to Fahrenheit?"), "multiply by 9/5, add 32")
    exact = await cache.lookup(ask("how do I  convert celsius to Fahrenheit?"), "t", "m")
    assert exact.status == "hit" and exact.reason == "exact match" and exact.similarity == 1.0
    assert exact.completion().content == "multiply by 9/5, add 32"
    near = await cache.lookup(ask("What is the formula to change Celsius into Fahrenheit?"), "t", "m")
    assert near.status == "hit" and near.reason == "semantic match"
    assert near.similarity is not None and policy().threshold <= near.similarity < 1.0
    swapped = await cache.lookup(ask("How do I convert Fahrenheit to Celsius?"), "t", "m")
    assert swapped.status == "miss" and swapped.similarity is not None and swapped.similarity > 0.95
    unrelated = await cache.lookup(ask("Who painted the Mona Lisa?"), "t", "m")
    assert unrelated.status == "miss"
    stats = await cache.stats()
    assert (stats.hits, stats.misses, stats.exact_hits, stats.semantic_hits) == (2, 3, 1, 1)
    assert stats.guard_rejections == 1 and stats.entries == 1 and stats.bytes > 1536
    assert stats.hit_rate == pytest.approx(0.4)


async def test_the_exact_layer_ignores_one_closing_mark_after_a_letter(cache: SemanticCache) -> None:
    """ "What is x?" and "what is x" are one exact key (no embedding). The exact layer has no guard, so
    nothing else is dropped: "10!" is a factorial, "cd .." a path, and a text of punctuation stays whole."""
    await remember(cache, ask("What is the boiling point of water?"), "100 °C at sea level")
    for variant in ("what is the boiling point of water", "What is the boiling point of water."):
        found = await cache.lookup(ask(variant), "t", "m")
        assert (found.status, found.reason) == ("hit", "exact match"), variant
    for other in ("What is the boiling point, of water?", "what is the boiling point of water?!"):
        assert (await cache.lookup(ask(other), "t", "m")).reason != "exact match", other
    await remember(cache, ask("What is 10!"), "3628800")
    assert (await cache.lookup(ask("What is 10"), "t", "m")).reason != "exact match"
    await remember(cache, ask("cd .."), "goes up one directory")
    assert (await cache.lookup(ask("cd"), "t", "m")).reason != "exact match"
    await remember(cache, ask("?"), "a question mark")
    for text in ("!", "...", "??"):
        assert (await cache.lookup(ask(text), "t", "m")).reason != "exact match", text


@pytest.mark.parametrize(
    ("changed", "tenant", "model"),
    [
        (ask("What is the capital of France?"), "other-tenant", "m"),
        (ask("What is the capital of France?"), "t", "other-model"),
        (ask("What is the capital of France?", system="Answer in French."), "t", "m"),
        (ask("What is the capital of France?", temperature=0.5), "t", "m"),
        (ask("What is the capital of France?", enable_thinking=True), "t", "m"),
        (replace(ask("What is the capital of France?"), sampling=Sampling(0.0, max_tokens=5)), "t", "m"),
        (
            ChatRequest(
                (
                    Message("user", "hi"),
                    Message("assistant", "hello"),
                    Message("user", "What is the capital of France?"),
                ),
                "m",
                Sampling(0.0),
            ),
            "t",
            "m",
        ),
        (replace(ask("What is the capital of France?"), raw_prompt=True), "t", "m"),
    ],
    ids=["tenant", "model", "system", "temperature", "thinking", "max_tokens", "history", "text completion"],
)
async def test_never_a_hit_across_scopes(
    cache: SemanticCache, changed: ChatRequest, tenant: str, model: str
) -> None:
    await remember(cache, ask("What is the capital of France?"), "Paris")
    lookup = await cache.lookup(changed, tenant, model)
    assert lookup.status == "miss"


def with_images(text: str, *urls: str, detail: Literal["low", "high"] | None = None) -> ChatRequest:
    parts = (text, *(ImagePart(url, detail) for url in urls))
    return replace(ask(text), messages=(Message("user", text, parts),))


async def test_images_are_part_of_the_scope(cache: SemanticCache) -> None:
    """The same words about another image (or the same image at another detail, or none) never hit; the
    same words about the same image do."""
    question = "What animal is in this photo?"
    await remember(cache, with_images(question, "https://img.example/cat.jpg"), "A cat")
    for other in (
        with_images(question, "https://img.example/dog.jpg"),
        with_images(question, "data:image/png;base64,iVBORw0KGgo="),
        with_images(question, "https://img.example/cat.jpg", detail="high"),
        with_images(question, "https://img.example/cat.jpg", "https://img.example/dog.jpg"),
        with_images("What animal is in the photo?", "https://img.example/dog.jpg"),  # semantic layer too
        ask(question),
    ):
        lookup = await cache.lookup(other, "t", "m")
        assert lookup.status == "miss", other
    same = await cache.lookup(
        with_images("what animal is in this photo?", "https://img.example/cat.jpg"), "t", "m"
    )
    assert same.status == "hit" and same.completion().content == "A cat"
    near = await cache.lookup(
        with_images("What animal is in the photo?", "https://img.example/cat.jpg"), "t", "m"
    )
    assert near.status == "hit" and near.reason == "semantic match"
    # an image earlier in the conversation shapes the answer as well
    history = ChatRequest(
        (
            Message("user", "Look", ("Look", ImagePart("https://img.example/cat.jpg"))),
            Message("assistant", "I see it."),
            Message("user", question),
        ),
        "m",
        Sampling(0.0),
    )
    await remember(cache, history, "A cat")
    swapped = replace(
        history,
        messages=(
            Message("user", "Look", ("Look", ImagePart("https://img.example/dog.jpg"))),
            *history.messages[1:],
        ),
    )
    assert (await cache.lookup(swapped, "t", "m")).status == "miss"


@pytest.mark.parametrize(
    ("request_", "reason"),
    [
        (ask("hello", temperature=1.5), "temperature"),
        (replace(ask("hello"), sampling=Sampling(0.0, seed=7)), "seed"),
        (replace(ask("hello"), logprobs=True), "logprobs"),
        (ChatRequest((Message("user", "hi"), Message("assistant", "Hel")), "m"), "user turn"),
    ],
)
async def test_bypasses(cache: SemanticCache, request_: ChatRequest, reason: str) -> None:
    lookup = await cache.lookup(request_, "t", "m")
    assert lookup.status == "bypass" and reason in lookup.reason
    assert cache.store(lookup, "m", answer("x"), None) is None  # nothing to store
    assert (await cache.stats()).entries == 0


async def test_seeded_requests_cached_when_configured(minilm: MiniLMEmbedder) -> None:
    cache = SemanticCache(embedded_store(minilm.dim), minilm, policy(cache_seeded=True))
    seeded = replace(ask("hello there"), sampling=Sampling(0.0, seed=7))
    await remember(cache, seeded, "hi")
    assert (await cache.lookup(seeded, "t", "m")).status == "hit"
    other_seed = replace(seeded, sampling=Sampling(0.0, seed=8))
    assert (await cache.lookup(other_seed, "t", "m")).status == "miss"


async def test_no_cache_read_still_stores(cache: SemanticCache) -> None:
    lookup = await cache.lookup(ask("What is a monad?"), "t", "m", read=False)
    assert lookup.status == "bypass" and lookup.key is not None
    cache.store(lookup, "m", answer("a monoid in the category of endofunctors"), None)
    assert (await cache.lookup(ask("What is a monad?"), "t", "m")).status == "hit"


async def test_ttl_default_override_and_zero(cache: SemanticCache, clock: FakeClock) -> None:
    await remember(cache, ask("first question about ttl"), "a")
    await remember(cache, ask("second question about caching"), "b", ttl=10)
    await remember(cache, ask("third question, never kept"), "c", ttl=0)
    clock.advance(11)
    assert (await cache.lookup(ask("first question about ttl"), "t", "m")).status == "hit"
    assert (await cache.lookup(ask("second question about caching"), "t", "m")).status == "miss"
    assert (await cache.lookup(ask("third question, never kept"), "t", "m")).status == "miss"
    clock.advance(86_400)
    assert (await cache.lookup(ask("first question about ttl"), "t", "m")).status == "miss"
    assert (await cache.stats()).expired == 2


async def test_invalidation_by_model_age_pattern_and_clear(cache: SemanticCache, clock: FakeClock) -> None:
    for text, model in [("old weather question", "a"), ("old news question", "b")]:
        lookup = await cache.lookup(ask(text), "t", model)
        cache.store(lookup, model, answer("x"), None)
    clock.advance(100)
    lookup = await cache.lookup(ask("new weather question"), "t", "a")
    cache.store(lookup, "a", answer("y"), None)  # still in flight: the invalidation lets it land first
    assert await cache.invalidate(Invalidation()) == 0
    assert await cache.invalidate(Invalidation(pattern="*WEATHER*", older_than_s=50)) == 1
    assert await cache.invalidate(Invalidation(model="b")) == 1
    assert (await cache.lookup(ask("new weather question"), "t", "a")).status == "hit"
    assert await cache.clear() == 1
    assert (await cache.stats()).entries == 0


async def test_eviction_keeps_the_most_recently_used(minilm: MiniLMEmbedder) -> None:
    cache = SemanticCache(embedded_store(minilm.dim, max_entries=2), minilm, policy())
    await remember(cache, ask("alpha question about rivers"), "1")
    await remember(cache, ask("beta question about mountains"), "2")
    assert await cache.drain()  # both written before alpha is used again: beta is the least recent
    assert (await cache.lookup(ask("alpha question about rivers"), "t", "m")).status == "hit"
    await remember(cache, ask("gamma question about deserts"), "3")
    assert await cache.drain()  # gamma's write evicts
    assert (await cache.lookup(ask("beta question about mountains"), "t", "m")).status == "miss"
    assert (await cache.lookup(ask("alpha question about rivers"), "t", "m")).status == "hit"
    assert (await cache.stats()).evictions == 1


async def test_embedded_store_survives_a_restart(minilm: MiniLMEmbedder, tmp_path: Path) -> None:
    path = tmp_path / "cache.sqlite"
    config = CacheConfig(path=path)
    first = build_cache(config, data_dir=tmp_path, embedder=minilm)
    assert first is not None
    await remember(first, ask("How many legs does a spider have?"), "eight")
    await first.close()
    second = build_cache(config, data_dir=tmp_path, embedder=minilm)
    assert second is not None
    hit = await second.lookup(ask("How many legs do spiders have?"), "t", "m")
    assert hit.status == "hit" and hit.completion().content == "eight"
    await second.close()
    assert build_cache(CacheConfig(backend="off"), data_dir=tmp_path, embedder=minilm) is None


class BrokenStore(EmbeddedStore):
    def __init__(self, dim: int) -> None:
        super().__init__(None, dim, max_entries=DEFAULTS.max_entries)
        self.broken = True

    async def get(self, key: str):  # type: ignore[no-untyped-def]
        if self.broken:
            raise CacheUnavailable("down")
        return await super().get(key)

    async def put(self, entry) -> None:  # type: ignore[no-untyped-def]
        if self.broken:
            raise CacheUnavailable("down")
        await super().put(entry)


async def test_a_failing_store_means_bypass_and_degraded(minilm: MiniLMEmbedder) -> None:
    store = BrokenStore(minilm.dim)
    cache = SemanticCache(store, minilm, policy())
    lookup = await cache.lookup(ask("anything at all"), "t", "m")
    assert lookup.status == "bypass" and cache.health() == "degraded"
    key = cache.key(ask("anything at all"), "t", "m")
    assert not isinstance(key, str)
    write = cache.store(replace(lookup, status="miss", key=key), "m", answer("x"), None)
    assert write is not None
    await write  # failed in the background: logged and counted, not raised
    store.broken = False
    lookup = await cache.lookup(ask("anything at all"), "t", "m")
    assert lookup.status == "miss" and cache.health() == "ok"
    assert (await cache.stats()).errors == 2


async def test_an_empty_scope_skips_the_embedding_and_the_write_embeds_later() -> None:
    """A scope without entries (a conversation's follow-up turn, usually) cannot have a close neighbour:
    its lookup is a miss without an embedding on the request's path; the answer's write embeds it, so
    the next paraphrase in that scope is compared as usual."""
    embedder = HashingEmbedder()
    cache = SemanticCache(embedded_store(embedder.dim), embedder, policy(threshold=0.5))
    first = await cache.lookup(ask("Which planet has the most moons?"), "t", "m")
    assert (first.status, first.reason, embedder.calls) == ("miss", "nothing cached in this scope", 0)
    write = cache.store(first, "m", answer("Saturn"), None)
    assert write is not None
    await write
    assert embedder.calls == 1  # the write embedded the question
    near = await cache.lookup(ask("Which planet has the most moons now?"), "t", "m")
    assert near.status == "hit" and near.reason == "semantic match" and embedder.calls == 2
    other = await cache.lookup(ask("Which planet has the most moons now?"), "another tenant", "m")
    assert other.reason == "nothing cached in this scope" and embedder.calls == 2
    await cache.close()


async def test_the_embedded_stores_writes_share_a_commit_and_close_commits(
    minilm: MiniLMEmbedder, tmp_path: Path
) -> None:
    """The stores of one moment share one SQLite commit (``COMMIT_AFTER_S`` later): another connection
    sees none of them before it and all after; ``close`` commits what is still due."""
    path = tmp_path / "cache.sqlite"
    store = embedded_store(minilm.dim, path)
    reader = sqlite3.connect(path)

    def rows() -> int:
        count: int = reader.execute("SELECT count(*) FROM entries").fetchone()[0]
        return count

    def entry(n: int) -> CacheEntry:
        vector = minilm.embed([f"question {n}"])[0]
        return CacheEntry(
            f"s:{n}", "s", "m", f"question {n}", vector, Answer("a", "", "stop", 1, 1), 0.0, None
        )

    for n in range(3):
        await store.put(entry(n))
    assert rows() == 0  # not committed yet: one commit for the three, later
    assert len(await store.search("s", entry(0).vector, 4)) == 3  # served from memory meanwhile
    await until(lambda: rows() == 3, within_s=30)
    await store.put(entry(3))
    await store.close()  # commits the last one at once
    assert rows() == 4
    reader.close()


async def test_the_embedded_store_purges_exactly_the_expired_entries_every_nth_store(
    tmp_path: Path,
) -> None:
    """Every ``purge_every``-th store drops the entries expired by then, each counted once: not one stored
    again with a later expiry, not one without an expiry, and one stored twice counts once."""
    embedder = HashingEmbedder()
    clock = FakeClock()
    store = embedded_store(embedder.dim, tmp_path / "cache.sqlite", clock=clock, purge_every=8)
    now = clock.time()

    def entry(n: int, expires: float | None) -> CacheEntry:
        text = f"question {n}"
        vector = embedder.embed([text])[0]
        return CacheEntry(f"s:{n}", "s", "m", text, vector, Answer("a", "", "stop", 1, 1), now, expires)

    await store.put(entry(0, now + 10))
    await store.put(entry(0, now + 10))  # the same entry twice: counted once
    await store.put(entry(1, now + 10))
    await store.put(entry(1, now + 100))  # stored again, later: kept
    await store.put(entry(2, None))
    await store.put(entry(3, now + 5))
    await store.put(entry(4, now + 1000))
    clock.advance(20)
    assert (await store.stats()).expired == 0  # none met yet: dropped at the 8th store
    await store.put(entry(5, now + 1000))
    assert (await store.stats()).expired == 2  # 0 and 3
    assert sorted(e.key for e, _ in await store.search("s", entry(0, None).vector, 8)) == [
        "s:1",
        "s:2",
        "s:4",
        "s:5",
    ]
    clock.advance(100)
    for _ in range(8):
        await store.put(entry(6, now + 1000))
    assert (await store.stats()).expired == 3  # and 1
    await store.close()


async def test_an_embedded_store_row_removed_before_its_commit_is_never_written(tmp_path: Path) -> None:
    """A store's row waits for the shared commit; removed before it (invalidated, evicted), it is not
    written at all, and the file reopened holds what memory held: the later answers, not the removed one."""
    embedder = HashingEmbedder()
    path = tmp_path / "cache.sqlite"
    store = embedded_store(embedder.dim, path, max_entries=2)

    def entry(n: int, model: str = "m") -> CacheEntry:
        text = f"question {n}"
        vector = embedder.embed([text])[0]
        return CacheEntry(f"s:{n}", "s", model, text, vector, Answer(f"a{n}", "", "stop", 1, 1), 0.0, None)

    await store.put(entry(0, model="old"))
    await store.put(entry(1))
    assert await store.invalidate(Invalidation(model="old")) == 1  # before the commit
    await store.put(entry(2))
    await store.put(entry(3))  # evicts entry 1, never committed either
    await store.put(entry(3))  # the same key again: one row
    await store.close()
    reopened = embedded_store(embedder.dim, path)
    assert sorted(e.key for e, _ in await reopened.search("s", entry(2).vector, 8)) == ["s:2", "s:3"]
    assert (await reopened.get("s:3")) == entry(3)
    await reopened.close()
