"""GSM8K answers for routing (``bench/routing_collect.py gsm8k``): the split and the grading.

The split is by hash of the question (a third held out: ``sha256(question) % 3 == 0``), so it does not
depend on how many items were collected or in which order (``bench/routing_long.py`` uses it for every long
part); ``scripts/train_router.py`` reads only the ``tune`` rows, ``bench/routing.py`` reports the
``heldout`` rows apart. An answer is right when its final
number (the first number after its last "answer" marker, else its last number) equals the gold number
after ``####``.
"""

from __future__ import annotations

import hashlib
import re

_NUMBER = re.compile(r"-?\d[\d,]*(?:\.\d+)?")


def split_of(question: str) -> str:
    return "heldout" if int(hashlib.sha256(question.encode()).hexdigest(), 16) % 3 == 0 else "tune"


def final_number(text: str) -> float | None:
    lower = text.lower()
    cut = lower.rfind("answer")
    found = _NUMBER.findall(text[cut:]) if cut >= 0 else []
    found = found[:1] if found else _NUMBER.findall(text)[-1:]
    if not found:
        return None
    try:
        return float(found[0].replace(",", ""))
    except ValueError:
        return None


def is_correct(text: str, gold_answer: str) -> bool:
    got = final_number(text)
    gold = float(gold_answer.rsplit("####", 1)[1].strip().replace(",", ""))
    return got is not None and abs(got - gold) < 1e-6
