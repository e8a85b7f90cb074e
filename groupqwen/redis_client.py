"""The Redis client of the gateway's shared state (the cache, rate limits, stored responses): one way to
open it, bounded and quick to notice an outage."""

from __future__ import annotations

import redis.asyncio as aioredis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff


def bounded(
    url: str, *, timeout_s: float, pool_wait_s: float | None, max_connections: int = 64
) -> aioredis.Redis:
    """A client whose socket operations and connects take at most ``timeout_s``, waiting at most
    ``pool_wait_s`` for a free connection of its ``max_connections`` (``None``: as long as it takes, for a
    caller that bounds the whole call itself). One immediate retry: a pooled connection that went stale in
    an outage reconnects transparently."""
    pool = aioredis.BlockingConnectionPool.from_url(
        url,
        max_connections=max_connections,
        timeout=pool_wait_s,
        socket_timeout=timeout_s,
        socket_connect_timeout=timeout_s,
        retry=Retry(NoBackoff(), 1),
    )
    return aioredis.Redis(connection_pool=pool)
