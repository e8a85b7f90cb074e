"""Fixtures for the cache tests: the real MiniLM embedder (the Valkey server is the suite's: conftest.py)."""

from __future__ import annotations

import pytest

from groupqwen.cache.embedders import MiniLMEmbedder


@pytest.fixture(scope="session")
def minilm() -> MiniLMEmbedder:
    return MiniLMEmbedder(threads=1)
