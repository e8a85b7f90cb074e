"""WebSocket (``/v1/ws``) vs SSE, and uvicorn's WebSocket implementations, side by side in one run.

    .venv/bin/python bench/ws.py [--model smollm2-135m] [--rounds 6] [--max-tokens 128]
                                 [--sockets 64] [--generations 4] [--reply-tokens 500]

For each of uvicorn's implementations (``ws.implementation``: websockets, websockets-sansio, wsproto) a
``groupqwen serve`` subprocess on loopback serves the bundled model and a fake one:

1. **The model, WebSocket vs SSE**: the same prompts at temperature 0, a WebSocket generation and an SSE
   stream taking turns (never at once), ``--rounds`` of each: time to first token (the first content
   piece, from sending the request) and decode speed (tokens after the first over the time after it).
2. **Frames per second on the fake backend**: ``--sockets`` WebSockets at once, each asking
   ``--generations`` generations of ``--reply-tokens`` tokens one after another (no pause between
   tokens): the frames all clients received over the wall time; beside it the same load as SSE streams
   (events per second). Client and gateway share the machine's cores, so this is the gateway's rate with
   a Python client beside it, for comparing the rows, not an absolute ceiling.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx
from websockets.asyncio.client import ClientConnection, connect

from groupqwen.config import Settings
from groupqwen.pool.bundled import ensure_bundled
from groupqwen.testing import ServedProcess, serve_process

IMPLEMENTATIONS = ("websockets", "websockets-sansio", "wsproto")
PROMPTS = [
    "Write a Python function that checks whether a number is prime.",
    "Explain what a hash map is in three sentences.",
    "List five uses of a queue in software.",
]


def chat(model: str, prompt: str, max_tokens: int | None = None) -> dict[str, Any]:
    messages = [{"role": "user", "content": prompt}]
    return {"model": model, "messages": messages, "max_tokens": max_tokens, "temperature": 0}


async def _ws_frames(ws: ClientConnection) -> Any:
    while True:
        frame = json.loads(await ws.recv())
        if frame["type"] == "ping":
            await ws.send('{"type":"pong"}')
            continue
        yield frame


async def ws_generation(ws: ClientConnection, gid: str, body: dict[str, Any]) -> tuple[float, float, int]:
    """(seconds to the first content piece, seconds after it, completion tokens) of one generation."""
    start = time.perf_counter()
    await ws.send(json.dumps({"type": "chat.create", "id": gid, "body": body}))
    first = None
    async for frame in _ws_frames(ws):
        if frame["type"] == "chunk" and first is None and frame["data"]["choices"][0]["delta"].get("content"):
            first = time.perf_counter()
        elif frame["type"] == "done":
            end = time.perf_counter()
            first = first or end
            return first - start, end - first, frame["usage"]["completion_tokens"]
        elif frame["type"] == "error":
            raise RuntimeError(frame)
    raise RuntimeError("closed")


async def sse_generation(client: httpx.AsyncClient, body: dict[str, Any]) -> tuple[float, float, int]:
    start = time.perf_counter()
    first = None
    tokens = 0
    stream = {**body, "stream": True, "stream_options": {"include_usage": True}}
    async with client.stream("POST", "/v1/chat/completions", json=stream) as response:
        async for line in response.aiter_lines():
            if not line.startswith("data: {"):
                continue
            event = json.loads(line[6:])
            if event.get("usage"):
                tokens = event["usage"]["completion_tokens"]
            elif first is None and event["choices"] and event["choices"][0]["delta"].get("content"):
                first = time.perf_counter()
    end = time.perf_counter()
    first = first or end
    return first - start, end - first, tokens


def _speed(after_first_s: float, tokens: int) -> float:
    return (tokens - 1) / after_first_s if after_first_s > 0 and tokens > 1 else 0.0


async def model_rounds(served: ServedProcess, model: str, rounds: int, max_tokens: int) -> dict[str, Any]:
    """Median TTFT (ms) and decode speed (tokens/s) over WebSocket and SSE, taking turns."""
    samples: dict[str, list[tuple[float, float]]] = {"ws": [], "sse": []}
    url = f"ws://127.0.0.1:{served.port}/v1/ws"
    async with httpx.AsyncClient(base_url=served.url, timeout=300) as client:
        for i in range(-1, rounds):  # round -1 loads the model and warms both paths
            for kind in ("ws", "sse") if i % 2 == 0 else ("sse", "ws"):
                # a prompt new to the model for each request (llama.cpp reuses a prompt it has just
                # evaluated: the second of a pair would skip it), of the same length for both
                prompt = f"{PROMPTS[i % len(PROMPTS)]} (Request {i + 2:03d}{kind:>3}.)"
                body = chat(model, prompt, max_tokens if i >= 0 else 4)
                if kind == "ws":
                    async with connect(url) as ws:  # a socket per round: nobody idles unread
                        await ws.recv()  # hello
                        ttft, rest, tokens = await ws_generation(ws, f"g{i}", body)
                else:
                    ttft, rest, tokens = await sse_generation(client, body)
                if i >= 0:
                    samples[kind].append((ttft * 1000, _speed(rest, tokens)))
                await asyncio.sleep(0.2)  # quiet: no llama.cpp thread still spinning for the other
    return {
        kind: (statistics.median(t for t, _ in rows), statistics.median(s for _, s in rows))
        for kind, rows in samples.items()
    }


async def ws_flood(served: ServedProcess, sockets: int, generations: int) -> float:
    """Frames per second received by ``sockets`` clients, each running ``generations`` one at a time."""
    url = f"ws://127.0.0.1:{served.port}/v1/ws"
    body = chat("fake", "go")

    async def client() -> int:
        frames = 0
        async with connect(url, max_queue=None) as ws:
            await ws.recv()
            for g in range(generations):
                await ws.send(json.dumps({"type": "chat.create", "id": f"g{g}", "body": body}))
                async for frame in _ws_frames(ws):
                    frames += 1
                    if frame["type"] in ("done", "error"):
                        break
        return frames

    start = time.perf_counter()
    counts = await asyncio.gather(*(client() for _ in range(sockets)))
    return sum(counts) / (time.perf_counter() - start)


async def sse_flood(served: ServedProcess, streams: int, generations: int) -> float:
    limits = httpx.Limits(max_connections=streams)
    body = {**chat("fake", "go"), "stream": True}

    async def client(http: httpx.AsyncClient) -> int:
        events = 0
        for _ in range(generations):
            async with http.stream("POST", "/v1/chat/completions", json=body) as response:
                async for line in response.aiter_lines():
                    events += line.startswith("data: ")
        return events

    async with httpx.AsyncClient(base_url=served.url, timeout=300, limits=limits) as http:
        start = time.perf_counter()
        counts = await asyncio.gather(*(client(http) for _ in range(streams)))
    return sum(counts) / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--model", default="smollm2-135m")
    parser.add_argument("--rounds", type=int, default=6)
    parser.add_argument("--max-tokens", type=int, default=128)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--sockets", type=int, default=64)
    parser.add_argument("--generations", type=int, default=4)
    parser.add_argument("--reply-tokens", type=int, default=500)
    parser.add_argument("--implementations", nargs="+", default=IMPLEMENTATIONS, choices=IMPLEMENTATIONS)
    args = parser.parse_args()

    settings = Settings()
    ensure_bundled(settings.catalog()[args.model], settings.models_dir)
    reply = " ".join(f"w{i}" for i in range(args.reply_tokens))
    fakes = {"fake": {"fake_reply": reply, "max_parallel": args.sockets}}
    rows = []
    for implementation in args.implementations:
        with (
            tempfile.TemporaryDirectory() as work,
            serve_process(
                Path(work),
                fakes,
                models_dir=str(settings.models_dir),
                n_threads=args.threads,
                max_queue=args.sockets,
                ws={"implementation": implementation, "max_generations": 8},
                server={"limit_concurrency": 4 * args.sockets},
            ) as served,
        ):
            model = asyncio.run(model_rounds(served, args.model, args.rounds, args.max_tokens))
            print(f"{implementation}: model rounds done", flush=True)
            ws_rate = asyncio.run(ws_flood(served, args.sockets, args.generations))
            sse_rate = asyncio.run(sse_flood(served, args.sockets, args.generations))
        rows.append((implementation, model, ws_rate, sse_rate))
        print(f"{implementation}: floods done", flush=True)

    print(
        f"\n{args.model}, {args.rounds} rounds of {args.max_tokens} tokens, {args.threads} threads (medians)"
    )
    print(
        f"{'implementation':<18} {'WS TTFT ms':>10} {'SSE TTFT ms':>11} {'ratio':>6} "
        f"{'WS tok/s':>9} {'SSE tok/s':>9} {'ratio':>6}"
    )
    for implementation, model, _, _ in rows:
        (wt, ws_speed), (st, sse_speed) = model["ws"], model["sse"]
        print(
            f"{implementation:<18} {wt:>10.1f} {st:>11.1f} {wt / st:>6.2f} "
            f"{ws_speed:>9.1f} {sse_speed:>9.1f} {ws_speed / sse_speed:>6.2f}"
        )
    print(
        f"\nfake backend, {args.sockets} sockets × {args.generations} generations of "
        f"{args.reply_tokens} tokens"
    )
    print(f"{'implementation':<18} {'WS frames/s':>12} {'SSE events/s':>13} {'ratio':>6}")
    for implementation, _, ws_rate, sse_rate in rows:
        print(f"{implementation:<18} {ws_rate:>12.0f} {sse_rate:>13.0f} {ws_rate / sse_rate:>6.2f}")


if __name__ == "__main__":
    main()
