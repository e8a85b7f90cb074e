"""The semantic cache: ``semantic.py`` (``SemanticCache``: the two lookup layers, background writes,
health), ``keys.py`` (scope and exact key), ``policy.py`` (what may be cached; ``Lookup``), ``guard.py``
(precision), ``stores.py`` (the ``VectorStore`` seam and the embedded store), ``redis_store.py`` with
``redis_entries.py``, ``redis_search.py`` and ``redis_local.py`` (the shared Redis store), ``index.py``
(nearest neighbours in-process), ``embedders/`` (text → vector), ``writes.py`` (writes in flight).
``build.py`` builds the parts from the settings; ``docs/cache.md`` explains the design."""

from __future__ import annotations

from groupqwen.cache.build import build_cache, cache_from_settings, embedder_from_settings
from groupqwen.cache.counters import CacheStats
from groupqwen.cache.embedders import Embedder, HashingEmbedder, MiniLMEmbedder, OpenAIEmbedder
from groupqwen.cache.policy import CachePolicy, Lookup
from groupqwen.cache.semantic import SemanticCache
from groupqwen.cache.stores import EmbeddedStore, Invalidation, VectorStore

__all__ = [
    "CachePolicy",
    "CacheStats",
    "EmbeddedStore",
    "Embedder",
    "HashingEmbedder",
    "Invalidation",
    "Lookup",
    "MiniLMEmbedder",
    "OpenAIEmbedder",
    "SemanticCache",
    "VectorStore",
    "build_cache",
    "cache_from_settings",
    "embedder_from_settings",
]
