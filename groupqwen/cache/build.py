"""The cache and its embedder, built from the settings (``cache:``, docs/cache.md); every default is
``CacheConfig``'s."""

from __future__ import annotations

from pathlib import Path

from groupqwen import log
from groupqwen.cache.bars import EntryBars
from groupqwen.cache.embedders import Embedder, MiniLMEmbedder, OpenAIEmbedder
from groupqwen.cache.policy import CachePolicy
from groupqwen.cache.semantic import SemanticCache
from groupqwen.cache.stores import EmbeddedStore, VectorStore
from groupqwen.cache.verifier import load as load_verifier
from groupqwen.clock import SYSTEM_CLOCK, Clock
from groupqwen.config import CacheConfig, Settings

_log = log.get(__name__)


def build_cache(
    config: CacheConfig, *, data_dir: Path, embedder: Embedder, clock: Clock = SYSTEM_CLOCK
) -> SemanticCache | None:
    """The cache ``config`` describes, or ``None`` when its backend is ``off``. The embedded store's file is
    ``config.path``, by default ``data_dir/cache.sqlite``. The shipped verifier checks candidate hits when
    ``config.verifier`` is on and ``embedder`` is the one it was fitted for. The cache and its store share
    ``clock`` (entries' expiry; the Redis store's circuit breaker)."""
    if config.backend == "off":
        return None
    store: VectorStore
    bars: EntryBars | None = None  # in the process
    if config.backend == "redis":
        from groupqwen.cache.redis_store import RedisStore

        store = redis = RedisStore(
            config.redis_url,
            embedder.dim,
            prefix=config.redis_prefix,
            timeout_s=config.redis_timeout_s,
            clock=clock,
        )
        bars = redis.bars()  # with the entries: every replica learns and applies them
    else:
        path = config.path or data_dir / "cache.sqlite"
        store = EmbeddedStore(path, embedder.dim, max_entries=config.max_entries, clock=clock)
    verifier = None
    if config.verifier:
        shipped = load_verifier()
        if shipped.embedder == embedder.name:
            verifier = shipped
        else:
            _log.info("cache verifier off: fitted for another embedder", fitted=shipped.embedder)
    policy = CachePolicy.from_config(config)
    return SemanticCache(store, embedder, policy, clock=clock, verifier=verifier, bars=bars)


def embedder_from_settings(settings: Settings) -> Embedder:
    """The configured embedder (``cache.embedder``): the bundled MiniLM, or a ``/v1/embeddings`` server
    asked within the cache's lookup timeout."""
    e = settings.cache.embedder
    if e.kind == "openai":
        assert e.url is not None and e.model is not None  # EmbedderConfig checks it
        timeout_s = settings.cache.timeout_s
        return OpenAIEmbedder(e.url, e.model, api_key=e.api_key, dim=e.dim, timeout_s=timeout_s)
    return MiniLMEmbedder()


def cache_from_settings(settings: Settings, *, clock: Clock = SYSTEM_CLOCK) -> SemanticCache | None:
    """The configured cache (``None`` with ``cache.backend: off``), over the configured embedder, timed by
    ``clock``."""
    if settings.cache.backend == "off":
        return None
    embedder = embedder_from_settings(settings)
    return build_cache(settings.cache, data_dir=settings.data_dir, embedder=embedder, clock=clock)
