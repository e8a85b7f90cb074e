"""Ask each bundled model every routing question once; keep answers and token logprobs in a JSON file.

    .venv/bin/python bench/routing_collect.py [--threads 2] [--max-tokens 24]

One model at a time (two generating models would share 2 cores and distort latencies). Policies are then
evaluated by ``bench/routing.py`` from these same answers, so every policy sees identical outputs. The
shipped answers were collected with ``--threads 1`` at ``nice 10`` on a shared 2-core machine.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time
from pathlib import Path
from typing import Any

from groupqwen.backends.llamacpp import LlamaCppBackend
from groupqwen.config import Settings
from groupqwen.messages import GenerationRequest, Message, Sampling
from groupqwen.pool.bundled import ensure_bundled

DATA = Path(__file__).parent / "data"
QUESTIONS = DATA / "routing_questions.jsonl"
ANSWERS = DATA / "routing_answers.json"
MODELS = ("smollm2-135m", "qwen2.5-coder-0.5b")
SYSTEM = "Answer with only the answer: a number, a word or a short phrase. No explanation."
TOP_K = 5


async def ask(backend: LlamaCppBackend, question: str, max_tokens: int) -> dict[str, Any]:
    request = GenerationRequest(
        messages=(Message("system", SYSTEM), Message("user", question)),
        sampling=Sampling(temperature=0.0, max_tokens=max_tokens, seed=0),
        top_logprobs=TOP_K,
    )
    text, tokens = [], []
    started = time.perf_counter()
    async for chunk in backend.stream(request):
        text.append(chunk.text)
        for lp in chunk.logprobs:
            tokens.append([round(lp.logprob, 5), [round(t.logprob, 5) for t in lp.top]])
    return {"text": "".join(text), "tokens": tokens, "seconds": round(time.perf_counter() - started, 4)}


async def collect(threads: int, max_tokens: int) -> None:
    settings = Settings()
    questions = [json.loads(line) for line in QUESTIONS.read_text(encoding="utf-8").splitlines()]
    out: dict[str, Any] = {"system": SYSTEM, "max_tokens": max_tokens, "threads": threads, "models": {}}
    for model_id in MODELS:
        spec = settings.catalog()[model_id]
        ensure_bundled(spec, settings.models_dir)
        spec = Settings().available()[model_id]
        backend = LlamaCppBackend(spec, n_ctx=512, n_threads=threads)
        await backend.load()
        await ask(backend, "Warm up.", 4)
        answers = {}
        for item in questions:
            answers[item["id"]] = await ask(backend, item["question"], max_tokens)
        await backend.close()
        out["models"][model_id] = answers
        print(model_id, "done", flush=True)
    ANSWERS.write_text(json.dumps(out, ensure_ascii=False, separators=(",", ":")), encoding="utf-8")
    print(f"wrote {ANSWERS}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--max-tokens", type=int, default=24)
    args = parser.parse_args()
    asyncio.run(collect(args.threads, args.max_tokens))


if __name__ == "__main__":
    main()
