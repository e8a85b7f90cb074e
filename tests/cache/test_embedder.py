"""The real MiniLM embedder, its quantised build, and the hashing fake.

The build's bookkeeping (reuse, rebuild, partial files, concurrent builders) is tested on a tiny ONNX model
of one MatMul, so that each build takes milliseconds; one test builds the real model."""

from __future__ import annotations

import contextlib
import json
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

from groupqwen.cache.embedders import (
    QUANTISED_NAME,
    Embedder,
    HashingEmbedder,
    MiniLMEmbedder,
    ensure_quantised,
    int8_build,
    packaged_model_path,
)
from groupqwen.cache.embedders.int8_build import QuantisedModel
from groupqwen.errors import ConfigError

TEXTS = ["How do I bake bread?", "What is a recipe for baking bread?", "What is the capital of Peru?"]


def test_minilm_vectors_are_unit_length_and_meaningful(minilm: MiniLMEmbedder) -> None:
    assert isinstance(minilm, Embedder)
    assert minilm.name == QUANTISED_NAME
    vectors = minilm.embed(TEXTS)
    assert vectors.shape == (3, 384) and vectors.dtype == np.float32
    assert np.allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)
    sims = vectors @ vectors.T
    assert sims[0, 1] > 0.75 > 0.3 > sims[0, 2]


def test_minilm_batches_match_single_calls(minilm: MiniLMEmbedder) -> None:
    texts = ["short", "a much longer sentence that needs padding in a batch"]
    batch = minilm.embed(texts)
    single = np.vstack([minilm.embed([t]) for t in texts])
    assert np.allclose(batch, single, atol=1e-6)  # one run per text: the others never change it
    assert minilm.embed([]).shape == (0, 384)


def test_minilm_truncates_long_texts(minilm: MiniLMEmbedder) -> None:
    assert minilm.embed(["word " * 2000]).shape == (1, 384)


def test_the_packaged_model_is_built_once_and_stays_close(tmp_path: Path, minilm: MiniLMEmbedder) -> None:
    first = MiniLMEmbedder(cache_dir=tmp_path)
    assert first.built and first.model_path.parent == tmp_path and first.name == QUANTISED_NAME
    manifest = json.loads(first.model_path.with_suffix(".json").read_text())
    assert manifest["onnxruntime"] == ort.__version__
    assert manifest["source_sha256"] == int8_build._sha256(packaged_model_path().read_bytes())
    second = MiniLMEmbedder(cache_dir=tmp_path)
    assert not second.built and second.model_path == first.model_path
    assert np.allclose(first.embed(TEXTS), minilm.embed(TEXTS), atol=1e-5)

    # the packaged file loaded as it is (fp32 MatMuls): another name, nearly the same vectors
    packaged = MiniLMEmbedder(model_path=packaged_model_path())
    assert packaged.name.startswith("all-minilm-l6-v2@") and packaged.name != first.name
    cosines = (packaged.embed(TEXTS) * first.embed(TEXTS)).sum(axis=1)
    assert cosines.min() > 0.95


def test_hashing_fake_is_deterministic() -> None:
    fake = HashingEmbedder(dim=64)
    a, b, c = fake.embed(["the same words", "The same words!", "other text entirely"])
    assert np.allclose(a, b)
    assert float(a @ c) < 0.5


# --- the build's bookkeeping, on a tiny model -------------------------------------------------------------


def tiny_model(path: Path, seed: int) -> Path:
    """y = x · W, W a 32×32 float initializer: a MatMul that quantize_dynamic turns into MatMulInteger."""
    weight = np.random.default_rng(seed).standard_normal((32, 32)).astype(np.float32)
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["x", "w"], ["y"])],
        "tiny",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 32])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 32])],
        [numpy_helper.from_array(weight, "w")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, path)
    return path


def runs(build: QuantisedModel) -> bool:
    """The build loads and computes, with int8 MatMuls."""
    session = ort.InferenceSession(build.data, providers=["CPUExecutionProvider"])
    (y,) = session.run(None, {"x": np.ones((1, 32), dtype=np.float32)})
    ops = {node.op_type for node in onnx.load_from_string(build.data).graph.node}
    return bool(np.isfinite(y).all()) and "MatMulInteger" in ops


def files(cache: Path) -> list[str]:
    return sorted(p.name for p in cache.iterdir() if p.name != f".{QUANTISED_NAME}.lock")


@pytest.fixture
def source(tmp_path: Path) -> Path:
    return tiny_model(tmp_path / "model.onnx", seed=1)


def test_a_build_is_reused_not_rebuilt(tmp_path: Path, source: Path) -> None:
    cache = tmp_path / "cache"
    first = ensure_quantised(source, cache)
    assert first.built and runs(first)
    assert files(cache) == [first.path.with_suffix(".json").name, first.path.name]
    modified = first.path.stat().st_mtime_ns
    second = ensure_quantised(source, cache)
    assert not second.built and second.path == first.path and second.data == first.data
    assert first.path.stat().st_mtime_ns == modified


def test_a_changed_source_or_runtime_rebuilds_and_drops_the_old_build(
    tmp_path: Path, source: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    cache = tmp_path / "cache"
    old = ensure_quantised(source, cache)
    tiny_model(source, seed=2)  # new weights under the same path
    new = ensure_quantised(source, cache)
    assert new.built and new.path != old.path and new.data != old.data and runs(new)
    manifest = json.loads(new.path.with_suffix(".json").read_text())
    assert manifest["source_sha256"] == int8_build._sha256(source.read_bytes())
    assert manifest["sha256"] == int8_build._sha256(new.data)
    assert files(cache) == [new.path.with_suffix(".json").name, new.path.name]

    monkeypatch.setattr(int8_build, "_ort_version", lambda: "0.0.1-other")
    upgraded = ensure_quantised(source, cache)
    assert upgraded.built and upgraded.path != new.path
    assert json.loads(upgraded.path.with_suffix(".json").read_text())["onnxruntime"] == "0.0.1-other"


@pytest.mark.parametrize("damage", ["truncated", "garbage", "no manifest", "manifest of another file"])
def test_a_partial_or_corrupt_build_is_never_loaded(tmp_path: Path, source: Path, damage: str) -> None:
    cache = tmp_path / "cache"
    good = ensure_quantised(source, cache)
    model, manifest = good.path, good.path.with_suffix(".json")
    if damage == "truncated":
        model.write_bytes(good.data[: len(good.data) // 2])
    elif damage == "garbage":
        model.write_bytes(b"\0" * len(good.data))
    elif damage == "no manifest":
        manifest.unlink()
    else:
        record = json.loads(manifest.read_text())
        manifest.write_text(json.dumps({**record, "sha256": "0" * 64}))
    # a dead build's work folder, with a partial file in it, is neither loaded nor left behind
    leftover = cache / f".{model.stem}.dead"
    leftover.mkdir()
    (leftover / "q8.onnx").write_bytes(good.data[:100])

    again = ensure_quantised(source, cache)
    assert again.built and again.data == good.data and runs(again)
    assert files(cache) == [manifest.name, model.name]


def test_concurrent_builders_in_threads_build_once(
    tmp_path: Path, source: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    cache = tmp_path / "cache"
    build, locked = int8_build._build, int8_build._locked
    builds = 0
    waiting = threading.Semaphore(0)

    @contextlib.contextmanager
    def counted_lock(*args: Any) -> Iterator[None]:
        waiting.release()  # this thread has reached the lock
        with locked(*args):
            yield

    def slow_build(*args: object) -> None:
        nonlocal builds
        builds += 1
        # the other thread is at the lock: it waits for this build, then loads it
        assert waiting.acquire(timeout=30) and waiting.acquire(timeout=30)
        build(*args)  # type: ignore[arg-type]

    monkeypatch.setattr(int8_build, "_locked", counted_lock)
    monkeypatch.setattr(int8_build, "_build", slow_build)
    start = threading.Barrier(2)
    results: list[QuantisedModel] = []

    def builder() -> None:
        start.wait()
        results.append(ensure_quantised(source, cache))

    threads = [threading.Thread(target=builder) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert builds == 1
    assert sorted(r.built for r in results) == [False, True]
    assert results[0].data == results[1].data and runs(results[0])
    assert files(cache) == [results[0].path.with_suffix(".json").name, results[0].path.name]


_BUILDER = """
import sys, time
from pathlib import Path
from groupqwen.cache.embedders import ensure_quantised
time.sleep(max(0.0, float(sys.argv[3]) - time.time()))
build = ensure_quantised(Path(sys.argv[1]), Path(sys.argv[2]))
print(build.built, build.path)
"""


def test_concurrent_builder_processes_end_with_one_good_file(tmp_path: Path, source: Path) -> None:
    cache = tmp_path / "cache"
    go = str(time.time() + 3)  # both start building at the same moment, after importing
    processes = [
        subprocess.Popen(
            [sys.executable, "-c", _BUILDER, str(source), str(cache), go], stdout=subprocess.PIPE, text=True
        )
        for _ in range(2)
    ]
    outputs = [p.communicate(timeout=60)[0].split() for p in processes]
    assert [p.returncode for p in processes] == [0, 0]
    assert sorted(built for built, _ in outputs) == ["False", "True"]
    assert outputs[0][1] == outputs[1][1]
    result = ensure_quantised(source, cache)
    assert not result.built and runs(result)
    assert files(cache) == [result.path.with_suffix(".json").name, result.path.name]


def test_an_unwritable_cache_dir_is_a_config_error_naming_it(tmp_path: Path, source: Path) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    with pytest.raises(ConfigError) as caught:
        ensure_quantised(source, blocker / "cache")
    assert str(blocker / "cache") in caught.value.errors[0][1]


GOLDEN = Path(__file__).parent / "data" / "minilm_golden.json"
GOLDEN_TEXTS = [
    *TEXTS,
    "what is the full form of mbbs?",
    "how does one define success?",
    "is richard muller a christian?",
]
GOLDEN_MIN_COSINE = 0.999  # saturating int8 products (AVX2 without VNNI) gave 0.990-0.995 on these texts


def test_minilm_vectors_match_the_golden_ones_the_verifier_was_fitted_on(minilm: MiniLMEmbedder) -> None:
    """The shipped verifier and its false-hit calibration hold only for the vectors they were fitted on:
    a runtime, CPU or build that moves them fails here (regenerate only with a refit verifier:
    ``python tests/cache/test_embedder.py --write``)."""
    golden = json.loads(GOLDEN.read_text(encoding="utf-8"))
    assert golden["embedder"] == minilm.name and golden["texts"] == GOLDEN_TEXTS
    cosines = np.sum(minilm.embed(GOLDEN_TEXTS) * np.asarray(golden["vectors"], dtype=np.float32), axis=1)
    assert cosines.min() >= GOLDEN_MIN_COSINE, dict(zip(GOLDEN_TEXTS, cosines.round(5).tolist(), strict=True))


if __name__ == "__main__" and sys.argv[1:] == ["--write"]:
    embedder = MiniLMEmbedder(threads=1)
    vectors = [[round(float(x), 6) for x in row] for row in embedder.embed(GOLDEN_TEXTS)]
    record = {"embedder": embedder.name, "texts": GOLDEN_TEXTS, "vectors": vectors}
    GOLDEN.parent.mkdir(exist_ok=True)
    GOLDEN.write_text(json.dumps(record, separators=(",", ":")) + "\n", encoding="utf-8")
