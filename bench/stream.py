"""Streaming through the gateway vs llama-cpp-python directly: same model, same prompts, one run.

    .venv/bin/python bench/stream.py [--model qwen2.5-coder-0.5b] [--max-tokens 128] [--rounds 3]

Prints a table of tokens/s and time to first token for each prompt, direct and through the gateway (the
gateway runs as a `groupqwen serve` subprocess; the two never generate at the same time), and the same
through the gateway with logprobs on (every token scored, as the router needs).

Then the added time to first token on its own: `--ttft-prompts` short prompts, each new to both sides (so
both evaluate the same uncached tokens; llama-cpp-python skips evaluation entirely for a prompt it has just
seen, which the gateway leaves to its cache), one token out, the order alternating within each pair and a
pause before each request so that neither side's idle llama.cpp threads still spin while the other runs.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import statistics
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx
from llama_cpp import Llama

from groupqwen.config import Settings
from groupqwen.pool.bundled import ensure_bundled

PROMPTS = [
    "Write a Python function that checks whether a number is prime.",
    "Explain what a hash map is in three sentences.",
    "List five uses of the Linux command grep, with an example each.",
    "Write a SQL query that finds the ten most recent orders per customer.",
]


SUBJECTS = [
    "apple",
    "river",
    "stone",
    "cloud",
    "engine",
    "paper",
    "music",
    "garden",
    "window",
    "silver",
    "forest",
    "bridge",
]


def ttft_prompts(count: int) -> list[str]:
    """``count`` distinct short prompts of the same shape (the second subject varies first)."""
    pairs = [(a, b) for a in SUBJECTS for b in reversed(SUBJECTS) if a != b]
    return [f"Tell me one fact about {a} and {b}." for a, b in pairs[:count]]


@dataclass
class Run:
    ttft: float  # seconds from sending to the first content token
    tokens: int
    tokens_per_s: float  # after the first token


def direct(llm: Llama, prompt: str, max_tokens: int) -> Run:
    started = time.perf_counter()
    first = None
    tokens = 0
    stream = llm.create_chat_completion(
        messages=[{"role": "user", "content": prompt}], max_tokens=max_tokens, temperature=0, stream=True
    )
    for chunk in stream:
        if chunk["choices"][0]["delta"].get("content"):  # type: ignore[index]
            tokens += 1
            if first is None:
                first = time.perf_counter()
    end = time.perf_counter()
    assert first is not None
    return Run(first - started, tokens, (tokens - 1) / (end - first))


def gateway(client: httpx.Client, model: str, prompt: str, max_tokens: int, logprobs: bool) -> Run:
    body = {
        "model": model,
        "messages": [{"role": "user", "content": prompt}],
        "max_tokens": max_tokens,
        "temperature": 0,
        "stream": True,
        "stream_options": {"include_usage": True},
        "logprobs": logprobs,
    }
    started = time.perf_counter()
    first = None
    tokens = 0
    with client.stream("POST", "/v1/chat/completions", json=body) as response:
        response.raise_for_status()
        for line in response.iter_lines():
            if not line.startswith("data: {"):
                continue
            data = json.loads(line[6:])
            if data.get("usage"):
                tokens = data["usage"]["completion_tokens"]
            elif data["choices"] and data["choices"][0]["delta"].get("content") and first is None:
                first = time.perf_counter()
    end = time.perf_counter()
    assert first is not None
    return Run(first - started, tokens, (tokens - 1) / (end - first))


@contextmanager
def serve(model: str, threads: int) -> Iterator[httpx.Client]:
    """A `groupqwen serve` subprocess, and a client that keeps its connection open (as SDKs do)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    env = {
        **os.environ,
        "GROUPQWEN_PORT": str(port),
        "GROUPQWEN_N_THREADS": str(threads),
        "GROUPQWEN_N_CTX": "2048",
        "GROUPQWEN_DEFAULT_MODEL": model,
        "GROUPQWEN_LOG_LEVEL": "warning",
        "GROUPQWEN_CACHE__BACKEND": "off",  # the same prompts come back each round: measure generation
    }
    process = subprocess.Popen([str(Path(sys.executable).with_name("groupqwen")), "serve"], env=env)
    url = f"http://127.0.0.1:{port}"
    try:
        for _ in range(600):
            try:
                if httpx.get(url + "/health", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                time.sleep(0.1)
        with httpx.Client(base_url=url, timeout=300) as client:
            yield client
    finally:
        process.terminate()
        process.wait(timeout=30)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--model", default="qwen2.5-coder-0.5b")
    parser.add_argument("--max-tokens", type=int, default=128)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--ttft-prompts", type=int, default=100, help="pairs in the added-TTFT probe")
    parser.add_argument("--pause", type=float, default=0.2, help="seconds of quiet before each request")
    args = parser.parse_args()

    settings = Settings()
    spec = settings.catalog()[args.model]
    path = spec.path or ensure_bundled(spec, settings.models_dir)
    llm = Llama(model_path=str(path), n_ctx=2048, n_threads=args.threads, verbose=False)
    results: dict[str, list[Run]] = {"direct": [], "gateway": [], "gateway+logprobs": []}
    per_prompt: list[tuple[str, Run, Run, Run]] = []
    first_token: list[tuple[float, float]] = []  # (direct, gateway) seconds, one pair per prompt
    with serve(args.model, args.threads) as client:
        gateway(client, args.model, "Hi", 4, False)  # load and warm up
        direct(llm, "Hi", 4)
        for _ in range(args.rounds):
            for prompt in PROMPTS:  # interleaved, so drift in machine speed hits all three alike
                d = direct(llm, prompt, args.max_tokens)
                g = gateway(client, args.model, prompt, args.max_tokens, False)
                gl = gateway(client, args.model, prompt, args.max_tokens, True)
                results["direct"].append(d)
                results["gateway"].append(g)
                results["gateway+logprobs"].append(gl)
                per_prompt.append((prompt, d, g, gl))
        for i, prompt in enumerate(ttft_prompts(args.ttft_prompts)):
            time.sleep(args.pause)
            if i % 2:
                d = direct(llm, prompt, 1)
                time.sleep(args.pause)
                g = gateway(client, args.model, prompt, 1, False)
            else:
                g = gateway(client, args.model, prompt, 1, False)
                time.sleep(args.pause)
                d = direct(llm, prompt, 1)
            first_token.append((d.ttft, g.ttft))

    print(
        f"model {args.model}, {args.threads} threads, temperature 0, max_tokens {args.max_tokens}, "
        f"{args.rounds} rounds x {len(PROMPTS)} prompts\n"
    )
    print(
        "| prompt | direct tok/s | gateway tok/s | ratio | +logprobs tok/s | ratio | direct TTFT ms "
        "| gateway TTFT ms | added ms |"
    )
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|")
    for prompt, d, g, gl in per_prompt[-len(PROMPTS) :]:
        print(
            f"| {prompt[:40]}… | {d.tokens_per_s:.1f} | {g.tokens_per_s:.1f} | "
            f"{g.tokens_per_s / d.tokens_per_s:.3f} | {gl.tokens_per_s:.1f} | "
            f"{gl.tokens_per_s / d.tokens_per_s:.3f} | {d.ttft * 1000:.1f} | {g.ttft * 1000:.1f} | "
            f"{(g.ttft - d.ttft) * 1000:+.1f} |"
        )

    def median(name: str, attr: str) -> float:
        return statistics.median(getattr(run, attr) for run in results[name])

    ratio = median("gateway", "tokens_per_s") / median("direct", "tokens_per_s")
    ratio_lp = median("gateway+logprobs", "tokens_per_s") / median("direct", "tokens_per_s")
    print(
        f"\nmedian over all runs: gateway/direct tokens/s {ratio:.3f} (target >= 0.97), "
        f"with logprobs {ratio_lp:.3f} (target >= 0.90)"
    )
    direct_ms = [d * 1000 for d, _ in first_token]
    gateway_ms = [g * 1000 for _, g in first_token]
    added = sorted(g - d for d, g in zip(direct_ms, gateway_ms, strict=True))
    quartiles = statistics.quantiles(added, n=4)
    print(
        f"\ntime to first token, {len(first_token)} new short prompts, 1 token out:\n\n"
        "| | direct ms | gateway ms | added ms |\n|---|---:|---:|---:|\n"
        f"| median | {statistics.median(direct_ms):.1f} | {statistics.median(gateway_ms):.1f} | "
        f"{statistics.median(added):+.1f} |\n"
        f"| quartiles of the added | | | {quartiles[0]:+.1f} … {quartiles[2]:+.1f} |\n\n"
        f"median added TTFT {statistics.median(added):+.1f} ms (target <= 5 ms)"
    )


if __name__ == "__main__":
    main()
