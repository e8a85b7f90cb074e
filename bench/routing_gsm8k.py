"""GSM8K answers for routing: the items collected by ``bench/routing_collect.py gsm8k``, split and graded.

The split is by hash of the question (a third held out: ``sha256(question) % 3 == 0``), so it does not
depend on how many items were collected or in which order; ``scripts/train_router.py`` reads only the
``tune`` rows, ``bench/routing.py`` reports the ``heldout`` rows apart. An answer is right when its final
number (the first number after its last "answer" marker, else its last number) equals the gold number
after ``####``.
"""

from __future__ import annotations

import hashlib
import re
from typing import Any

from routing_collect import GSM8K, cached, gsm8k_items

from groupqwen.messages import TokenLogprob, TopLogprob

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


def tokens_of(raw: list[Any]) -> list[TokenLogprob]:
    """``[token, logprob, [top logprobs]]`` rows → ``TokenLogprob`` (the text is kept: the span needs it)."""
    return [TokenLogprob(t, lp, (), tuple(TopLogprob("", a, ()) for a in top)) for t, lp, top in raw]


def rows(models: tuple[str, ...], split: str | None = None) -> list[dict[str, Any]]:
    """The items every model in ``models`` answered: ``{id, question, split, answers: {model: {text,
    tokens, seconds, ok}}}``, in collection order; ``split`` keeps one split."""
    answered = {m: cached(m) for m in models}
    out = []
    for item in gsm8k_items(GSM8K, 10**6):
        if not all(item["id"] in answered[m] for m in models):
            continue
        which = split_of(item["question"])
        if split is not None and which != split:
            continue
        answers = {}
        for model in models:
            row = answered[model][item["id"]]
            answers[model] = {
                "text": row["text"],
                "tokens": tokens_of(row["tokens"]),
                "seconds": row["seconds"],
                "ok": is_correct(row["text"], item["answer"]),
            }
        out.append({"id": item["id"], "question": item["question"], "split": which, "answers": answers})
    return out
