"""The export owner's name is scrubbed as a name, not as every word it is made of.

``fixtures/names.jsonl``: 120 sentences labelled with the owner's name spans, in two parts. ``tune`` (74
sentences, 39 spans) is what the rules in ``groupqwen/finetune/names.py`` were written against; ``heldout``
(46 sentences, 23 spans, other owners mostly) was written before the rules and never tuned on.
"""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import pytest

from groupqwen.finetune.names import NameMatcher
from groupqwen.finetune.pii import PatternDetector, Scrubber
from groupqwen.finetune.records import Conversation, Identity, Turn

NAMES = Path(__file__).parent / "fixtures" / "names.jsonl"


def _scrub(owner: str, text: str) -> str:
    conv = Conversation("c", "chatgpt", (Turn("user", text),))
    return Scrubber([PatternDetector(Identity((owner,)))]).scrub(conv).turns[0].content


def test_ordinary_words_in_the_owners_name_are_left_alone() -> None:
    """The issue's examples: owner "Will Young" and "Alice Example"."""
    text = "Young plants need more water in summer. Will the weather help?"
    assert _scrub("Will Young", text) == text
    assert _scrub("Alice Example", "Example: items[::-1] reverses a list.") == (
        "Example: items[::-1] reverses a list."
    )
    assert _scrub("Will Young", "Hi, I'm Will Young. Will this work? Young's modulus, please.") == (
        "Hi, I'm [USER_NAME]. Will this work? Young's modulus, please."
    )
    assert _scrub("Alice Example", "I'm Alice; here is an Example class.") == (
        "I'm [USER_NAME]; here is an Example class."
    )


@pytest.mark.parametrize(
    ("owner", "text", "names"),
    [
        ("Will Young", "YOUNG, WILL - CV", ["YOUNG", "WILL"]),  # beside each other, either order
        ("Will Young", "Sign it as W. Young.", ["W. Young"]),  # an initial
        ("Will Young", "Mr. Young and Dr Young", ["Young", "Young"]),  # a common surname after a title
        ("Will Young", "Neil Young and Young's modulus", []),  # a common surname alone
        ("Will Young", "Thanks,\nWill", ["Will"]),  # a signature
        ("Will Young", "Will here. Will it rain?", ["Will"]),  # a cue after
        ("Will Young", "Good question, Will.", ["Will"]),  # a vocative
        ("Will Young", "an email from Will to the team", ["Will"]),  # mid-sentence
        ("Will Young", "Will Smith and the Last Will", []),  # someone else's name, a title
        ("Will Young", "will young people come?", []),  # lower case: words
        ("Mark Price", "Mark Twain; mark it; I'm Mark", ["Mark"]),
        ("Priya Raman", "priya here, PRIYA RAMAN, Raman", ["priya", "PRIYA RAMAN", "Raman"]),  # uncommon
        ("Alice Example", "alice example wrote it", ["alice example"]),  # not every part is a common word
    ],
)
def test_name_rules(owner: str, text: str, names: list[str]) -> None:
    assert [text[s:e] for s, e in NameMatcher([owner]).find(text)] == names


@pytest.mark.parametrize(
    "owner", ["", " ", "A", "J.R.R. Tolkien", "O'Brien (Jr.)", "José Álvarez-Núñez", "Ma Li", "ß Straße"]
)
def test_odd_names_do_not_break_the_matcher(owner: str) -> None:
    text = "J.R.R. Tolkien, José Álvarez-Núñez, O'Brien (Jr.), Ma Li and STRASSE met."
    for s, e in NameMatcher([owner]).find(text):
        assert 0 <= s < e <= len(text)


def _precision_recall(split: str) -> tuple[float, float]:
    tp = fp = fn = 0
    for line in NAMES.read_text(encoding="utf-8").splitlines():
        row = json.loads(line)
        if row["split"] != split:
            continue
        detector = PatternDetector(Identity((row["owner"],)))
        gold = Counter(tuple(p) for p in row["pii"])
        found = Counter((s.kind, s.text) for s in detector.find(row["text"]) if s.kind == "USER_NAME")
        hits = sum((gold & found).values())
        tp, fp, fn = tp + hits, fp + sum(found.values()) - hits, fn + sum(gold.values()) - hits
    return tp / (tp + fp), tp / (tp + fn)


def test_name_precision_and_recall_on_the_tuning_part() -> None:
    """Measured: precision 0.89 (5 false positives, all uncommon names of someone or something else:
    "Alice in Wonderland", "the Raman effect", "Uncle Sam"), recall 1.00. The old scrubber: 0.54 / 0.85."""
    precision, recall = _precision_recall("tune")
    assert precision >= 0.85 and recall >= 0.95, (precision, recall)


def test_name_precision_and_recall_on_the_held_out_part() -> None:
    """Never tuned on. Measured: precision 1.00, recall 0.96 (missed: the name in "Will Will need a
    visa?", after a capitalised modal). The old scrubber: 0.55 / 1.00."""
    precision, recall = _precision_recall("heldout")
    assert precision >= 0.9 and recall >= 0.9, (precision, recall)
