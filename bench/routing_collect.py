"""Ask each model every routing question once; keep answers and per-token logprobs on disk.

    .venv/bin/python bench/routing_collect.py short [--models ...]           # the shipped short questions
    .venv/bin/python bench/routing_collect.py gsm8k --limit 60 [--models ...]  # GSM8K dev, steps + Answer:
    .venv/bin/python bench/routing_collect.py code --limit 60 [--models ...]   # HumanEval (routing_code.py)

``short``: ``bench/data/routing_questions.jsonl`` (answer in a few tokens, ``max_tokens`` 24), merged into the
shipped ``bench/data/routing_answers.json`` per model. ``gsm8k``: the first ``--limit`` items of
``../shared/data/gsm8k_dev.jsonl`` (or ``--gsm8k PATH``), the system prompt asking for short steps and a
final ``Answer:`` line, ``max_tokens`` 320, one JSON line per item in
``bench/.cache/routing/gsm8k.<model>.jsonl`` (gitignored; the text, the per-token logprobs with 5
alternatives, seconds). ``code``: the first ``--limit`` HumanEval problems (``bench/routing_code.py``: its
system prompt, ``max_tokens`` 384), into ``bench/.cache/routing/code.<model>.jsonl`` the same way. Items
already there are skipped, so an interrupted run resumes. Both models answer an item before the next
starts, so the pairs grow together. ``bench/routing_long.py`` grades the cached answers and keeps the
compact rows the fit and the report read in ``bench/data/routing_long.jsonl``. An item a model already
has a row for there is not asked again either (its raw answer need not be cached here): ``--limit 70``
after 60 shipped collects items 60–69 only.
One generation at a time (the shipped answers were collected at ``nice 10`` on a shared 2-core machine);
calibration (``scripts/train_router.py``) and ``bench/routing.py`` read these same answers.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time
from pathlib import Path
from typing import Any

import routing_code

from groupqwen.backends.llamacpp import LlamaCppBackend
from groupqwen.config import Settings
from groupqwen.messages import GenerationRequest, Message, Sampling
from groupqwen.pool.bundled import ensure_bundled

ROOT = Path(__file__).resolve().parent.parent
DATA = ROOT / "bench" / "data"
CACHE = ROOT / "bench" / ".cache" / "routing"
QUESTIONS = DATA / "routing_questions.jsonl"
ANSWERS = DATA / "routing_answers.json"
LONG = DATA / "routing_long.jsonl"  # the graded, shipped long rows (bench/routing_long.py)
# the shared data sit beside the main checkout (../shared), two levels up from a worktree under wt/
GSM8K = (
    next(
        (p for p in (ROOT.parent / "shared", ROOT.parent.parent / "shared") if p.is_dir()),
        ROOT.parent / "shared",
    )
    / "data"
    / "gsm8k_dev.jsonl"
)
MODELS = ("qwen2.5-coder-0.5b", "qwen2.5-coder-1.5b")
SYSTEM = "Answer with only the answer: a number, a word or a short phrase. No explanation."
GSM8K_SYSTEM = (
    "Solve the problem. Show short steps, then end with a last line of the form 'Answer: <number>'."
)
GSM8K_MAX_TOKENS = 320
TOP_K = 5


async def ask(backend: LlamaCppBackend, system: str, question: str, max_tokens: int) -> dict[str, Any]:
    request = GenerationRequest(
        messages=(Message("system", system), Message("user", question)),
        sampling=Sampling(temperature=0.0, max_tokens=max_tokens, seed=0),
        top_logprobs=TOP_K,
    )
    text, tokens = [], []
    started = time.perf_counter()
    async for chunk in backend.stream(request):
        text.append(chunk.text)
        for lp in chunk.logprobs:
            tokens.append([lp.token, round(lp.logprob, 5), [round(t.logprob, 5) for t in lp.top]])
    return {"text": "".join(text), "tokens": tokens, "seconds": round(time.perf_counter() - started, 4)}


async def _backend(model_id: str, threads: int, n_ctx: int) -> LlamaCppBackend:
    settings = Settings()
    ensure_bundled(settings.catalog()[model_id], settings.models_dir)
    backend = LlamaCppBackend(Settings().available()[model_id], n_ctx=n_ctx, n_threads=threads)
    await backend.load()
    await ask(backend, SYSTEM, "Warm up.", 4)
    return backend


async def collect_short(models: list[str], threads: int, max_tokens: int) -> None:
    questions = [json.loads(line) for line in QUESTIONS.read_text(encoding="utf-8").splitlines()]
    out: dict[str, Any] = {"system": SYSTEM, "max_tokens": max_tokens, "threads": threads, "models": {}}
    if ANSWERS.is_file():
        out = json.loads(ANSWERS.read_text(encoding="utf-8"))
    for model_id in models:
        backend = await _backend(model_id, threads, 512)
        answers = {}
        for item in questions:
            answer = await ask(backend, SYSTEM, item["question"], max_tokens)
            answer["tokens"] = [t[1:] for t in answer["tokens"]]  # the shipped file keeps no token text
            answers[item["id"]] = answer
        await backend.close()
        out["models"][model_id] = answers
        ANSWERS.write_text(json.dumps(out, ensure_ascii=False, separators=(",", ":")), encoding="utf-8")
        print(model_id, "done", flush=True)


def gsm8k_items(path: Path, limit: int) -> list[dict[str, Any]]:
    rows = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    return [{"id": f"g{i:03d}", **row} for i, row in enumerate(rows[:limit])]


def jsonl(path: Path) -> list[dict[str, Any]]:
    """The rows of a JSON-lines file; none when it does not exist (yet)."""
    if not path.is_file():
        return []
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def cached(model_id: str, part: str = "gsm8k") -> dict[str, dict[str, Any]]:
    return {row["id"]: row for row in jsonl(CACHE / f"{part}.{model_id}.jsonl")}


def shipped(model_id: str, part: str) -> set[str]:
    """The ids of ``part`` that ``model_id`` already has a graded row for in the shipped ``LONG``."""
    return {row["id"] for row in jsonl(LONG) if row["part"] == part and row["model"] == model_id}


async def collect_long(
    part: str, items: list[dict[str, Any]], system: str, max_tokens: int, models: list[str], threads: int
) -> None:
    """Each model answers each item (``id``, ``question``) neither in its cache file nor shipped in
    ``routing_long.jsonl``, appended to the cache as it goes."""
    CACHE.mkdir(parents=True, exist_ok=True)
    done = {m: set(cached(m, part)) | shipped(m, part) for m in models}
    if all(item["id"] in done[m] for item in items for m in models):
        print(f"{part}: all {len(items)} items answered already", flush=True)
        return
    backends = {m: await _backend(m, threads, 1536) for m in models}
    for item in items:
        for model_id, backend in backends.items():
            if item["id"] in done[model_id]:
                continue
            answer = await ask(backend, system, item["question"], max_tokens)
            row = {"id": item["id"], **answer}
            with (CACHE / f"{part}.{model_id}.jsonl").open("a", encoding="utf-8") as f:
                f.write(json.dumps(row, ensure_ascii=False, separators=(",", ":")) + "\n")
            print(item["id"], model_id, f"{answer['seconds']:.1f}s", len(answer["tokens"]), flush=True)
    for backend in backends.values():
        await backend.close()


def main() -> None:
    formatter = argparse.RawDescriptionHelpFormatter
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=formatter)
    parser.add_argument("set", choices=("short", "gsm8k", "code"))
    parser.add_argument("--models", nargs="+", default=list(MODELS))
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--max-tokens", type=int, default=24, help="short questions only")
    parser.add_argument("--limit", type=int, default=60, help="gsm8k, code: the first N items")
    parser.add_argument("--gsm8k", type=Path, default=GSM8K)
    args = parser.parse_args()
    if args.set == "short":
        asyncio.run(collect_short(args.models, args.threads, args.max_tokens))
    elif args.set == "gsm8k":
        items = gsm8k_items(args.gsm8k, args.limit)
        asyncio.run(collect_long("gsm8k", items, GSM8K_SYSTEM, GSM8K_MAX_TOKENS, args.models, args.threads))
    else:
        items = routing_code.problems()[: args.limit]
        asyncio.run(
            collect_long(
                "code", items, routing_code.SYSTEM, routing_code.MAX_TOKENS, args.models, args.threads
            )
        )


if __name__ == "__main__":
    main()
