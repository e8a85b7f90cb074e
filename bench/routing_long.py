"""Long answers for routing (GSM8K with reasoning, HumanEval code): graded, compact, shipped.

    .venv/bin/python bench/routing_long.py   # bench/.cache/routing/*.jsonl → bench/data/routing_long.jsonl

``bench/routing_collect.py gsm8k|code`` caches each model's whole answers with per-token logprobs (too big
to ship). This grades them (GSM8K: ``routing_gsm8k.is_correct``; code: ``routing_code.passes``, the
problem's tests in a sandboxed process) and keeps, per (part, item, model), one compact row: whether it was
right, seconds, length, the ``confidence.measures`` of the whole answer, and its first ``HEAD`` tokens
(text, logprob, top alternatives; rounded) — the default ``router.buffer_tokens`` (48) the cascade
decides on (about 2 kB a row). ``scripts/train_router.py`` and ``bench/routing.py`` read only this file,
so the fit and the report are reproducible from the repository. A shipped row with no cached answer on
this machine is kept as it is (per part, item and model), so collecting more items (``routing_collect.py``
skips the shipped ones) and rebuilding adds to the file without losing what was there. Items both models
answered are kept; the split (a third held out, by hash of the question: ``routing_gsm8k.split_of``) is
stored with each row.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "bench")]

import routing_code  # noqa: E402
import routing_gsm8k  # noqa: E402
from routing_collect import GSM8K, GSM8K_SYSTEM, LONG, MODELS, cached, gsm8k_items, jsonl  # noqa: E402

from groupqwen.config.router import RouterConfig  # noqa: E402
from groupqwen.messages import TokenLogprob, TopLogprob  # noqa: E402
from groupqwen.orchestrator.confidence import measures  # noqa: E402

HEAD = 48  # tokens kept per answer: the default buffer_tokens, what the cascade decides on
PARTS = ("gsm8k", "code")
SYSTEMS = {"gsm8k": GSM8K_SYSTEM, "code": routing_code.SYSTEM}  # each part's system prompt
FIT_AT = (8, 16, 32, 48)  # prefix lengths a calibration row is taken at (and the decision length)


def decision_prefixes(n: int, min_tokens: int | None = None, buffer: int | None = None) -> list[int]:
    """The lengths at which the cascade (``orchestrator/cascade.py``) scores an answer of ``n`` tokens
    before it commits: every length from ``min_tokens`` to ``min(n, buffer_tokens)`` (defaults: the
    configuration's), or that length alone when it is shorter. Below the bar at any of them, it escalates."""
    config = RouterConfig()
    low = config.min_tokens if min_tokens is None else min_tokens
    top = min(n, config.buffer_tokens if buffer is None else buffer)
    return list(range(low, top + 1)) if top >= low else [max(top, 1)]


def fit_prefixes(n: int) -> list[int]:
    """The prefix lengths an answer of ``n`` tokens gives calibration rows at: ``FIT_AT`` below the
    decision length, and the decision length itself (a short answer: only itself)."""
    top = decision_prefixes(n)[-1]
    return [k for k in FIT_AT if k < top] + [top]


def tokens_of(raw: list[Any]) -> list[TokenLogprob]:
    """``[token, logprob, [top logprobs]]`` rows → ``TokenLogprob`` (the text is kept: the span needs it)."""
    return [TokenLogprob(t, lp, (), tuple(TopLogprob("", a, ()) for a in top)) for t, lp, top in raw]


def items(part: str) -> list[dict[str, Any]]:
    """The part's items in collection order: ``id``, ``question`` and what grades an answer."""
    return gsm8k_items(GSM8K, 10**6) if part == "gsm8k" else routing_code.problems()


def grade(part: str, item: dict[str, Any], text: str) -> bool:
    """Whether ``text`` answers ``item`` of ``part`` (GSM8K: the final number; code: the tests pass)."""
    return (
        routing_gsm8k.is_correct(text, item["answer"]) if part == "gsm8k" else routing_code.passes(item, text)
    )


def compact(part: str, item: dict[str, Any], model: str, answer: dict[str, Any]) -> dict[str, Any]:
    """One shipped row from a cached whole answer (``routing_collect``'s ``text``, ``tokens``, ``seconds``),
    graded now."""
    tokens = tokens_of(answer["tokens"])
    head = [[t, round(lp, 3), [round(a, 2) for a in top]] for t, lp, top in answer["tokens"][:HEAD]]
    return {"part": part, "id": item["id"], "split": routing_gsm8k.split_of(item["question"]), "model": model,
            "ok": grade(part, item, answer["text"]), "seconds": answer["seconds"], "tokens": len(tokens),
            "measures": [round(float(v), 4) for v in measures(tokens)], "head": head}  # fmt: skip


def build(
    part: str, answered: Mapping[str, Mapping[str, dict[str, Any]]], kept: Iterable[dict[str, Any]]
) -> list[dict[str, Any]]:
    """``part``'s rows in collection order, ``MODELS`` order within an item. Per (item, model): the cached
    answer in ``answered`` (model → id → answer), graded afresh, else the row for it in ``kept`` (the
    shipped rows, as they are: their raw answers need not be on this machine). An item is kept only when
    every model has a row."""
    old = {(r["id"], r["model"]): r for r in kept if r["part"] == part}
    out = []
    for item in items(part):
        got = []
        for model in MODELS:
            answer = answered.get(model, {}).get(item["id"])
            row = compact(part, item, model, answer) if answer is not None else old.get((item["id"], model))
            if row is not None:
                got.append(row)
        if len(got) == len(MODELS):
            out.extend(got)
    return out


def rows(part: str | None = None, split: str | None = None) -> list[dict[str, Any]]:
    """The shipped rows, ``head`` as ``TokenLogprob``s; ``part`` / ``split`` keep one part / split."""
    return [
        {**row, "head": tokens_of(row["head"])}
        for row in jsonl(LONG)
        if (part is None or row["part"] == part) and (split is None or row["split"] == split)
    ]


def paired(part: str, split: str | None = None) -> list[dict[str, Any]]:
    """One entry per item: ``{part, id, question, split, answers: {model: row}}``, in collection order."""
    by_id: dict[str, dict[str, Any]] = {}
    for row in rows(part, split):
        by_id.setdefault(row["id"], {"answers": {}})["answers"][row["model"]] = row
    out = []
    for item in items(part):
        if item["id"] in by_id:
            out.append({"part": part, "id": item["id"], "question": item["question"],
                        "split": routing_gsm8k.split_of(item["question"]), **by_id[item["id"]]})  # fmt: skip
    return out


def main() -> None:
    shipped = jsonl(LONG)  # the rows as they are (``head`` as lists)
    built, fresh = [], 0
    for part in PARTS:
        answered = {m: cached(m, part) for m in MODELS}
        fresh += sum(len(a) for a in answered.values())
        built += build(part, answered, shipped)
    LONG.write_text("".join(json.dumps(r, ensure_ascii=False, separators=(",", ":")) + "\n" for r in built))
    for part in PARTS:
        mine = [r for r in built if r["part"] == part]
        for model in MODELS:
            got = [r for r in mine if r["model"] == model]
            held = [r for r in got if r["split"] == "heldout"]
            right, held_right = sum(r["ok"] for r in got), sum(r["ok"] for r in held)
            print(f"{part} {model}: {right}/{len(got)} right ({held_right}/{len(held)} held out)")
    print(f"wrote {LONG} ({LONG.stat().st_size} bytes, {len(built)} rows; {fresh} cached answers graded,")
    print(f"{len(shipped)} rows were shipped before)")


if __name__ == "__main__":
    main()
