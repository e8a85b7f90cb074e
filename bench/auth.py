"""What API keys cost a chat completion: auth off vs keys trusted from memory (auth.key_cache_s) vs a key
looked up in the database on every request (key_cache_s: 0) in SQLite and in PostgreSQL.

    .venv/bin/python bench/auth.py [--requests 2000] [--batch 50] [--no-postgres]

The gateway runs in-process (httpx ASGITransport) on the fake backend with telemetry in memory, so what is
measured is the request path itself. Every variant's gateway is up at once and they take turns, a batch of
requests each, so the machine's other work falls on all alike; the table gives the median wall µs, the
process CPU µs per request (the database server's own CPU is not counted) and the overhead over "off".
PostgreSQL is a throwaway cluster on loopback (``postgres()`` of bench/telemetry.py).
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import tempfile
import time
from contextlib import AsyncExitStack, nullcontext
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


async def main(args: argparse.Namespace) -> None:
    variants = ["off", "keys, cached", "keys, looked up: SQLite"]
    if not args.no_postgres:
        variants.append("keys, looked up: PostgreSQL")
    times: dict[str, list[float]] = {v: [] for v in variants}
    cpu: dict[str, float] = dict.fromkeys(variants, 0.0)
    with (
        tempfile.TemporaryDirectory() as tmp,
        nullcontext() if args.no_postgres else postgres() as pg_url,
    ):
        async with AsyncExitStack() as stack:
            await _run(args, variants, Path(tmp), pg_url, stack, times, cpu)
    total = args.requests // args.batch * args.batch
    print(f"{total} sequential JSON chat completions per variant, in batches of {args.batch} taken in turn\n")
    print("| auth | median wall µs/request | CPU µs/request | CPU overhead vs off |")
    print("|---|---:|---:|---:|")
    base = cpu["off"] / total * 1e6
    for variant in variants:
        wall = statistics.median(times[variant]) * 1e6
        per_request = cpu[variant] / total * 1e6
        overhead = (
            "—" if variant == "off" else f"{per_request - base:+.0f} µs ({per_request / base - 1:+.0%})"
        )
        print(f"| {variant} | {wall:.0f} | {per_request:.0f} | {overhead} |")


async def _run(
    args: argparse.Namespace,
    variants: list[str],
    tmp: Path,
    pg_url: str | None,
    stack: AsyncExitStack,
    times: dict[str, list[float]],
    cpu: dict[str, float],
) -> None:
    """Every variant's gateway up at once, then ``args.batch`` requests each, in turn."""
    clients = {}
    for variant in variants:
        svc, headers = services(tmp, variant, pg_url)
        stack.push_async_callback(svc.close)
        app = create_app(svc.settings, svc)
        transport = httpx.ASGITransport(app=app)
        http = await stack.enter_async_context(httpx.AsyncClient(transport=transport, base_url="http://b"))
        http.headers.update(headers)
        for _ in range(20):  # warm up
            await http.post("/v1/chat/completions", json=BODY)
        clients[variant] = http
    # batches of every variant in turn, so that the machine's other work falls on all of them alike
    for _ in range(args.requests // args.batch):
        for variant, http in clients.items():
            started_cpu = time.process_time()
            for _ in range(args.batch):
                started = time.perf_counter()
                response = await http.post("/v1/chat/completions", json=BODY)
                times[variant].append(time.perf_counter() - started)
                assert response.status_code == 200, response.text
            cpu[variant] += time.process_time() - started_cpu


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=2000, help="per variant")
    parser.add_argument("--batch", type=int, default=50)
    parser.add_argument("--no-postgres", action="store_true")
    asyncio.run(main(parser.parse_args()))
