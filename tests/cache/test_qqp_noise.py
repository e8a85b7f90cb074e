"""``bench/qqp_noise.py``: the read verdicts, each band's seeded sample, and the false-hit rate a flawless
reader would still measure against noisy labels."""

from __future__ import annotations

import math
import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[2]
sys.path[:0] = [str(ROOT / "bench")]

import qqp  # noqa: E402
import qqp_noise  # noqa: E402


def pairs(rows: list[tuple[int, float, bool]]) -> qqp.Pairs:
    """Pairs of (id, cosine, duplicate): unit vectors at that cosine."""
    a = np.tile(np.array([1.0, 0.0], np.float32), (len(rows), 1))
    b = np.array([[c, math.sqrt(1 - c * c)] for _, c, _ in rows], np.float32)
    ids = [i for i, _, _ in rows]
    texts = [f"q{i}" for i in ids]
    return qqp.Pairs(ids, texts, texts, np.array([d for _, _, d in rows]), a, b)


def test_the_shipped_verdicts_are_read_whole() -> None:
    got = qqp_noise.verdicts()
    lines = [
        line for line in qqp_noise.READ.read_text(encoding="utf-8").splitlines() if not line.startswith("#")
    ]
    assert len(got) == len(lines) >= len(qqp_noise.BANDS) * qqp_noise.PER_SAMPLE  # one verdict a pair
    assert 0 < sum(got.values()) < len(got)


def test_a_verdict_other_than_0_or_1_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "read.tsv"
    path.write_text("# id\tsame\ta\tb\n7\tyes\ta\tb\n", encoding="utf-8")
    with pytest.raises(ValueError, match="pair 7: 'same' must be 0 or 1, not 'yes'"):
        qqp_noise.verdicts(path)


def test_a_flawless_reader_serves_the_same_question_pairs_the_labels_call_different() -> None:
    """Ten non-duplicates: four in the top band (two read as the same question: 0.97 and 0.955), six far
    below; ten duplicates, six at 0.96 (so 40 % of them lie above 0.96) and four at 0.5. Same-question
    pairs: 2 of 10 non-duplicates. Serving 40 % of them in any order: 0.4 × 2 / 10. In cosine order down
    to 0.96: the one same-question pair at 0.97 counts, the half of the band above 0.96 read as same."""
    rows = [(1, 0.97, False), (2, 0.97, False), (3, 0.955, False), (4, 0.955, False)]
    rows += [(10 + k, 0.3, False) for k in range(6)]
    rows += [(20 + k, 0.96, True) for k in range(6)] + [(30 + k, 0.5, True) for k in range(4)]
    data = pairs(rows)
    found = qqp_noise.samples(data, qqp_noise.bands(data), {1: True, 2: False, 3: True, 4: False})
    assert found[0] == qqp_noise.Sample(size=4, read=4, same=2)
    assert [b.size for b in found[1:]] == [0, 0, 0]
    same, any_order, cosine_order = qqp_noise.floors(data, found, 0)
    assert same == pytest.approx(0.2)
    assert any_order == pytest.approx(0.08)
    assert cosine_order == pytest.approx(0.1)  # two non-duplicates at 0.97, half of them read as same


def test_every_pair_of_a_sample_must_have_been_read() -> None:
    data = pairs([(1, 0.97, False), (2, 0.97, False), (3, 0.99, True)])
    with pytest.raises(SystemExit, match=r"lacks pairs \[2\]"):
        qqp_noise.samples(data, qqp_noise.bands(data), {1: True})


def test_a_sample_is_the_seeds_not_a_choice() -> None:
    """Forty pairs in the top band: the same thirty are drawn each time, in the same order."""
    data = pairs([(k, 0.97, False) for k in range(40)])
    first = qqp_noise.drawn(data, qqp_noise.bands(data))
    assert first == qqp_noise.drawn(data, qqp_noise.bands(data))
    assert len(first[0]) == qqp_noise.PER_SAMPLE and first[0] != sorted(first[0])


def test_the_verifiers_hits_as_a_reader_counts_them() -> None:
    """Ten non-duplicates (a fifth the same question), ten duplicates. Served: four non-duplicates, half
    read as the same; five duplicates, all read as the same. Wrong as read: 2 of the 8 pairs that read as
    different; right as read: 2 + 5 of the 12 that read as the same."""
    data = pairs([(k, 0.5, False) for k in range(10)] + [(10 + k, 0.9, True) for k in range(10)])
    negatives = qqp_noise.Sample(size=4, read=4, same=2)
    duplicates = qqp_noise.Sample(size=5, read=5, same=5)
    wrong, right = qqp_noise.as_read(data, negatives, duplicates, same=0.2)
    assert wrong == pytest.approx(2 / 8) and right == pytest.approx(7 / 12)
