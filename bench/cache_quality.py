"""Semantic cache quality: precision, recall and false-hit rate against the similarity threshold.

    .venv/bin/python bench/cache_quality.py [--pairs bench/data/cache_pairs.tsv]

The pairs are hand-made in the style of Quora Question Pairs (label 1: an answer to one serves the other):
paraphrases, related-but-different questions, and adversarial negations, role swaps, number and entity
substitutions. Each pair is scored with the real embedder (MiniLM int8) and judged at each threshold
without and with the lexical guard. "false hits" is the share of label-0 pairs that would be served.
Prints Markdown tables for docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import time
from collections import Counter
from pathlib import Path

import numpy as np

from groupqwen.cache.embedder import MiniLMEmbedder
from groupqwen.cache.guard import LexicalGuard
from groupqwen.cache.semantic import CachePolicy

DEFAULT_PAIRS = Path(__file__).parent / "data" / "cache_pairs.tsv"


def load(path: Path) -> list[tuple[bool, str, str, str]]:
    rows = []
    for line in path.read_text(encoding="utf-8").splitlines():
        if line.startswith("#") or not line.strip():
            continue
        label, kind, query, cached = line.split("\t")
        rows.append((label == "1", kind, query, cached))
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pairs", type=Path, default=DEFAULT_PAIRS)
    args = parser.parse_args()
    rows = load(args.pairs)
    labels = np.array([r[0] for r in rows])
    embedder = MiniLMEmbedder(threads=2)
    queries = embedder.embed([r[2] for r in rows])
    cached = embedder.embed([r[3] for r in rows])
    similarity = (queries * cached).sum(axis=1)
    guard = LexicalGuard()
    started = time.perf_counter()
    verdicts = [guard.check(r[2], r[3]) for r in rows]
    guard_us = (time.perf_counter() - started) / len(rows) * 1e6
    passes = np.array([v.ok for v in verdicts])
    kinds = Counter(r[1] for r in rows)
    print(f"{len(rows)} pairs: " + ", ".join(f"{n} {k}" for k, n in kinds.items()))
    print(f"guard: {guard_us:.0f} µs a pair\n")
    columns = ["threshold", "precision", "recall", "false hits"]
    columns += [f"{c} + guard" for c in columns[1:]]
    print("| " + " | ".join(columns) + " |")
    print("|---|---|---|---|---|---|---|")
    chosen = CachePolicy().threshold
    for threshold in np.round(np.arange(0.70, 0.981, 0.02), 2):
        cells = []
        for accept in (np.ones_like(passes), passes):
            served = (similarity >= threshold) & accept
            tp, fp = int((served & labels).sum()), int((served & ~labels).sum())
            precision = tp / (tp + fp) if tp + fp else 1.0
            cells.append((precision, tp / labels.sum(), fp / (~labels).sum()))
        mark = " **(chosen)**" if abs(threshold - chosen) < 1e-9 else ""
        (p0, r0, f0), (p1, r1, f1) = cells
        print(f"| {threshold:.2f}{mark} | {p0:.3f} | {r0:.3f} | {f0:.3f} | {p1:.3f} | {r1:.3f} | {f1:.3f} |")
    print(f"\nAt the chosen threshold {chosen}, pairs served by kind (without guard → with guard):\n")
    print("| kind | pairs | served, no guard | served, guard |")
    print("|---|---|---|---|")
    for kind, count in kinds.items():
        mask = np.array([r[1] == kind for r in rows])
        above = (similarity >= chosen) & mask
        print(f"| {kind} | {count} | {int(above.sum())} | {int((above & passes).sum())} |")
    reasons = Counter(v.reason for v, r in zip(verdicts, rows, strict=True) if not v.ok and not r[0])
    wrong = Counter(v.reason for v, r in zip(verdicts, rows, strict=True) if not v.ok and r[0])
    print(f"\nguard refusals of label-0 pairs: {dict(reasons)}; of label-1 pairs (lost hits): {dict(wrong)}")


if __name__ == "__main__":
    main()
