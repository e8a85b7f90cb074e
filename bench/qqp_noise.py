"""How many of QQP's "not duplicate" pairs a cache would serve are the same question, what that does to
issue 16's goal (false-hit rate ≤ 1 % at recall ≥ 0.40, both counted against the labels), and what the
shipped verifier's hits are when read instead of counted against the labels.

One of the team read seeded samples of pairs and wrote down, pair by pair, whether the cached answer to
one question would serve the asker of the other (``bench/data/qqp_read.tsv``: the verdicts with the two
questions; a question that points at something not in it, "this text", "the following program", is never
the same as another):

1. The *tune* part's non-duplicates, 30 in each of four bands of the bundled embedder's cosine. From each
   band's share read as the same question (Wilson 95 %), how many of all its non-duplicates are the same
   question (bands below 0.80 unread, counted as none: a lower bound), and the false-hit rate that a
   verifier making *no* mistake a reader would see still measures against the labels at recall 0.40. In
   any order: it cannot tell a labelled duplicate from a same-question pair labelled otherwise (the text
   is of the same kind), so serving 40 % of the one it serves 40 % of the other. In cosine order: it
   serves the same-question pairs from the highest cosine down until 40 % of the labelled duplicates are
   served (the order a similarity-led cache leans to).
2. The *calibrate* part's pairs the shipped verifier serves at ``max_false_hit_rate`` 0.01, 0.02, 0.05,
   30 of its served non-duplicates and 30 of its served duplicates at each. With the shares read as
   different, its false-hit rate and recall as a reader would count them (estimates: the pairs that read
   as different are taken as the non-duplicates less the same-question share found in 1., the
   same-question pairs as the duplicates plus that share).

    .venv/bin/python bench/qqp_noise.py           # the tables (the questions' vectors: bench/qqp.py)
    .venv/bin/python bench/qqp_noise.py --draw    # print every seeded sample, to read them again
"""

from __future__ import annotations

import argparse
import random
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import numpy.typing as npt
import qqp

from groupqwen.cache import verifier as verifiers
from groupqwen.cache.verifier import Verifier

READ = Path(__file__).resolve().parent / "data" / "qqp_read.tsv"
BANDS = ((0.95, 1.01), (0.90, 0.95), (0.85, 0.90), (0.80, 0.85))
RATES = (0.01, 0.02, 0.05)
PER_SAMPLE = 30
SEED = 16
RECALL = 0.40

Mask = npt.NDArray[np.bool_]


@dataclass(frozen=True)
class Sample:
    """One stratum of pairs: how many it holds, and of the ``read`` drawn from it how many read as the
    same question."""

    size: int
    read: int
    same: int

    def share(self, which: int = 0) -> float:
        """The share read as the same question: 0 the point, 1 / 2 its Wilson 95 % interval's low / high."""
        if not self.read:
            return 0.0
        return (self.same / self.read, *qqp.wilson(self.same, self.read))[which]


def verdicts(path: Path = READ) -> dict[int, bool]:
    """``{pair id: read as the same question}`` from the file."""
    out: dict[int, bool] = {}
    for line in path.read_text(encoding="utf-8").splitlines():
        if line.strip() and not line.startswith("#"):
            pair_id, same, *_texts = line.split("\t")
            if same not in ("0", "1"):
                raise ValueError(f"{path}: pair {pair_id}: 'same' must be 0 or 1, not {same!r}")
            out[int(pair_id)] = same == "1"
    return out


def drawn(pairs: qqp.Pairs, strata: list[Mask]) -> list[list[int]]:
    """Each stratum's rows in a seeded order (one generator shuffling the strata in turn), the first
    ``PER_SAMPLE``: the rows to read."""
    rng, out = random.Random(SEED), []
    for mask in strata:
        rows = list(np.flatnonzero(mask))
        rng.shuffle(rows)
        out.append(rows[:PER_SAMPLE])
    return out


def samples(pairs: qqp.Pairs, strata: list[Mask], read: dict[int, bool]) -> list[Sample]:
    """Each stratum's counts; every drawn pair must have been read (so a sample is the seed's, not a
    choice)."""
    out = []
    for mask, rows in zip(strata, drawn(pairs, strata), strict=True):
        missing = [pairs.ids[i] for i in rows if pairs.ids[i] not in read]
        if missing:
            raise SystemExit(f"{READ} lacks pairs {missing}: --draw prints them")
        out.append(Sample(int(mask.sum()), len(rows), sum(read[pairs.ids[i]] for i in rows)))
    return out


def bands(pairs: qqp.Pairs) -> list[Mask]:
    """The non-duplicates in each of ``BANDS`` of cosine."""
    cosine = pairs.cosine
    return [~pairs.labels & (cosine >= low) & (cosine < high) for low, high in BANDS]


def floors(pairs: qqp.Pairs, found: list[Sample], which: int) -> tuple[float, float, float]:
    """(same-question non-duplicates as a share of all non-duplicates, the false-hit rate of a flawless
    reader at ``RECALL`` in any order, in cosine order), each band's share taken at ``which``."""
    negatives = int((~pairs.labels).sum())
    same = sum(b.size * b.share(which) for b in found)
    at = float(np.quantile(pairs.cosine[pairs.labels], 1 - RECALL))  # RECALL of the duplicates lie above
    masks = bands(pairs)
    above = sum(
        int((m & (pairs.cosine >= at)).sum()) * b.share(which) for m, b in zip(masks, found, strict=True)
    )
    return same / negatives, RECALL * same / negatives, above / negatives


def served(pairs: qqp.Pairs, verifier: Verifier) -> list[Mask]:
    """Per rate of ``RATES``, the non-duplicates and then the duplicates the verifier serves at it."""
    scores = qqp.verifier_scores(pairs, verifier)
    out = []
    for rate in RATES:
        hit = scores >= verifier.bar_for(rate)
        out += [hit & ~pairs.labels, hit & pairs.labels]
    return out


def as_read(pairs: qqp.Pairs, negatives: Sample, duplicates: Sample, same: float) -> tuple[float, float]:
    """(false-hit rate, recall) of serving these as a reader counts them: the served pairs read as
    different over the pairs that read as different, the served pairs read as the same over those that
    do; ``same``: the share of non-duplicates that are the same question."""
    n0, n1 = int((~pairs.labels).sum()), int(pairs.labels.sum())
    wrong = negatives.size * (1 - negatives.share()) + duplicates.size * (1 - duplicates.share())
    right = negatives.size * negatives.share() + duplicates.size * duplicates.share()
    return wrong / (n0 * (1 - same)), right / (n1 + n0 * same)


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--draw", action="store_true", help="print each seeded sample to read")
    args = parser.parse_args()
    parts = qqp.load()
    tune, calibrate, verifier = parts["tune"], parts["calibrate"], verifiers.load()
    names = [f"tune, non-duplicates, cosine {low}–{high}" for low, high in BANDS]
    names += [
        f"calibrate, {kind} served at {rate}" for rate in RATES for kind in ("non-duplicates", "duplicates")
    ]
    strata = [(tune, m) for m in bands(tune)] + [(calibrate, m) for m in served(calibrate, verifier)]
    if args.draw:
        rows = drawn(tune, bands(tune)) + drawn(calibrate, served(calibrate, verifier))
        for name, (pairs, _), chosen in zip(names, strata, rows, strict=True):
            print(f"# {name}")
            for i in chosen:
                print(f"{pairs.ids[i]}\t?\t{pairs.a[i]}\t{pairs.b[i]}")
        return
    read = verdicts()
    found = samples(tune, bands(tune), read)
    print(f"tune part: {int((~tune.labels).sum())} non-duplicates, {int(tune.labels.sum())} duplicates\n")
    print("| cosine | non-duplicates | read | same question | share [Wilson 95 %] | same-question ones |")
    print("|---|---|---|---|---|---|")
    for (low, high), b in zip(BANDS, found, strict=True):
        point, low_end, high_end = (b.share(k) for k in range(3))
        print(
            f"| {low:.2f}–{min(high, 1.0):.2f} | {b.size} | {b.read} | {b.same} | {point:.0%} "
            f"[{low_end:.0%}, {high_end:.0%}] | {b.size * point:.0f} [{b.size * low_end:.0f}, "
            f"{b.size * high_end:.0f}] |"
        )
    rows = [floors(tune, found, which) for which in (0, 1, 2)]
    print(f"\nat recall {RECALL:.2f} against the labels, a reader making no mistake (cosine ≥ 0.80 only):\n")
    print("| | point | low end | high end |")
    print("|---|---|---|---|")
    for k, name in enumerate(
        ("same-question pairs among the non-duplicates", "its false-hit rate, serving in any order",
         "its false-hit rate, serving in cosine order")
    ):  # fmt: skip
        print(f"| {name} | " + " | ".join(f"{r[k]:.2%}" for r in rows) + " |")
    hits = samples(calibrate, served(calibrate, verifier), read)
    n0, n1 = int((~calibrate.labels).sum()), int(calibrate.labels.sum())
    print(f"\nthe shipped verifier on the calibrate part ({n0} non-duplicates, {n1} duplicates):\n")
    print(
        "| max_false_hit_rate | served: non-duplicates / duplicates | read as the same: of the "
        "non-duplicates / of the duplicates | against the labels: false hits, recall | as read: false hits, "
        "recall |"
    )
    print("|---|---|---|---|---|")
    for k, rate in enumerate(RATES):
        negatives, duplicates = hits[2 * k], hits[2 * k + 1]
        wrong, right = as_read(calibrate, negatives, duplicates, rows[0][0])
        print(
            f"| {rate} | {negatives.size} / {duplicates.size} | {negatives.same} of {negatives.read} "
            f"[{negatives.share(1):.0%}, {negatives.share(2):.0%}] / {duplicates.same} of {duplicates.read} "
            "| "
            f"{negatives.size / n0:.2%}, {duplicates.size / n1:.3f} | {wrong:.2%}, {right:.3f} |"
        )


if __name__ == "__main__":
    main()
