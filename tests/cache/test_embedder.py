"""The real MiniLM embedder and the hashing fake."""

from __future__ import annotations

import numpy as np

from groupqwen.cache.embedder import Embedder, HashingEmbedder, MiniLMEmbedder


def test_minilm_vectors_are_unit_length_and_meaningful(minilm: MiniLMEmbedder) -> None:
    assert isinstance(minilm, Embedder)
    vectors = minilm.embed(
        ["How do I bake bread?", "What is a recipe for baking bread?", "What is the capital of Peru?"]
    )
    assert vectors.shape == (3, 384) and vectors.dtype == np.float32
    assert np.allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)
    sims = vectors @ vectors.T
    assert sims[0, 1] > 0.75 > 0.3 > sims[0, 2]


def test_minilm_batches_match_single_calls(minilm: MiniLMEmbedder) -> None:
    texts = ["short", "a much longer sentence that needs padding in a batch"]
    batch = minilm.embed(texts)
    single = np.vstack([minilm.embed([t]) for t in texts])
    assert np.allclose(batch, single, atol=1e-4)
    assert minilm.embed([]).shape == (0, 384)


def test_minilm_truncates_long_texts(minilm: MiniLMEmbedder) -> None:
    assert minilm.embed(["word " * 2000]).shape == (1, 384)


def test_hashing_fake_is_deterministic() -> None:
    fake = HashingEmbedder(dim=64)
    a, b, c = fake.embed(["the same words", "The same words!", "other text entirely"])
    assert np.allclose(a, b)
    assert float(a @ c) < 0.5
