"""Cache parts built by hand with the settings' defaults (``CacheConfig``, the one place they are defined).
A test that moves time gives them a ``groupqwen.testing.FakeClock`` (``clock=``)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from groupqwen.cache import CachePolicy, EmbeddedStore
from groupqwen.cache.redis_store import RedisStore
from groupqwen.config import CacheConfig

DEFAULTS = CacheConfig()


def policy(**changes: Any) -> CachePolicy:
    """The policy of the default settings, with ``changes`` (``CacheConfig`` fields)."""
    return CachePolicy.from_config(CacheConfig(**changes))


def embedded_store(dim: int, path: Path | None = None, **options: Any) -> EmbeddedStore:
    """An embedded store (memory only without ``path``)."""
    options.setdefault("max_entries", DEFAULTS.max_entries)
    return EmbeddedStore(path, dim, **options)


def redis_store(url: str, dim: int, **options: Any) -> RedisStore:
    options.setdefault("prefix", DEFAULTS.redis_prefix)
    options.setdefault("timeout_s", DEFAULTS.redis_timeout_s)
    return RedisStore(url, dim, **options)
