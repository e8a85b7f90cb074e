"""``bench/judge.py``: the local LLM's score of a pair (a real GGUF, SmolLM2-135M), its prefix kept between
pairs, the scores kept on disk, and the pure parts (candidates, ROC AUC)."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[2]
sys.path[:0] = [str(ROOT / "scripts"), str(ROOT / "bench")]

import judge  # noqa: E402
import qqp  # noqa: E402

from groupqwen.config import Settings  # noqa: E402
from groupqwen.pool.bundled import ensure_bundled  # noqa: E402

A, B = (
    ["how do i learn python?", "what is the capital of france?"],
    ["how can i learn python?", "why is the sky blue?"],
)


@pytest.fixture(scope="module")
def gguf() -> Path:
    settings = Settings()
    spec = settings.catalog()["smollm2-135m"]
    ensure_bundled(spec, settings.models_dir)
    path = settings.catalog()["smollm2-135m"].path
    assert path is not None
    return path


def test_a_pair_scores_the_same_after_another_pair_as_fresh(gguf: Path) -> None:
    prompt = judge.PROMPTS["same-answer"]
    first = judge.Judge(gguf, prompt, threads=1)
    try:
        fresh = first.score(A[1], B[1])
        first.score(A[0], B[0])
        assert first.llm.n_tokens > len(first._prefix)  # the prefix stayed, the pair came after it
        again = first.score(A[1], B[1])
    finally:
        first.close()
    assert np.isfinite(fresh)
    assert again == pytest.approx(fresh, abs=1e-3)


def test_scores_are_kept_on_disk_and_read_back_without_the_model(
    gguf: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(qqp, "VECTORS_DIR", tmp_path)
    one = judge.Judge(gguf, judge.PROMPTS["same-answer"], threads=1)
    try:
        got = judge.Scores(one).of(A, B, np.array([1]), "test")
    finally:
        one.close()
    assert np.isnan(got[0]) and np.isfinite(got[1])
    store = judge.Scores(one)  # a new reader: the model is closed, so anything not on disk would fail
    np.testing.assert_array_equal(store.of(A, B, np.array([1]), "test"), got)
    assert store.path.name.startswith(f"judge-{one.name}-") and len(store.path.read_text().splitlines()) == 1
    assert "1 candidates scored" in store.cost()


def test_another_prompt_is_another_file() -> None:
    digests = {p.digest() for p in judge.PROMPTS.values()}
    assert len(digests) == len(judge.PROMPTS)


def test_candidates_reach_the_floor_in_a_seeded_order_that_a_larger_limit_extends() -> None:
    rng = np.random.default_rng(0)
    va = rng.normal(size=(50, 4)).astype(np.float32)
    vb = (va + rng.normal(scale=0.5, size=(50, 4))).astype(np.float32)
    va /= np.linalg.norm(va, axis=1, keepdims=True)
    vb /= np.linalg.norm(vb, axis=1, keepdims=True)
    pairs = qqp.Pairs(list(range(50)), ["a"] * 50, ["b"] * 50, np.zeros(50, bool), va, vb)
    every = judge.candidates(pairs, 0.8)
    assert set(every) == set(np.flatnonzero(pairs.cosine >= 0.8)) and len(every) > 5
    assert list(judge.candidates(pairs, 0.8, 5)) == list(every[:5])


def test_auc_counts_ties_half() -> None:
    labels = np.array([True, True, False, False])
    assert judge.auc(np.array([3.0, 2.0, 1.0, 0.0]), labels) == 1.0
    assert judge.auc(np.array([0.0, 1.0, 2.0, 3.0]), labels) == 0.0
    assert judge.auc(np.ones(4), labels) == 0.5


def test_ranks_run_from_zero_to_one_in_the_scores_order() -> None:
    np.testing.assert_allclose(judge.ranks(np.array([5.0, -1.0, 2.0])), [1.0, 0.0, 0.5])
