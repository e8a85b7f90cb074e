"""How far the bundled int8 embedder's vectors move under what can vary between machines (issue 16).

    nice .venv/bin/python bench/embedder_drift.py [--texts 100]

Embeds ``--texts`` QQP questions (a fixed sample; ``bench/qqp.py``'s data) with the gateway's embedder
(one thread) and again under each variation: two threads, a fresh session, other graph optimisation
levels, ``session.x64quantprecision`` off, the packaged model, and the int8 products as onnxruntime computes
them on x86 without VNNI, emulated in numpy (``VPMADDUBSW``: each adjacent pair of u8 × s8 products summed
and saturated to int16, then exact sums), on any CPU. Prints max |Δ| and the lowest and median cosine
against the gateway's vectors, as Markdown.
"""

from __future__ import annotations

import argparse
import random
import time
from collections.abc import Callable
from functools import partial
from typing import Any, ClassVar, cast

import numpy as np
import numpy.typing as npt
import onnx
import onnxruntime as ort  # type: ignore[import-untyped]
import qqp
from onnx.reference import ReferenceEvaluator
from onnx.reference.op_run import OpRun

from groupqwen.cache.embedders import MiniLMEmbedder, packaged_model_path
from groupqwen.cache.embedders.base import normalise_rows

Vectors = npt.NDArray[np.float32]
Ints = npt.NDArray[np.int64]
INT16 = (-32768, 32767)


class MatMulInteger(OpRun):
    """``MatMulInteger`` (the class's name is the operator it replaces) on u8 activations × s8 weights with
    the AVX2 kernel's int16 saturation of each adjacent pair of products; only the pairs whose weights could
    reach it (|b₁| + |b₂| ≥ 129) are checked."""

    op_domain = ""
    candidates: ClassVar[dict[int, tuple[Ints, Ints, Ints, Ints]]] = {}

    def _run(self, a: Any, b: Any, a_zero: Any = None, b_zero: Any = None) -> tuple[Any]:
        assert b_zero is None or not np.any(b_zero), "symmetric weights only"
        x = a.reshape(-1, a.shape[-1]).astype(np.int64)
        w = b.astype(np.int64)
        if w.shape[0] % 2:
            x, w = np.pad(x, ((0, 0), (0, 1))), np.pad(w, ((0, 1), (0, 0)))
        if id(b) not in self.candidates:
            j, n = np.nonzero(np.abs(w[0::2]) + np.abs(w[1::2]) >= 129)
            self.candidates[id(b)] = (j, n, w[2 * j, n], w[2 * j + 1, n])
        j, n, even, odd = self.candidates[id(b)]
        exact = (x.astype(np.float64) @ w.astype(np.float64)).astype(np.int64)  # exact below 2**53
        pairs = x[:, 2 * j] * even + x[:, 2 * j + 1] * odd
        lost = np.clip(pairs, *INT16) - pairs
        for row in range(len(x)):
            exact[row] += np.bincount(n, weights=lost[row], minlength=w.shape[1]).astype(np.int64)
        exact -= 0 if a_zero is None else int(a_zero) * w.sum(axis=0)
        return (exact.reshape(*a.shape[:-1], w.shape[1]).astype(np.int32),)


class DequantizeLinear(OpRun):
    """Opset 17's ``DequantizeLinear`` (the reference evaluator has 19 on)."""

    op_domain = ""

    def _run(self, x: Any, scale: Any, zero: Any = None, axis: int = 1, **_: Any) -> tuple[Any]:
        zero = np.zeros_like(scale) if zero is None else zero.astype(np.float32)
        if np.ndim(scale) == 1 and x.ndim > 1:
            shape = [1] * x.ndim
            shape[axis] = -1
            scale, zero = scale.reshape(shape), zero.reshape(shape)
        return (((x.astype(np.float32) - zero) * scale).astype(np.float32),)


def run_each(texts: list[str], embedder: MiniLMEmbedder, forward: Callable[[Ints], Any]) -> Vectors:
    """``embedder``'s tokens and pooling around another forward pass (one text a run, as it embeds)."""
    out = np.zeros((len(texts), embedder.dim), dtype=np.float32)
    for row, encoding in enumerate(embedder._tokenizer.encode_batch(texts)):
        ids = np.asarray([encoding.ids], dtype=np.int64)
        out[row] = np.asarray(forward(ids), dtype=np.float32)[0].mean(axis=0)
    return normalise_rows(out)


def session(embedder: MiniLMEmbedder, **config: str) -> Callable[[Ints], Any]:
    """A one-thread session on the embedder's model; ``level`` (a ``GraphOptimizationLevel`` name), the
    rest session config entries."""
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    level = config.pop("level", "ORT_ENABLE_ALL")
    options.graph_optimization_level = getattr(ort.GraphOptimizationLevel, level)
    for key, value in config.items():
        options.add_session_config_entry(key, value)
    run = ort.InferenceSession(str(embedder.model_path), options, providers=["CPUExecutionProvider"])
    return lambda ids: run.run(["last_hidden_state"], feeds(ids))[0]


def feeds(ids: Ints) -> dict[str, Ints]:
    return {"input_ids": ids, "attention_mask": np.ones_like(ids), "token_type_ids": 0 * ids}


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--texts", type=int, default=100)
    args = parser.parse_args()
    questions = sorted({t for row in qqp.read() for t in row[1:3]})
    random.Random(16).shuffle(questions)
    texts = questions[: args.texts]
    embedder = MiniLMEmbedder(threads=1)
    reference = embedder.embed(texts)
    evaluator = ReferenceEvaluator(
        onnx.load(str(embedder.model_path)), new_ops=[MatMulInteger, DequantizeLinear]
    )

    def emulated(ids: Ints) -> Any:
        return cast(list[Any], evaluator.run(["last_hidden_state"], feeds(ids)))[0]

    variants: dict[str, Callable[[], Vectors]] = {
        "two threads": partial(MiniLMEmbedder(threads=2).embed, texts),
        "a fresh session": partial(MiniLMEmbedder(threads=1).embed, texts),
        "session.x64quantprecision off": partial(
            run_each, texts, embedder, session(embedder, **{"session.x64quantprecision": "0"})
        ),
        **{
            f"graph optimisation {level}": partial(run_each, texts, embedder, session(embedder, level=level))
            for level in ("ORT_ENABLE_EXTENDED", "ORT_ENABLE_BASIC", "ORT_DISABLE_ALL")
        },
        "the packaged model (fp32 products)": partial(
            MiniLMEmbedder(threads=1, model_path=packaged_model_path()).embed, texts
        ),
        "x86 without VNNI (int16 saturation, emulated)": partial(run_each, texts, embedder, emulated),
    }
    print(
        f"{len(texts)} QQP questions, onnxruntime {ort.__version__}; against {embedder.name}, one thread:\n"
    )
    print("| variation | max abs Δ | lowest cosine | median cosine | seconds |")
    print("|---|---|---|---|---|")
    for name, make in variants.items():
        started = time.perf_counter()
        vectors = make()
        cosine = np.sum(reference * vectors, axis=1)
        print(
            f"| {name} | {np.abs(reference - vectors).max():.1e} | {cosine.min():.4f} | "
            f"{np.median(cosine):.4f} | {time.perf_counter() - started:.0f} |"
        )


if __name__ == "__main__":
    main()
