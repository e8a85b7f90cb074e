"""The realistic mix live: a real gateway with the real models, beside the replay on the same items.

    nice -n 15 .venv/bin/python bench/routing.py --live --limit short=6 code=3 gsm8k=2

A `groupqwen serve` process (``gateway_process.py``) with the default ladder (``qwen2.5-coder-0.5b`` →
``1.5b``), the cache off (every request answered), 2 threads per model as the answers were collected. The
first ``--limit`` held-out items of each part (``routing_mix.items("heldout")``: the short questions' test
split, GSM8K and HumanEval held out) are sent, one at a time, as ``model: auto``, ``auto:cascade`` and each
named model: the collection's system prompt and ``max_tokens``, temperature 0, seed 0; graded with the same
graders. The model that answered is read from the ``x-groupqwen-model`` header (``-route``, ``-escalations``,
``-abandoned-tokens`` kept too); latency is the request's wall time. The oracle is taken from the live
small and large answers. Then, per part and for the mix (parts weighed equally): live accuracy, share to
the large model, mean latency; the replay's accuracy, share and latency on the same items; and per item
whether the replay sent it to the same model (route agreement) and graded it the same (answer agreement).
Each answer is appended to ``bench/.cache/routing/live.jsonl`` as it comes (the last run's rows; gitignored).
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from functools import partial
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import routing_code
import routing_long
import routing_mix
from gateway_process import gateway_process
from routing_collect import CACHE, GSM8K_MAX_TOKENS
from routing_questions import is_correct
from train_router import LARGE, SMALL, load_bench

from groupqwen.config import load_settings
from groupqwen.orchestrator.weights import routing_from_settings

ASKED = ("small", "large", "auto", "auto:cascade")  # what is sent; the oracle is derived
MODEL_OF = {"small": SMALL, "large": LARGE, "auto": "auto", "auto:cascade": "auto:cascade"}
ROWS = CACHE / "live.jsonl"
SETTINGS = {"cache__backend": "off", "n_threads": "2", "n_ctx": "2048"}


@dataclass(frozen=True)
class Taken:
    """What the gateway's headers say about an answer."""

    model: str
    route: str
    escalations: int
    abandoned: int = 0  # tokens the left tiers generated (x-groupqwen-abandoned-tokens)


def taken(headers: httpx.Headers | dict[str, str]) -> Taken:
    """``x-groupqwen-model``, ``-route``, ``-escalations`` and ``-abandoned-tokens`` (counts: 0 when absent);
    a clear error without a model."""
    model, route = headers.get("x-groupqwen-model"), headers.get("x-groupqwen-route")
    if not model or not route:
        raise ValueError(f"no x-groupqwen-model / x-groupqwen-route header in {dict(headers)}")
    counts = []
    for name in ("x-groupqwen-escalations", "x-groupqwen-abandoned-tokens"):
        count = headers.get(name) or "0"
        if not count.isdigit():
            raise ValueError(f"{name} is not a count: {count!r}")
        counts.append(int(count))
    return Taken(model, route, *counts)


def parse_limits(values: list[str]) -> dict[str, int]:
    """``["short=6", "code=3"]`` → ``{"short": 6, "code": 3}``; unknown parts and bad counts are refused."""
    parts = ("short", *routing_long.PARTS)
    out = {}
    for value in values:
        part, _, count = value.partition("=")
        if part not in parts or not count.isdigit():
            raise ValueError(f"--limit takes PART=N with PART one of {', '.join(parts)}: {value!r}")
        out[part] = int(count)
    return out


def chosen(items: list[routing_mix.Item], limits: dict[str, int]) -> list[routing_mix.Item]:
    """The first ``limits[part]`` items of each part (a part not named: none)."""
    seen: dict[str, int] = {}
    out = []
    for item in items:
        seen[item.part] = seen.get(item.part, 0) + 1
        if seen[item.part] <= limits.get(item.part, 0):
            out.append(item)
    return out


def graders() -> dict[tuple[str, str], tuple[Callable[[str], bool], int]]:
    """``(part, id) → (grade(text) → bool, max_tokens)`` for every held-out item."""
    test, answers = load_bench("test")
    out: dict[tuple[str, str], tuple[Callable[[str], bool], int]] = {}
    for q in test:
        out["short", q["id"]] = partial(is_correct, expected=q["answer"]), answers["max_tokens"]
    for part, max_tokens in (("gsm8k", GSM8K_MAX_TOKENS), ("code", routing_code.MAX_TOKENS)):
        for item in routing_long.items(part):
            out[part, item["id"]] = partial(routing_long.grade, part, item), max_tokens
    return out


def ask(
    client: httpx.Client, item: routing_mix.Item, policy: str, max_tokens: int
) -> tuple[str, Taken, float]:
    messages = [{"role": m.role, "content": m.content} for m in item.request.messages]
    body = {
        "model": MODEL_OF[policy],
        "messages": messages,
        "temperature": 0,
        "seed": 0,
        "max_tokens": max_tokens,
    }
    started = time.perf_counter()
    response = client.post("/v1/chat/completions", json=body)
    seconds = time.perf_counter() - started
    response.raise_for_status()
    return response.json()["choices"][0]["message"]["content"] or "", taken(response.headers), seconds


def run(items: list[routing_mix.Item]) -> list[dict[str, Any]]:
    """Each item asked under each policy through one gateway; one row per answer, appended to ``ROWS``.
    Both models answer once first (loaded, warm); then one policy at a time over all items, so no request
    follows the same prompt on a model (llama.cpp would reuse that prompt's evaluation)."""
    grade = graders()
    ROWS.parent.mkdir(parents=True, exist_ok=True)
    ROWS.write_text("")
    rows = []
    with gateway_process(SETTINGS, timeout_s=900) as client:
        for model in (SMALL, LARGE):
            body = {"model": model, "messages": [{"role": "user", "content": "Warm up."}], "max_tokens": 4}
            client.post("/v1/chat/completions", json=body).raise_for_status()
        for policy in ASKED:
            for item in items:
                check, max_tokens = grade[item.part, item.id]
                text, got, seconds = ask(client, item, policy, max_tokens)
                row = {"part": item.part, "id": item.id, "policy": policy, "ok": check(text),
                       "seconds": round(seconds, 3), **asdict(got)}  # fmt: skip
                rows.append(row)
                with ROWS.open("a", encoding="utf-8") as f:
                    f.write(json.dumps(row) + "\n")
                print(
                    policy,
                    item.part,
                    item.id,
                    got.model,
                    got.escalations,
                    got.abandoned,
                    row["ok"],
                    f"{seconds:.1f}s",
                    flush=True,
                )
    return rows


def live_outcomes(rows: list[dict[str, Any]]) -> dict[tuple[str, str], dict[str, tuple[bool, bool, float]]]:
    """``(part, id) → {policy: (right, reached the large model, seconds)}``; the oracle from small, large."""
    out: dict[tuple[str, str], dict[str, tuple[bool, bool, float]]] = {}
    for r in rows:
        out.setdefault((r["part"], r["id"]), {})[r["policy"]] = (r["ok"], r["model"] == LARGE, r["seconds"])
    for got in out.values():
        if "small" in got and "large" in got:
            s, g = got["small"], got["large"]
            got["oracle"] = g if g[0] and not s[0] else s
    return out


def compare(
    items: list[routing_mix.Item],
    live: dict[tuple[str, str], dict[str, tuple[bool, bool, float]]],
    replay: dict[tuple[str, str], dict[str, tuple[bool, bool, float]]],
) -> dict[str, dict[str, dict[str, float]]]:
    """``{part (and "mix"): {policy: {n, accuracy, to_large, latency_s, replay_accuracy, replay_to_large,
    replay_latency_s, route_agreement, answer_agreement}}}`` over the items answered live under a policy."""
    keys = ("accuracy", "to_large", "latency_s", "replay_accuracy", "replay_to_large", "replay_latency_s",
            "route_agreement", "answer_agreement")  # fmt: skip
    out: dict[str, dict[str, dict[str, float]]] = {}
    for part in dict.fromkeys(i.part for i in items):
        out[part] = {}
        for policy in routing_mix.POLICIES:
            pairs = [
                (live[k][policy], replay[k][policy])
                for k in ((i.part, i.id) for i in items if i.part == part)
                if policy in live.get(k, {})
            ]
            if not pairs:
                continue
            a = np.asarray([(*lv, *rp, lv[1] == rp[1], lv[0] == rp[0]) for lv, rp in pairs], float)
            out[part][policy] = {"n": len(pairs), **dict(zip(keys, a.mean(axis=0).tolist(), strict=True))}
    policies = [p for p in routing_mix.POLICIES if all(p in got for got in out.values())]
    if out and policies:
        out["mix"] = {
            p: {key: float(np.mean([out[part][p][key] for part in out])) for key in ("n", *keys)}
            for p in policies
        }
    return out


def print_comparison(result: dict[str, dict[str, dict[str, float]]]) -> None:
    print(
        "| part (held out) | n | policy | accuracy | to large | mean latency (s) | replay: accuracy "
        "| to large | latency (s) | same route | same grade |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for part, policies in result.items():
        for policy, r in policies.items():
            label, n = ("mix (parts weighed equally)", "") if part == "mix" else (part, str(int(r["n"])))
            print(
                f"| {label} | {n} | {policy} | {r['accuracy']:.2f} | {r['to_large']:.0%} | "
                f"{r['latency_s']:.1f} | {r['replay_accuracy']:.2f} | {r['replay_to_large']:.0%} | "
                f"{r['replay_latency_s']:.1f} | {r['route_agreement']:.0%} | {r['answer_agreement']:.0%} |"
            )


def main(limits: dict[str, int], rows_from: Path | None = None) -> None:
    """Run live (or read the rows of an earlier run from ``rows_from``) and print the comparison."""
    items = chosen(routing_mix.items("heldout"), limits)
    if rows_from is None:
        rows = run(items)
    else:
        rows = [
            json.loads(line) for line in rows_from.read_text(encoding="utf-8").splitlines() if line.strip()
        ]
    routing = routing_from_settings(load_settings())
    replay = {
        (i.part, i.id): {p: routing_mix.outcome(routing, i, p) for p in routing_mix.POLICIES} for i in items
    }
    print_comparison(compare(items, live_outcomes(rows), replay))
