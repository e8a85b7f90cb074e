"""The model pool under a memory budget, with the real bundled models.

    .venv/bin/python bench/pool.py [--swaps 6] [--threads 2]

1. Swap: two models under a budget that fits only one. Each request for the cold one evicts the other and
   loads it. Swap latency (request → model ready, eviction included) vs loading the same GGUF with
   llama-cpp-python directly, side by side in one run; peak RSS above the baseline vs the budget.
2. Memory: the pool's estimate vs the RSS measured after loading and running a long prompt, per bundled
   model and context size, each in a fresh process.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import subprocess
import sys
import threading
import time

from groupqwen.config import Settings
from groupqwen.messages import GenerationRequest, Message, Sampling
from groupqwen.pool.bundled import ensure_bundled
from groupqwen.pool.factory import backend_for, memory_need
from groupqwen.pool.memory import current_rss
from groupqwen.pool.scheduler import Pool

MiB = 1024 * 1024
MODELS = ("smollm2-135m", "qwen2.5-coder-0.5b")


class PeakRSS:
    """Samples this process's RSS every few milliseconds."""

    def __init__(self) -> None:
        self.peak = current_rss()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.wait(0.002):
            self.peak = max(self.peak, current_rss())

    def __enter__(self) -> PeakRSS:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


async def _answer(pool: Pool, model_id: str) -> float:
    """Lease ``model_id`` and generate one token; return seconds until the backend was ready."""
    started = time.perf_counter()
    async with pool.lease(model_id) as backend:
        ready = time.perf_counter() - started
        request = GenerationRequest(
            messages=(Message("user", "Hi"),), sampling=Sampling(temperature=0, max_tokens=1)
        )
        async for _ in backend.stream(request):
            pass
    return ready


def _raw_load(model: str, threads: int) -> float:
    """Seconds llama-cpp-python takes to load ``model``, measured in a child process (so that this
    process's RSS is the pool's alone)."""
    out = subprocess.run(
        [sys.executable, __file__, "--raw-load", model, str(threads)],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    return float(out.strip().splitlines()[-1])


def raw_load_child(model: str, threads: int) -> None:
    from llama_cpp import Llama

    settings = Settings(n_threads=threads, n_ctx=2048)
    spec = settings.catalog()[model]
    assert spec.path is not None
    started = time.perf_counter()
    Llama(model_path=str(spec.path), n_ctx=settings.n_ctx, n_threads=settings.n_threads, verbose=False)
    print(time.perf_counter() - started)


def swap(swaps: int, threads: int) -> None:
    settings = Settings(n_threads=threads, n_ctx=2048, keep_alive=-1)
    specs = {m: settings.catalog()[m] for m in MODELS}
    needs = {m: memory_need(spec, settings) for m, spec in specs.items()}
    budget = max(needs.values()) + 32 * MiB  # room for the larger one, never for both
    baseline = current_rss()
    pool = Pool(
        specs,
        lambda s: backend_for(s, settings),
        need=lambda s: needs[s.id],
        budget=budget,
        max_queue=settings.max_queue,
    )
    rows: list[tuple[str, float, float]] = []

    async def run() -> None:
        for i in range(swaps):
            model = MODELS[i % 2]
            raw = _raw_load(model, threads)  # side by side with the swap it is compared to
            rows.append((model, await _answer(pool, model), raw))
        await pool.close()

    with PeakRSS() as peak:
        asyncio.run(run())
    print(f"\n### Swap under a budget that fits one model ({budget / MiB:.0f} MiB, {threads} threads)\n")
    print("| model | swap (evict + load) s | raw load s | ratio |")
    print("|---|---:|---:|---:|")
    for model, swapped, raw in rows:
        print(f"| {model} | {swapped:.3f} | {raw:.3f} | {swapped / raw:.2f} |")
    ratio = statistics.median(s / r for _, s, r in rows)
    over = (peak.peak - baseline) / MiB
    print(
        f"\nmedian swap/raw ratio {ratio:.2f} (goal ≤ 1.1); peak RSS above baseline {over:.0f} MiB "
        f"vs budget {budget / MiB:.0f} MiB ({'within' if peak.peak - baseline <= budget else 'OVER'})"
    )


def measure_one(model: str, n_ctx: int) -> None:
    """Child process: load through the backend, run a long prompt, print the estimate and the peak RSS
    it added (the high-water mark: this kernel reclaims cold pages, so the current RSS understates)."""
    settings = Settings(n_threads=2, n_ctx=n_ctx)
    spec = settings.catalog()[model]
    need = memory_need(spec, settings)
    before = current_rss()

    async def run() -> None:
        backend = backend_for(spec, settings)
        await backend.load()
        prompt = "word " * int(n_ctx * 0.9)
        request = GenerationRequest(messages=(Message("user", prompt),), sampling=Sampling(max_tokens=8))
        async for _ in backend.stream(request):
            pass

    asyncio.run(run())
    print(json.dumps({"estimated": need, "measured": _peak_rss() - before}))


def _peak_rss() -> int:
    with open("/proc/self/status", encoding="ascii") as f:
        return next(int(line.split()[1]) * 1024 for line in f if line.startswith("VmHWM:"))


def memory() -> None:
    print("\n### Estimated vs measured memory (peak RSS added by a load and a prompt filling 90% of n_ctx)\n")
    print("| model | n_ctx | estimated MiB | measured MiB | estimate / measured |")
    print("|---|---:|---:|---:|---:|")
    worst = 10.0
    for model in MODELS:
        for n_ctx in (1024, 2048, 4096, 8192):
            out = subprocess.run(
                [sys.executable, __file__, "--measure", model, str(n_ctx)],
                capture_output=True,
                text=True,
                check=True,
            ).stdout
            result = json.loads(out.strip().splitlines()[-1])
            ratio = result["estimated"] / result["measured"]
            worst = min(worst, ratio)
            print(
                f"| {model} | {n_ctx} | {result['estimated'] / MiB:.0f} | {result['measured'] / MiB:.0f} | "
                f"{ratio:.3f} |"
            )
    print(f"\nlowest estimate/measured {worst:.3f} (goal: never below 0.90)")


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--swaps", type=int, default=6)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--measure", nargs=2, metavar=("MODEL", "N_CTX"), help=argparse.SUPPRESS)
    parser.add_argument("--raw-load", nargs=2, metavar=("MODEL", "THREADS"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.raw_load:
        raw_load_child(args.raw_load[0], int(args.raw_load[1]))
        return
    if args.measure:
        measure_one(args.measure[0], int(args.measure[1]))
        return
    settings = Settings()
    for model in MODELS:
        ensure_bundled(settings.catalog()[model], settings.models_dir)
    swap(args.swaps, args.threads)
    memory()


if __name__ == "__main__":
    main()
