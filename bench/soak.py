"""Soak: mixed traffic through a real ``groupqwen serve`` for a while, watching its memory and descriptors.

    .venv/bin/python bench/soak.py [--minutes 30] [--warmup-minutes 5] [--rate 100] [--clients 4]

The gateway is a ``groupqwen serve`` subprocess on loopback serving fake models (no generation cost, so what
is soaked is the gateway itself), with the embedded semantic cache and SQLite telemetry. Client threads send a
mix, each at its share of ``--rate`` requests/s: chat completions as JSON (new questions: cache misses) and as
SSE streams, repeated questions (cache hits), injected errors (an unknown model, bad JSON, a lone surrogate, a
context overflow: each must get its 4xx) and clients that leave in the middle of a long stream; now and then
``/v1/metrics`` and ``/v1/health``. Rate limits are on (requests without a key counted, in memory), far above
the load: every request is admitted and settled, never refused. Every few seconds the server's RSS and open
file descriptors are read from ``/proc/<pid>``. The table shows one sample a minute; the slopes (least
squares) cover the steady state after the warm-up. The caps on what the gateway keeps are set small
(``--recent-max-mb``, ``--cache-entries``) so that they fill during the warm-up: a slope after it is a leak,
not a cache filling up. "Unexpected" counts anything other than the answer each request should get (an error
that was not injected, a wrong status, a connection error).

Loopback only; every loop is bounded by the deadline and by ``--max-requests``.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import socket
import statistics
import tempfile
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from groupqwen.testing import ServedProcess, serve_process

LONG_REPLY = " ".join(f"word{i}" for i in range(3000))  # a stream long enough to leave in the middle of
LIMITS = ("requests_per_minute", "tokens_per_minute", "concurrent_requests")
REPEATED = [f"What is the capital of country number {i}?" for i in range(20)]


@dataclass
class Tally:
    sent: Counter[str] = field(default_factory=Counter)
    unexpected: Counter[str] = field(default_factory=Counter)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def count(self, kind: str, problem: str | None = None) -> None:
        with self.lock:
            self.sent[kind] += 1
            if problem is not None:
                self.unexpected[f"{kind}: {problem}"] += 1


def chat(text: str, **extra: object) -> dict[str, object]:
    return {"model": "fake", "messages": [{"role": "user", "content": text}], "temperature": 0, **extra}


def expect(response: httpx.Response, status: int) -> str | None:
    return None if response.status_code == status else f"status {response.status_code}"


def one_request(client: httpx.Client, served: ServedProcess, kind: str, n: int) -> str | None:
    """Send one request of ``kind``; ``None`` if it got the answer it should, else what went wrong."""
    url = served.url + "/v1/chat/completions"
    if kind == "json":
        return expect(client.post(url, json=chat(f"Tell me about topic {n} and {random.random()}")), 200)
    if kind == "hit":
        return expect(client.post(url, json=chat(random.choice(REPEATED))), 200)
    if kind == "stream":
        body = chat(f"Stream about topic {n}", stream=True)
        with client.stream("POST", url, json=body) as response:
            text = response.read()
        if response.status_code != 200:
            return f"status {response.status_code}"
        return None if text.rstrip().endswith(b"data: [DONE]") else "stream without [DONE]"
    if kind == "unknown_model":
        return expect(client.post(url, json={**chat("hi"), "model": "no-such-model"}), 404)
    if kind == "bad_json":
        return expect(client.post(url, content=b'{"model": "fake", "messages": [', headers=JSON), 400)
    if kind == "surrogate":
        body = b'{"model": "fake", "messages": [{"role": "user", "content": "x\\ud800y"}]}'
        return expect(client.post(url, content=body, headers=JSON), 400)
    if kind == "too_long":
        return expect(client.post(url, json=chat("word " * 5000, max_tokens=10)), 400)
    if kind == "disconnect":
        return leave_mid_stream(served)
    if kind == "metrics":
        return expect(client.get(served.url + "/v1/metrics", params={"window": "5m"}), 200)
    if kind == "health":
        return expect(client.get(served.url + "/v1/health"), 200)
    raise ValueError(kind)


JSON = {"content-type": "application/json"}


def leave_mid_stream(served: ServedProcess) -> str | None:
    body = json.dumps({**chat("Say it all"), "model": "long", "stream": True}).encode()
    head = (
        f"POST /v1/chat/completions HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\n\r\n"
    ).encode()
    with socket.create_connection(("127.0.0.1", served.port), timeout=30) as sock:
        sock.sendall(head + body)
        first = sock.recv(2048)  # the headers and the first frames, then go away
    return None if first.startswith(b"HTTP/1.1 200") else f"got {first[:40]!r}"


# kind → weight in the mix
MIX = {
    "json": 30,
    "hit": 25,
    "stream": 20,
    "disconnect": 5,
    "unknown_model": 4,
    "bad_json": 4,
    "surrogate": 4,
    "too_long": 4,
    "metrics": 3,
    "health": 1,
}
INJECTED = {"unknown_model", "bad_json", "surrogate", "too_long", "disconnect"}


def client_loop(served: ServedProcess, tally: Tally, deadline: float, interval: float, budget: int) -> None:
    kinds, weights = zip(*MIX.items(), strict=True)
    rng = random.Random()
    with httpx.Client(timeout=30) as client:
        next_at = time.monotonic()
        for n in range(budget):
            now = time.monotonic()
            if now >= deadline:
                return
            if next_at > now:
                time.sleep(next_at - now)
            next_at = max(next_at + interval, time.monotonic() - 1)  # no catch-up bursts after a stall
            kind = rng.choices(kinds, weights)[0]
            try:
                problem = one_request(client, served, kind, n)
            except (httpx.HTTPError, OSError) as exc:
                problem = type(exc).__name__
            tally.count(kind, problem)


def sample(pid: int) -> tuple[float, int]:
    """(RSS in KiB, open file descriptors) of process ``pid``."""
    rss_kib = 0.0
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            rss_kib = float(line.split()[1])
    return rss_kib, len(os.listdir(f"/proc/{pid}/fd"))


def slope(points: list[tuple[float, float]]) -> float:
    """Least-squares slope of ``(x, y)`` points."""
    xs = [x for x, _ in points]
    ys = [y for _, y in points]
    mean_x, mean_y = statistics.fmean(xs), statistics.fmean(ys)
    spread = sum((x - mean_x) ** 2 for x in xs)
    return sum((x - mean_x) * (y - mean_y) for x, y in points) / spread if spread else 0.0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--minutes", type=float, default=30)
    parser.add_argument("--warmup-minutes", type=float, default=None, help="default: a third, at most 5")
    parser.add_argument("--rate", type=float, default=100, help="requests/s, all clients together")
    parser.add_argument("--clients", type=int, default=4)
    parser.add_argument("--sample-s", type=float, default=5)
    parser.add_argument("--max-requests", type=int, default=1_000_000, help="per client")
    parser.add_argument("--recent-max-mb", type=float, default=4, help="telemetry.recent_max_mb")
    parser.add_argument("--cache-entries", type=int, default=2000, help="cache.max_entries")
    args = parser.parse_args()
    warmup = args.warmup_minutes if args.warmup_minutes is not None else min(5.0, args.minutes / 3)

    settings = {
        "cache": {"backend": "embedded", "max_entries": args.cache_entries},
        "telemetry": {"recent_max_mb": args.recent_max_mb},
        "log_level": "warning",
        # every request through the rate limiter (in memory), its limits far above the load
        "limits": {"anonymous": True, "key": dict.fromkeys(LIMITS, 10**9)},
    }
    fakes = {"fake": {}, "long": {"fake_reply": LONG_REPLY}}
    with (
        tempfile.TemporaryDirectory(prefix="groupqwen-soak-") as tmp,
        serve_process(Path(tmp), fakes, **settings) as served,
    ):
        run(served, args, warmup)


def run(served: ServedProcess, args: argparse.Namespace, warmup_minutes: float) -> None:
    tally = Tally()
    started = time.monotonic()
    deadline = started + args.minutes * 60
    interval = args.clients / args.rate
    threads = [
        threading.Thread(
            target=client_loop, args=(served, tally, deadline, interval, args.max_requests), daemon=True
        )
        for _ in range(args.clients)
    ]
    for thread in threads:
        thread.start()
    samples: list[tuple[float, int, float, int]] = []  # (minutes, requests, RSS KiB, fds)
    while time.monotonic() < deadline and any(t.is_alive() for t in threads):
        rss, fds = sample(served.process.pid)
        with tally.lock:
            requests = sum(tally.sent.values())
        samples.append(((time.monotonic() - started) / 60, requests, rss, fds))
        time.sleep(args.sample_s)
    for thread in threads:
        thread.join(60)
    rss, fds = sample(served.process.pid)
    samples.append(((time.monotonic() - started) / 60, sum(tally.sent.values()), rss, fds))
    with httpx.Client(timeout=30) as client:
        health = client.get(served.url + "/v1/health").json()
        metrics = client.get(served.url + "/v1/metrics", params={"window": "1h"}).json()

    print(f"\n{args.minutes:g} min, {args.clients} clients at {args.rate:g} requests/s in all (target)")
    print("\n| minute | requests | RSS MiB | open fds |\n|---:|---:|---:|---:|")
    shown = -1.0
    for minutes, requests, rss_kib, fd_count in samples:
        if minutes - shown >= 1 or (minutes, requests, rss_kib, fd_count) == samples[-1]:
            print(f"| {minutes:.1f} | {requests} | {rss_kib / 1024:.1f} | {fd_count} |")
            shown = minutes
    steady = [s for s in samples if s[0] >= warmup_minutes]
    total = sum(tally.sent.values())
    elapsed = samples[-1][0]
    rate = total / (elapsed * 60)
    print(f"\nrequests: {total} in {elapsed:.1f} min ({rate:.0f}/s); by kind: {dict(tally.sent)}")
    if len(steady) >= 3:
        kb_per_min = slope([(m, rss) for m, _, rss, _ in steady])
        fds_per_min = slope([(m, fd) for m, _, _, fd in steady])
        requests_per_min = slope([(m, r) for m, r, _, _ in steady])
        per_request = kb_per_min * 1024 / requests_per_min if requests_per_min else 0.0
        print(
            f"steady state (after {warmup_minutes:g} min, {len(steady)} samples): "
            f"RSS {kb_per_min:+.1f} KiB/min ({per_request:+.1f} bytes/request), fds {fds_per_min:+.2f}/min"
        )
    else:
        print("steady state: too few samples after the warm-up for a slope")
    injected = sum(n for kind, n in tally.sent.items() if kind in INJECTED)
    print(f"injected errors and disconnects: {injected}; unexpected: {sum(tally.unexpected.values())}")
    for what, n in tally.unexpected.most_common(10):
        print(f"  {n} × {what}")
    database = health["checks"]["database"]
    print(
        f"server: health {health['status']}; telemetry written {database['written']}, pending "
        f"{database['pending']}, dropped {database['dropped']}; /v1/metrics 1h: {metrics['requests']} "
        f"requests, status {metrics['status']}, cache {metrics['cache']}, complete {metrics['complete']}"
    )


if __name__ == "__main__":
    main()
