"""The semantic cache: ``semantic.py`` (policy and scope), ``stores.py`` / ``redis_store.py`` (where entries
live), ``index.py`` (nearest neighbours), ``embedder.py`` (text → vector), ``guard.py`` (precision).
``build_cache`` wires the parts from plain values; ``docs/cache.md`` explains the design."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from groupqwen.cache.embedder import Embedder, HashingEmbedder, MiniLMEmbedder, OpenAIEmbedder
from groupqwen.cache.semantic import CachePolicy, Lookup, SemanticCache
from groupqwen.cache.stores import EmbeddedStore, Invalidation, VectorStore

__all__ = [
    "CachePolicy",
    "Embedder",
    "HashingEmbedder",
    "Invalidation",
    "Lookup",
    "MiniLMEmbedder",
    "OpenAIEmbedder",
    "SemanticCache",
    "build_cache",
]


def build_cache(
    backend: Literal["embedded", "redis", "off"],
    *,
    policy: CachePolicy,
    path: Path | None = None,
    redis_url: str = "redis://127.0.0.1:6379/0",
    redis_prefix: str = "groupqwen:cache:",
    redis_timeout_s: float = 0.05,
    max_entries: int = 100_000,
    embedder: Embedder | None = None,
) -> SemanticCache | None:
    """The configured cache, or ``None`` when ``backend`` is ``off``. ``path``: the embedded store's
    SQLite file (``None``: memory only)."""
    if backend == "off":
        return None
    embedder = embedder or MiniLMEmbedder()
    store: VectorStore
    if backend == "redis":
        from groupqwen.cache.redis_store import RedisStore

        store = RedisStore(redis_url, embedder.dim, prefix=redis_prefix, timeout_s=redis_timeout_s)
    else:
        store = EmbeddedStore(path, embedder.dim, max_entries=max_entries)
    return SemanticCache(store, embedder, policy)
