"""The verifier stage with the shipped weights and the real embedder: what it serves and refuses, the
accepted false-hit rate (setting and per request), the bars entries learn online, and that it is used only
with the embedder it was fitted for."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from groupqwen.cache import build_cache
from groupqwen.cache.embedders import HashingEmbedder, MiniLMEmbedder
from groupqwen.cache.keys import normalise
from groupqwen.cache.semantic import SemanticCache
from groupqwen.cache.verifier import Verifier, load
from groupqwen.config import CacheConfig
from groupqwen.testing import FakeClock

from .helpers import DEFAULTS, embedded_store, policy
from .test_semantic import ask, remember

HAND_HELDOUT = Path(__file__).resolve().parents[2] / "bench" / "data" / "cache_pairs_heldout.tsv"
ADVERSARIAL = ("negation", "number", "swap", "entity")


@pytest.fixture(scope="module")
def verifier() -> Verifier:
    return load()


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def cache(minilm: MiniLMEmbedder, verifier: Verifier, clock: FakeClock) -> SemanticCache:
    store = embedded_store(minilm.dim, clock=clock)
    return SemanticCache(store, minilm, policy(), clock=clock, verifier=verifier)


def test_the_shipped_file_fits_the_bundled_embedder_and_its_bars_fall_as_the_rate_rises(
    verifier: Verifier, minilm: MiniLMEmbedder
) -> None:
    assert verifier.embedder == minilm.name
    rates = [r for r, _ in verifier.calibration]
    bars = [verifier.bar_for(r) for r in rates]
    assert bars == sorted(bars, reverse=True) and len(set(bars)) > 3
    # a rate below every calibrated one gets the strictest bar; one above all, the loosest
    assert verifier.bar_for(0.0) == bars[0] and verifier.bar_for(1.0) == bars[-1]
    assert 0.5 < verifier.floor < 1.0


async def test_serves_a_paraphrase_and_refuses_minimal_pairs(
    cache: SemanticCache, verifier: Verifier
) -> None:
    await remember(cache, ask("How do I center a div in CSS?"), "margin: auto")
    near = await cache.lookup(ask("How can I center a div with CSS?"), "t", "m")
    assert (near.status, near.stage) == ("hit", "verifier")
    assert near.score is not None and near.score >= verifier.bar_for(DEFAULTS.max_false_hit_rate)
    for other in ("How do I center a span in CSS?", "How do I not center a div in CSS?"):
        assert (await cache.lookup(ask(other), "t", "m")).status == "miss", other
    stats = await cache.stats()
    assert stats.semantic_hits == 1 and stats.verifier_rejections >= 1 and stats.guard_rejections == 0


async def test_the_request_rate_moves_the_bar(cache: SemanticCache) -> None:
    await remember(cache, ask("What are the best books to learn statistics?"), "a list")
    question = ask("Which statistics books should a beginner read?")
    strict = await cache.lookup(question, "t", "m", max_false_hit_rate=0.0)
    loose = await cache.lookup(question, "t", "m", max_false_hit_rate=1.0)
    assert strict.status == "miss" and loose.status == "hit" and loose.stage == "verifier"
    assert strict.score == loose.score  # one probability, two bars


async def test_a_regenerated_hit_tightens_its_entry_alone(cache: SemanticCache, clock: FakeClock) -> None:
    await remember(cache, ask("How do I learn to cook?"), "start with eggs")
    await remember(cache, ask("How do I become a better writer?"), "read and write every day")
    asked = ask("What is the best way to learn cooking?")
    served = await cache.lookup(asked, "t", "m", max_false_hit_rate=1.0)
    assert served.status == "hit" and served.entry is not None and served.score is not None
    # the client did not like it: it asks again, not reading the cache
    assert (await cache.lookup(asked, "t", "m", read=False)).bypass == "no_cache"
    assert cache.bars.bar(served.entry) > served.score
    again = await cache.lookup(asked, "t", "m", max_false_hit_rate=1.0)
    assert again.status == "miss" or (again.entry is not None and again.entry.key != served.entry.key)
    other = await cache.lookup(ask("How can I become a better writer?"), "t", "m", max_false_hit_rate=1.0)
    assert other.status == "hit" and other.entry is not None and cache.bars.bar(other.entry) == 0.0
    stats = await cache.stats()
    assert stats.regenerated == 1 and stats.learned_bars == 1
    # a no-cache request long after the serve teaches nothing
    clock.advance(cache.bars.window_s + 1)
    assert (await cache.lookup(ask("How can I become a better writer?"), "t", "m", read=False)).bypass
    assert (await cache.stats()).regenerated == 1


async def test_no_more_adversarial_false_hits_than_the_threshold_and_guard(
    minilm: MiniLMEmbedder, verifier: Verifier
) -> None:
    """The project's held-out hand-made pairs (negations, numbers, swaps, entities): at the default rate
    the verifier serves no label-0 pair that the old default (cosine ≥ threshold + guard) refused, in sum."""
    rows = []
    for line in HAND_HELDOUT.read_text(encoding="utf-8").splitlines():
        parts = line.split("\t")
        if len(parts) == 4 and parts[1] in ADVERSARIAL and parts[0] == "0":
            rows.append((normalise(parts[2]), normalise(parts[3])))
    assert len(rows) > 80
    a, b = minilm.embed([r[0] for r in rows]), minilm.embed([r[1] for r in rows])
    cosine = (a * b).sum(axis=1)
    bar = verifier.bar_for(DEFAULTS.max_false_hit_rate)
    threshold = DEFAULTS.threshold
    new = sum(
        c >= verifier.floor and verifier.probability(x, y, float(c)) >= bar
        for (x, y), c in zip(rows, cosine, strict=True)
    )
    old = sum(
        c >= threshold and verifier.guard.check(x, y).ok for (x, y), c in zip(rows, cosine, strict=True)
    )
    assert new <= old, (new, old)
    assert np.isfinite(cosine).all()


def test_built_only_for_the_embedder_it_was_fitted_for(tmp_path: Path, minilm: MiniLMEmbedder) -> None:
    built = build_cache(CacheConfig(), data_dir=tmp_path, embedder=minilm)
    assert built is not None and built.verifier is not None
    no_verifier = CacheConfig.model_validate({"verifier": False})
    off = build_cache(no_verifier, data_dir=tmp_path / "off", embedder=minilm)
    assert off is not None and off.verifier is None
    other = build_cache(CacheConfig(), data_dir=tmp_path / "other", embedder=HashingEmbedder(dim=64))
    assert other is not None and other.verifier is None


async def test_without_the_verifier_a_regenerated_hit_raises_its_cosine_bar(
    minilm: MiniLMEmbedder, clock: FakeClock
) -> None:
    cache = SemanticCache(embedded_store(minilm.dim, clock=clock), minilm, policy(), clock=clock)
    await remember(cache, ask("How do I center a div in CSS?"), "margin: auto")
    asked = ask("How can I center a div with CSS?")
    served = await cache.lookup(asked, "t", "m")
    assert (served.status, served.stage) == ("hit", "threshold") and served.similarity is not None
    await cache.lookup(asked, "t", "m", read=False)
    assert served.entry is not None and cache.bars.bar(served.entry) > served.similarity
    assert (await cache.lookup(asked, "t", "m")).status == "miss"
