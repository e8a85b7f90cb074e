"""Streaming through the gateway vs llama-cpp-python directly: same model, same prompts, one run.

    .venv/bin/python bench/stream.py [--model qwen2.5-coder-0.5b] [--max-tokens 128] [--rounds 3]
                                     [--ttft-model smollm2-135m] [--ttft-prompts 200]

Prints a table of tokens/s and time to first token for each prompt, direct and through the gateway (the
gateway runs as a `groupqwen serve` subprocess; the two never generate at the same time), and the same
through the gateway with logprobs on (every token scored, as the router needs).

Then the added time to first token on its own: `--ttft-prompts` short prompts, each new to both sides (so
both evaluate the same uncached tokens; llama-cpp-python skips evaluation entirely for a prompt it has just
seen, which the gateway leaves to its cache), one token out, the order alternating within each pair and a
pause before each request so that neither side's idle llama.cpp threads still spin while the other runs.
It is measured with two clients, pairs interleaved: the standard library's `http.client` (the gateway's
own cost) and `httpx` (what that client library adds on top, as the `openai` SDK uses it). It runs on
`--ttft-model` (default the small bundled model, through a second gateway): the same prompt's evaluation
time varies by several percent from one run to the next, and the added time is a few ms, so a model that
evaluates the prompt in tens of ms rather than hundreds measures it far more tightly.
"""

from __future__ import annotations

import argparse
import http.client
import json
import statistics
import time
from contextlib import AbstractContextManager
from dataclasses import dataclass

import httpx
from gateway_process import gateway_process  # beside this file
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


TEMPLATES = [
    "Tell me one fact about {} and {}.",
    "Name one thing that {} and {} have in common.",
    "Write a haiku about {} and {}.",
    "Which is older, {} or {}?",
]


def ttft_prompts(count: int) -> list[str]:
    """``count`` distinct short prompts of four shapes (the second subject varies first); at most 528."""
    pairs = [(a, b) for a in SUBJECTS for b in reversed(SUBJECTS) if a != b]
    prompts = [t.format(a, b) for t in TEMPLATES for a, b in pairs]
    if count > len(prompts):
        raise SystemExit(f"--ttft-prompts: at most {len(prompts)} distinct prompts")
    return prompts[:count]


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


def gateway_stdlib(connection: http.client.HTTPConnection, model: str, prompt: str) -> float:
    """Seconds to the first content token through the gateway with the standard library's HTTP client
    (kept-alive connection): the gateway's cost without a heavier client library's own."""
    body = {
        "model": model,
        "messages": [{"role": "user", "content": prompt}],
        "max_tokens": 1,
        "temperature": 0,
        "stream": True,
    }
    payload = json.dumps(body).encode()
    for attempt in range(2):
        started = time.perf_counter()
        try:
            connection.request("POST", "/v1/chat/completions", payload, {"content-type": "application/json"})
            response = connection.getresponse()
            break
        except (BrokenPipeError, ConnectionResetError, http.client.RemoteDisconnected):
            # the server closed the kept-alive connection while it idled (uvicorn's keep-alive is 5 s, and
            # a busy machine can stretch the pauses between two requests past it): reconnect and retry
            connection.close()
            if attempt:
                raise
    first = None
    for line in response:
        if first is None and line.startswith(b"data: {"):
            choices = json.loads(line[6:])["choices"]
            if choices and choices[0]["delta"].get("content"):
                first = time.perf_counter()
    assert response.status == 200 and first is not None
    return first - started


def serve(model: str, threads: int) -> AbstractContextManager[httpx.Client]:
    """A `groupqwen serve` subprocess, and a client that keeps its connection open (as SDKs do)."""
    return gateway_process(
        {
            "n_threads": str(threads),
            "n_ctx": "2048",
            "default_model": model,
            "cache__backend": "off",  # the same prompts come back each round: measure generation
        }
    )


def load(settings: Settings, model: str, threads: int) -> Llama:
    spec = settings.catalog()[model]
    path = spec.path or ensure_bundled(spec, settings.models_dir)
    return Llama(model_path=str(path), n_ctx=2048, n_threads=threads, verbose=False)


def probe_first_token(
    llm: Llama, client: httpx.Client, model: str, pairs: int, pause: float
) -> dict[str, list[tuple[float, float]]]:
    """(direct, gateway) seconds to the first token, one pair per new prompt, for each client."""
    first_token: dict[str, list[tuple[float, float]]] = {"http.client": [], "httpx": []}
    stdlib = http.client.HTTPConnection(client.base_url.host, client.base_url.port, timeout=300)
    gateway_stdlib(stdlib, model, "Hi")
    gateway(client, model, "Hi", 1, False)
    direct(llm, "Hi", 1)
    prompts = ttft_prompts(2 * pairs)
    for i in range(2 * pairs):  # pairs for the two clients interleaved
        kind = ("http.client", "httpx")[i % 2]

        def through_gateway(prompt: str, kind: str = kind) -> float:
            if kind == "httpx":
                return gateway(client, model, prompt, 1, False).ttft
            return gateway_stdlib(stdlib, model, prompt)

        time.sleep(pause)
        if (i // 2) % 2:
            d = direct(llm, prompts[i], 1).ttft
            time.sleep(pause)
            g = through_gateway(prompts[i])
        else:
            g = through_gateway(prompts[i])
            time.sleep(pause)
            d = direct(llm, prompts[i], 1).ttft
        first_token[kind].append((d, g))
    stdlib.close()
    return first_token


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--model", default="qwen2.5-coder-0.5b")
    parser.add_argument("--max-tokens", type=int, default=128)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--ttft-model", default="smollm2-135m", help="the model of the added-TTFT probe")
    parser.add_argument(
        "--ttft-prompts", type=int, default=200, help="pairs in the added-TTFT probe (0: no probe)"
    )
    parser.add_argument("--pause", type=float, default=0.2, help="seconds of quiet before each request")
    args = parser.parse_args()

    settings = Settings()
    llm = load(settings, args.model, args.threads)
    results: dict[str, list[Run]] = {"direct": [], "gateway": [], "gateway+logprobs": []}
    per_prompt: list[tuple[str, Run, Run, Run]] = []
    with serve(args.model, args.threads) as client:
        gateway(client, args.model, "Hi", 4, False)  # load and warm up
        direct(llm, "Hi", 4)
        for round_ in range(args.rounds):
            for index, prompt in enumerate(PROMPTS):
                # interleaved, and the order rotating, so drift in machine speed hits all three alike
                names = ["direct", "gateway", "gateway+logprobs"]
                shift = (round_ + index) % 3
                done = {}
                for name in names[shift:] + names[:shift]:
                    if name == "direct":
                        done[name] = direct(llm, prompt, args.max_tokens)
                    else:
                        logprobs = name == "gateway+logprobs"
                        done[name] = gateway(client, args.model, prompt, args.max_tokens, logprobs)
                d, g, gl = done["direct"], done["gateway"], done["gateway+logprobs"]
                results["direct"].append(d)
                results["gateway"].append(g)
                results["gateway+logprobs"].append(gl)
                per_prompt.append((prompt, d, g, gl))
    del llm
    first_token: dict[str, list[tuple[float, float]]] = {}
    if args.ttft_prompts:  # 0: tokens/s only
        small = load(settings, args.ttft_model, args.threads)
        with serve(args.ttft_model, args.threads) as client:
            first_token = probe_first_token(small, client, args.ttft_model, args.ttft_prompts, args.pause)

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

    def ratios(name: str) -> list[float]:
        """Per prompt and round: the gateway's tokens/s over direct's for the same prompt."""
        return sorted(
            g.tokens_per_s / d.tokens_per_s for d, g in zip(results["direct"], results[name], strict=True)
        )

    for name, target in (("gateway", 0.97), ("gateway+logprobs", 0.90)):
        quartiles = statistics.quantiles(ratios(name), n=4)
        print(
            f"\n{name}/direct tokens/s, median of {len(ratios(name))} paired ratios: "
            f"{statistics.median(ratios(name)):.3f} (quartiles {quartiles[0]:.3f} … {quartiles[2]:.3f}; "
            f"target >= {target})"
        )
    if first_token:
        report_first_token(args.ttft_model, args.ttft_prompts, first_token)


def report_first_token(model: str, prompts: int, first_token: dict[str, list[tuple[float, float]]]) -> None:
    print(
        f"\ntime to first token, {model}, {prompts} new short prompts per client, "
        "1 token out, the order alternating in each pair:\n\n| client | direct ms | gateway ms "
        "| added ms (median) | quartiles of the added |\n|---|---:|---:|---:|---|"
    )
    added: dict[str, float] = {}
    for kind, pairs in first_token.items():
        diffs = sorted((g - d) * 1000 for d, g in pairs)
        quartiles = statistics.quantiles(diffs, n=4)
        added[kind] = statistics.median(diffs)
        print(
            f"| {kind} | {statistics.median(d * 1000 for d, _ in pairs):.1f} | "
            f"{statistics.median(g * 1000 for _, g in pairs):.1f} | {added[kind]:+.1f} | "
            f"{quartiles[0]:+.1f} … {quartiles[2]:+.1f} |"
        )
    print(
        f"\nmedian added TTFT {added['http.client']:+.1f} ms with the standard library's client "
        f"(target <= 5 ms), {added['httpx']:+.1f} ms with httpx"
    )


if __name__ == "__main__":
    main()
