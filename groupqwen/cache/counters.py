"""The semantic cache's counters (``Counters``) and what ``SemanticCache.stats`` reports (``CacheStats``)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from groupqwen.cache.policy import BYPASS_REASONS
from groupqwen.cache.stores import StoreStats


@dataclass(frozen=True)
class CacheStats:
    backend: str
    status: Literal["ok", "degraded"]
    entries: int
    bytes: int
    hits: int
    misses: int
    bypasses: int
    bypass_reasons: dict[str, int]  # bypasses by reason: every one of ``policy.BYPASS_REASONS``
    hit_rate: float
    exact_hits: int
    semantic_hits: int
    guard_rejections: int  # neighbours above the threshold the guard refused (no verifier)
    verifier_rejections: int  # candidates the verifier refused
    regenerated: int  # semantic hits asked again with no-cache: their entries tightened their bars
    disliked: int  # semantic hits disliked through the feedback endpoint: the same
    learned_bars: int  # entries with a bar of their own
    stores: int
    not_stored: dict[str, int]  # answers not kept, by reason (``answers.py``)
    evictions: int
    expired: int
    errors: int


@dataclass
class Counters:
    hits: int = 0
    misses: int = 0
    bypasses: int = 0
    bypass_reasons: dict[str, int] = field(default_factory=lambda: dict.fromkeys(BYPASS_REASONS, 0))
    exact_hits: int = 0
    semantic_hits: int = 0
    guard_rejections: int = 0
    verifier_rejections: int = 0
    regenerated: int = 0
    disliked: int = 0
    stores: int = 0
    not_stored: dict[str, int] = field(default_factory=dict)
    errors: int = 0

    def stats(self, store: StoreStats, status: Literal["ok", "degraded"], learned_bars: int) -> CacheStats:
        """These counters with the store's figures, the cache's status and how many entries learned a bar."""
        looked = self.hits + self.misses
        return CacheStats(
            backend=store.backend,
            status=status,
            entries=store.entries,
            bytes=store.bytes,
            hits=self.hits,
            misses=self.misses,
            bypasses=self.bypasses,
            bypass_reasons=dict(self.bypass_reasons),
            hit_rate=round(self.hits / looked, 4) if looked else 0.0,
            exact_hits=self.exact_hits,
            semantic_hits=self.semantic_hits,
            guard_rejections=self.guard_rejections,
            verifier_rejections=self.verifier_rejections,
            regenerated=self.regenerated,
            disliked=self.disliked,
            learned_bars=learned_bars,
            stores=self.stores,
            not_stored=dict(self.not_stored),
            evictions=store.evictions,
            expired=store.expired,
            errors=self.errors,
        )
