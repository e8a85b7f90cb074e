"""What API keys cost a chat completion: auth off vs keys trusted from memory (auth.key_cache_s) vs a key
looked up in the database on every request (key_cache_s: 0) in SQLite and in PostgreSQL.

    .venv/bin/python bench/auth.py [--requests 600] [--rounds 3] [--no-postgres]

The gateway runs in-process (httpx ASGITransport) on the fake backend with telemetry in memory, so what is
measured is the request path itself; the variants run interleaved, round by round, and the table gives the
median wall and CPU µs per request and the CPU overhead over "off". PostgreSQL is a throwaway cluster on
loopback (``postgres()`` of bench/telemetry.py).
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import tempfile
import time
from contextlib import nullcontext
from pathlib import Path
from typing import Any

import httpx
from telemetry import postgres  # beside this file

from groupqwen.api.app import create_app
from groupqwen.api.services import Services
from groupqwen.backends.fake import FakeBackend
from groupqwen.testing import fake_services, fake_settings

BODY = {"model": "fake", "messages": [{"role": "user", "content": "How are you today?"}]}


def services(tmp: Path, variant: str, pg_url: str | None) -> tuple[Services, dict[str, str]]:
    extra: dict[str, Any] = {}
    if variant != "off":
        extra["auth"] = {"mode": "keys", "key_cache_s": 10 if variant == "keys, cached" else 0}
    if variant.endswith("PostgreSQL"):
        extra["telemetry"] = {"database_url": pg_url}
    settings = fake_settings(tmp, data_dir=tmp / variant.replace(" ", "_"), **extra)
    svc = fake_services(settings, FakeBackend(model_id="fake"))
    if svc.access.store is None:
        return svc, {}
    _, key = svc.access.store.create("bench", now=time.time())
    return svc, {"authorization": f"Bearer {key}"}


async def measure(svc: Services, headers: dict[str, str], requests: int) -> tuple[float, float]:
    """``requests`` sequential chat completions: (median wall µs, process CPU µs per request)."""
    app = create_app(svc.settings, svc)
    times = []
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://b") as http:
        for _ in range(20):  # warm up
            await http.post("/v1/chat/completions", json=BODY, headers=headers)
        cpu = time.process_time()
        for _ in range(requests):
            started = time.perf_counter()
            response = await http.post("/v1/chat/completions", json=BODY, headers=headers)
            times.append(time.perf_counter() - started)
            assert response.status_code == 200, response.text
        cpu = time.process_time() - cpu
    return statistics.median(times) * 1e6, cpu / requests * 1e6


async def main(args: argparse.Namespace) -> None:
    variants = ["off", "keys, cached", "keys, looked up: SQLite"]
    if not args.no_postgres:
        variants.append("keys, looked up: PostgreSQL")
    results: dict[str, list[tuple[float, float]]] = {}
    with tempfile.TemporaryDirectory() as tmp, nullcontext() if args.no_postgres else postgres() as pg_url:
        for _ in range(args.rounds):
            for variant in variants:
                svc, headers = services(Path(tmp), variant, pg_url)
                results.setdefault(variant, []).append(await measure(svc, headers, args.requests))
                await svc.close()
    print(f"{args.requests} sequential JSON chat completions × {args.rounds} rounds; medians over rounds\n")
    print("| auth | wall µs/request | CPU µs/request | CPU overhead vs off |")
    print("|---|---:|---:|---:|")
    base = statistics.median(cpu for _, cpu in results["off"])
    for variant in variants:
        wall = statistics.median(w for w, _ in results[variant])
        cpu = statistics.median(c for _, c in results[variant])
        overhead = "—" if variant == "off" else f"{cpu - base:+.0f} µs ({cpu / base - 1:+.0%})"
        print(f"| {variant} | {wall:.0f} | {cpu:.0f} | {overhead} |")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=600)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--no-postgres", action="store_true")
    asyncio.run(main(parser.parse_args()))
