"""The scope-partitioned index: exact rescoring, the Hamming prefilter, removal, isolation."""

from __future__ import annotations

import numpy as np
import pytest

from groupqwen.cache.index import PREFILTER, VectorIndex


def _unit(rng: np.random.Generator, n: int, dim: int = 64) -> np.ndarray:
    x = rng.standard_normal((n, dim)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def test_finds_the_true_nearest_neighbour_through_the_prefilter() -> None:
    rng = np.random.default_rng(1)
    data = _unit(rng, 5 * PREFILTER + 7)
    index = VectorIndex(64)
    for i, row in enumerate(data):
        index.add("s", f"k{i}", row)
    queries = data[:40] + 0.05 * rng.standard_normal((40, 64)).astype(np.float32)
    queries /= np.linalg.norm(queries, axis=1, keepdims=True)
    for q in queries:
        (key, score), *_ = index.search("s", q, 3)
        expected = int(np.argmax(data @ q))
        assert key == f"k{expected}"
        assert score == pytest.approx(float(data[expected] @ q), abs=1e-5)


def test_scopes_are_isolated_and_removal_compacts() -> None:
    rng = np.random.default_rng(2)
    a, b = _unit(rng, 2)
    index = VectorIndex(64)
    index.add("one", "x", a)
    index.add("two", "y", b)
    assert [k for k, _ in index.search("one", b, 5)] == ["x"]
    assert index.search("three", a, 5) == []
    for i, row in enumerate(_unit(rng, 100)):
        index.add("one", f"r{i}", row)
    assert index.remove(["x", "r5", "missing"]) == 2
    assert "x" not in index and len(index) == 100
    assert index.search("one", a, 1)[0][0] != "x"
    index.add("one", "r7", a)  # re-adding a key replaces its vector
    assert index.search("one", a, 1) == [("r7", pytest.approx(1.0))]
    index.clear()
    assert len(index) == 0


def test_rejects_bad_shapes() -> None:
    with pytest.raises(ValueError):
        VectorIndex(60)
    with pytest.raises(ValueError):
        VectorIndex(64).add("s", "k", np.zeros(32, dtype=np.float32))


def test_tombstones_are_skipped_then_compacted() -> None:
    rng = np.random.default_rng(3)
    data = _unit(rng, 4 * PREFILTER)
    index = VectorIndex(64)
    for i, row in enumerate(data):
        index.add("s", f"k{i}", row)
    index.add("s", "k0", data[0])  # the same vector again: nothing changes
    assert len(index) == 4 * PREFILTER
    for i in range(0, 3 * PREFILTER, 2):  # enough removals to trigger a compaction on the way
        index.remove([f"k{i}"])
        (key, _), *_ = index.search("s", data[i], 1)
        assert key != f"k{i}"
    assert len(index) == 4 * PREFILTER - 3 * PREFILTER // 2
    for i in range(1, 3 * PREFILTER, 2):
        assert index.search("s", data[i], 1)[0] == (f"k{i}", pytest.approx(1.0))
    index.add("s", "k1", data[2])  # a new vector under an existing key replaces it
    assert index.search("s", data[2], 1)[0][0] == "k1"
