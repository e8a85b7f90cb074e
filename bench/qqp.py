"""Quora Question Pairs for the cache (``shared/data/qqp_dev.jsonl``): a fixed three-way split, and the
questions' vectors from the gateway's embedder, computed once and kept on disk.

The split hashes each pair's ``id`` (sha256), so it never depends on the order of the file or on which
rows it holds: 60 % ``tune`` (the verifier's weights are fitted on it), 20 % ``calibrate`` (the map from
``cache.max_false_hit_rate`` to the verifier's bar is fitted on it), 20 % ``heldout`` (only reported on;
nothing is fitted or chosen on it). Questions are embedded as the cache embeds them: ``keys.normalise``d.

    .venv/bin/python bench/qqp.py [--data PATH]   # embed every question now (nice it: minutes of CPU)
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
import numpy.typing as npt

from groupqwen.cache.embedders import MiniLMEmbedder
from groupqwen.cache.guard import LexicalGuard
from groupqwen.cache.keys import normalise
from groupqwen.cache.verifier import Verifier

Part = Literal["tune", "calibrate", "heldout"]
PARTS: tuple[Part, ...] = ("tune", "calibrate", "heldout")
ROOT = Path(__file__).resolve().parent.parent
# the team's data sits beside the checkout (../shared/data), or beside the folder of a worktree
SHARED = next(
    (p for p in (ROOT.parent / "shared", ROOT.parent.parent / "shared") if p.is_dir()), ROOT.parent / "shared"
)
DEFAULT_DATA = Path(os.environ.get("GROUPQWEN_QQP", SHARED / "data" / "qqp_dev.jsonl"))
VECTORS_DIR = Path(os.environ.get("GROUPQWEN_QQP_VECTORS", "/tmp/groupqwen-qqp"))


def part_of(pair_id: int) -> Part:
    """The pair's part: by the first byte of sha256("qqp:<id>"), 60 / 20 / 20 %."""
    bucket = hashlib.sha256(f"qqp:{pair_id}".encode()).digest()[0] * 100 // 256
    return "tune" if bucket < 60 else "calibrate" if bucket < 80 else "heldout"


@dataclass(frozen=True)
class Pairs:
    """Pairs (normalised texts), their labels (True: duplicate) and unit vectors (rows of ``a``, ``b``)."""

    ids: list[int]
    a: list[str]
    b: list[str]
    labels: npt.NDArray[np.bool_]
    va: npt.NDArray[np.float32]
    vb: npt.NDArray[np.float32]

    @property
    def cosine(self) -> npt.NDArray[np.float32]:
        out: npt.NDArray[np.float32] = (self.va * self.vb).sum(axis=1)
        return out

    def select(self, mask: npt.NDArray[np.bool_]) -> Pairs:
        rows = np.flatnonzero(mask)
        return Pairs(
            [self.ids[i] for i in rows],
            [self.a[i] for i in rows],
            [self.b[i] for i in rows],
            self.labels[rows],
            self.va[rows],
            self.vb[rows],
        )


def read(path: Path = DEFAULT_DATA) -> list[tuple[int, str, str, bool]]:
    rows = []
    for line in path.read_text(encoding="utf-8").splitlines():
        if line.strip():
            row = json.loads(line)
            rows.append((int(row["id"]), normalise(row["a"]), normalise(row["b"]), bool(row["label"])))
    return rows


def vectors(texts: list[str], embedder: MiniLMEmbedder | None = None) -> dict[str, npt.NDArray[np.float32]]:
    """Each text's vector, from ``VECTORS_DIR`` (keyed by the embedder's name and the texts' digest) or
    embedded now and saved there."""
    unique = sorted(set(texts))
    digest = hashlib.sha256("\n".join(unique).encode()).hexdigest()[:16]
    embedder = embedder or MiniLMEmbedder(threads=1)
    path = VECTORS_DIR / f"{embedder.name}-{digest}.npy"
    if path.exists():
        matrix = np.load(path)
    else:
        matrix = np.concatenate([embedder.embed(unique[i : i + 256]) for i in range(0, len(unique), 256)])
        VECTORS_DIR.mkdir(parents=True, exist_ok=True)
        np.save(path.with_suffix(".tmp.npy"), matrix)
        path.with_suffix(".tmp.npy").replace(path)
    return dict(zip(unique, matrix, strict=True))


def load(path: Path = DEFAULT_DATA, embedder: MiniLMEmbedder | None = None) -> dict[Part, Pairs]:
    """The three parts, embedded."""
    rows = read(path)
    table = vectors([t for r in rows for t in r[1:3]], embedder)
    everything = Pairs(
        [r[0] for r in rows],
        [r[1] for r in rows],
        [r[2] for r in rows],
        np.array([r[3] for r in rows]),
        np.stack([table[r[1]] for r in rows]),
        np.stack([table[r[2]] for r in rows]),
    )
    parts = np.array([part_of(i) for i in everything.ids])
    return {p: everything.select(parts == p) for p in PARTS}


def verifier_scores(pairs: Pairs, verifier: Verifier) -> npt.NDArray[np.float64]:
    """The verifier's probability for each pair; -inf below its floor (never a candidate)."""
    out = np.full(len(pairs.ids), -np.inf)
    for i, (a, b, cosine) in enumerate(zip(pairs.a, pairs.b, pairs.cosine, strict=True)):
        if cosine >= verifier.floor:
            out[i] = verifier.probability(a, b, float(cosine))
    return out


def wilson(successes: int, trials: int, z: float = 1.959964) -> tuple[float, float]:
    """Wilson score interval for a proportion (95 % for the default z); (0, 1) when there are no trials."""
    if trials == 0:
        return (0.0, 1.0)
    p = successes / trials
    denominator = 1 + z * z / trials
    centre = (p + z * z / (2 * trials)) / denominator
    half = z / denominator * math.sqrt(p * (1 - p) / trials + z * z / (4 * trials * trials))
    return (max(0.0, centre - half), min(1.0, centre + half))


def row(name: str, served: npt.NDArray[np.bool_], labels: npt.NDArray[np.bool_]) -> str:
    """A Markdown row: precision, recall and false-hit rate of serving ``served``, with Wilson 95 %."""
    tp, fp = int((served & labels).sum()), int((served & ~labels).sum())
    cells = []
    for k, n in ((tp, tp + fp), (tp, int(labels.sum())), (fp, int((~labels).sum()))):
        low, high = wilson(k, n)
        cells.append(f"{k / n if n else 0.0:.3f} [{low:.3f}, {high:.3f}]")
    return f"| {name} | " + " | ".join(cells) + " |"


def report(pairs: Pairs, verifier: Verifier, threshold: float, rate: float, rates: tuple[float, ...]) -> None:
    """The issue's table on ``pairs``: the old default and plain cosine beside the verifier's operating
    points (``rate``: the default's)."""
    guard = LexicalGuard()
    passes = np.array([guard.check(a, b).ok for a, b in zip(pairs.a, pairs.b, strict=True)])
    labels, cosine = pairs.labels, pairs.cosine
    scores = verifier_scores(pairs, verifier)
    negatives = int((~labels).sum())
    print(f"{len(labels)} pairs ({int(labels.sum())} duplicates, {negatives} not), Wilson 95 % intervals:\n")
    print("| setting | precision | recall | false-hit rate |")
    print("|---|---|---|---|")
    print(row(f"cosine ≥ {threshold}, no guard", cosine >= threshold, labels))
    old = (cosine >= threshold) & passes
    print(row(f"old default: cosine ≥ {threshold} + guard", old, labels))
    for target in sorted({rate, *rates}):
        bar = verifier.bar_for(target)
        name = f"verifier, max_false_hit_rate {target} (bar {bar:.3f})"
        print(row(f"**{name} (default)**" if target == rate else name, scores >= bar, labels))
        fp = int(((scores >= bar) & ~labels).sum())
        plain = np.sort(cosine[~labels])[::-1]  # plain cosine at the same false-hit count
        at = plain[fp] if fp < negatives else -np.inf
        print(row(f"plain cosine at that rate (> {at:.3f})", cosine > at, labels))


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA)
    args = parser.parse_args()
    for name, pairs in load(args.data).items():
        print(f"{name}: {len(pairs.ids)} pairs, {int(pairs.labels.sum())} duplicates")


if __name__ == "__main__":
    main()
