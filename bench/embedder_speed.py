"""Embedder speed: the packaged MiniLM ONNX file (int8 weights dequantised to fp32 in the graph) against the
gateway's per-channel int8 build, interleaved on the same questions, at 1 and 2 onnxruntime threads.

    .venv/bin/python bench/embedder_speed.py [--rounds 5] [--questions 200] [--warm]

Each question is embedded by all four (embedder, threads) pairs in a shuffled order before the next question,
so a noisy neighbour slows both sides alike; the paired ratio (packaged / q8 on the same question and round)
is the number to read. By default each call is timed once, right after the other three embedders ran (their
weights pushed this one's out of the CPU caches: as in the gateway, where a model generates between two
lookups); ``--warm`` times a second call on the same question instead (the weights still cached).
Also reported: what the tokenizer and the pooling (mean, L2 norm) take of one ``embed`` call, what a call
costs by its length in tokens (a fixed part and a part per token), and how close the two embedders' vectors
are (cosine, and the drift in pair similarities).
Prints Markdown.
"""

from __future__ import annotations

import argparse
import random
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

from groupqwen.cache.embedders import MiniLMEmbedder, packaged_model_path

DATA = Path(__file__).parent / "data"


def questions(limit: int) -> list[str]:
    """Both sides of the cache-quality pairs: real questions of realistic length, deduplicated."""
    seen: dict[str, None] = {}
    for name in ("cache_pairs.tsv", "cache_pairs_heldout.tsv"):
        for line in (DATA / name).read_text(encoding="utf-8").splitlines():
            if line.strip() and not line.startswith("#"):
                _, _, query, cached = line.split("\t")
                seen.update({query: None, cached: None})
    return list(seen)[:limit]


def ms(call: Callable[[], object]) -> float:
    started = time.perf_counter()
    call()
    return (time.perf_counter() - started) * 1000


def quantiles(values: list[float]) -> str:
    p50, p90 = np.percentile(values, [50, 90])
    return f"{p50:.2f} / {p90:.2f}"


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5, help="passes over the questions")
    parser.add_argument("--questions", type=int, default=200, help="how many questions")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--warm", action="store_true", help="time a second, back-to-back call")
    args = parser.parse_args()
    texts = questions(args.questions)
    rng = random.Random(args.seed)
    embedders = {
        (kind, threads): MiniLMEmbedder(threads, packaged_model_path() if kind == "packaged" else None)
        for kind in ("packaged", "q8")
        for threads in (1, 2)
    }
    for embedder in embedders.values():  # warm-up: first runs allocate
        embedder.embed(texts[:5])
    times: dict[tuple[str, int], list[float]] = {key: [] for key in embedders}
    for _ in range(args.rounds):
        for text in texts:
            order = list(embedders)
            rng.shuffle(order)
            for key in order:
                embed = embedders[key].embed
                if args.warm:
                    embed([text])
                times[key].append(ms(lambda: embed([text])))  # noqa: B023 - called at once

    q8 = embedders[("q8", 1)]
    tokens = [q8.count_tokens([t]) for t in texts]
    mode = "warm" if args.warm else "cold"
    print(f"{len(texts)} questions ({min(tokens)}–{max(tokens)} tokens, median {int(np.median(tokens))}), ")
    print(f"{args.rounds} rounds, interleaved, {mode}; ms a question, one per call.\n")
    print("| threads | packaged p50 / p90 | q8 p50 / p90 | paired ratio packaged / q8: median [p10, p90] |")
    print("|---|---|---|---|")
    for threads in (1, 2):
        old, new = np.array(times[("packaged", threads)]), np.array(times[("q8", threads)])
        ratio = old / new
        low, mid, high = np.percentile(ratio, [10, 50, 90])
        print(
            f"| {threads} | {quantiles(list(old))} | {quantiles(list(new))} | "
            f"**{mid:.2f}×** [{low:.2f}, {high:.2f}] |"
        )
    one_two = np.array(times[("q8", 1)]) / np.array(times[("q8", 2)])
    print(f"\nq8, 1 thread / 2 threads (paired): median {np.median(one_two):.2f}×.")

    # the parts of one call around the model, identical for both embedders
    tokenize, pooling = [], []
    for text in texts:
        tokenize.append(ms(lambda t=text: q8._tokenizer.encode_batch([t])))  # type: ignore[misc]
        hidden = np.random.default_rng(0).standard_normal((1, len(q8._tokenizer.encode(text).ids), 384))
        pooling.append(ms(lambda h=hidden: _pool(h.astype(np.float32))))  # type: ignore[misc]
    whole = float(np.median(times[("q8", 1)]))
    print(
        f"\nAround the model, per call (median): tokenizer {np.median(tokenize):.3f} ms, pooling "
        f"{np.median(pooling):.3f} ms: {100 * (np.median(tokenize) + np.median(pooling)) / whole:.1f} % of a "
        f"q8 call on one thread ({whole:.2f} ms)."
    )

    by_length(q8)

    old_vectors = embedders[("packaged", 1)].embed(texts)
    new_vectors = q8.embed(texts)
    cosine = (old_vectors * new_vectors).sum(axis=1)
    drift = np.abs(old_vectors @ old_vectors.T - new_vectors @ new_vectors.T)[np.triu_indices(len(texts), 1)]
    print(
        f"\nq8 against packaged vectors: cosine median {np.median(cosine):.4f}, min {cosine.min():.4f}; "
        f"pair-similarity drift median {np.median(drift):.4f}, p99 {np.percentile(drift, 99):.4f}, "
        f"max {drift.max():.4f}."
    )


def by_length(embedder: MiniLMEmbedder, repeats: int = 100) -> None:
    """What a call costs against its length in tokens: a fixed part and a part per token (least squares).
    The lengths take turns within each repeat, so a slower spell of the machine slows them all alike."""
    texts = [" ".join(["word"] * words) for words in (1, 4, 8, 14, 20, 30, 45, 62)]
    lengths = [embedder.count_tokens([text]) for text in texts]
    calls: list[list[float]] = [[] for _ in texts]
    embedder.embed(texts)
    for _ in range(repeats):
        for i, text in enumerate(texts):
            calls[i].append(ms(lambda t=text: embedder.embed([t])))  # type: ignore[misc]
    medians = [float(np.median(c)) for c in calls]
    slope, fixed = np.polyfit(lengths, medians, 1)
    print(f"\nq8 on one thread by length (median of {repeats} calls each, the lengths in turn):\n")
    print("| tokens | " + " | ".join(map(str, lengths)) + " |")
    print("|---" * (len(lengths) + 1) + "|")
    print("| ms | " + " | ".join(f"{m:.2f}" for m in medians) + " |")
    print(f"\nFit: {fixed:.2f} ms + {slope * 1000:.0f} µs a token.")


def _pool(hidden: np.typing.NDArray[np.float32]) -> np.typing.NDArray[np.float32]:
    """The same work as ``MiniLMEmbedder.embed`` after the model: mean over tokens, L2 norm."""
    pooled = hidden[0].mean(axis=0)
    out: np.typing.NDArray[np.float32] = pooled / np.linalg.norm(pooled)
    return out


if __name__ == "__main__":
    main()
