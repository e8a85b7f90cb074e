"""Telemetry overhead per chat completion: off vs metrics only vs persisted to SQLite vs to PostgreSQL.

    .venv/bin/python bench/telemetry.py [--requests 600] [--rounds 3] [--no-postgres]

The gateway runs in-process (httpx ASGITransport) on the fake backend (no generation cost), so what is
measured is the request path itself; the variants run interleaved, round by round, and the table gives the
median µs per request and the overhead over "off". PostgreSQL is a throwaway cluster on loopback started
here (Debian's binaries; as root the server runs as the ``postgres`` user).
"""

from __future__ import annotations

import argparse
import asyncio
import glob
import os
import shutil
import socket
import statistics
import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx

from groupqwen.api.app import create_app
from groupqwen.api.services import Services
from groupqwen.backends.fake import FakeBackend
from groupqwen.telemetry.service import Telemetry
from groupqwen.telemetry.timing import Trace
from groupqwen.testing import fake_services, fake_settings

BODY = {"model": "fake", "messages": [{"role": "user", "content": "How are you today?"}]}


class OffTelemetry(Telemetry):
    """The baseline: the same objects, but a request neither measures nor records anything."""

    def trace(self) -> Trace:
        return Trace("-")

    def finish(self, trace: Trace, error: BaseException | None = None) -> None:
        return None


@contextmanager
def postgres() -> Iterator[str]:
    initdb = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"))
    assert initdb, "PostgreSQL is missing: make setup installs it (or pass --no-postgres)"
    bin_dir = Path(initdb[-1]).parent
    root = Path(tempfile.mkdtemp(prefix="groupqwen-bench-pg-"))
    user = "postgres" if os.geteuid() == 0 else None
    if user:
        shutil.chown(root, user)
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]

    def run(*args: str) -> None:
        subprocess.run(
            [str(bin_dir / args[0]), *args[1:]], check=True, capture_output=True, user=user, cwd=root
        )

    run("initdb", "-D", str(root / "data"), "-U", "postgres", "--auth=trust", "--no-sync")
    options = f"-p {port} -k {root} -c listen_addresses=127.0.0.1"
    run("pg_ctl", "-D", str(root / "data"), "-o", options, "-l", str(root / "log"), "-w", "start")
    try:
        run("createdb", "-h", "127.0.0.1", "-p", str(port), "-U", "postgres", "bench")
        yield f"postgresql://postgres@127.0.0.1:{port}/bench"
    finally:
        run("pg_ctl", "-D", str(root / "data"), "-m", "fast", "-w", "stop")
        shutil.rmtree(root, ignore_errors=True)


def services(tmp: Path, variant: str, pg_url: str | None) -> Services:
    extra: dict[str, Any] = {"telemetry": {"database_url": pg_url}} if variant == "postgresql" else {}
    settings = fake_settings(tmp, data_dir=tmp / variant, **extra)
    telemetry = {
        "off": OffTelemetry,
        "metrics only": Telemetry,
    }.get(variant, lambda: Telemetry.from_settings(settings))()
    return fake_services(settings, FakeBackend(model_id="fake"), telemetry=telemetry)


async def measure(svc: Services, requests: int, stream: bool) -> tuple[float, float]:
    """``requests`` sequential chat completions: (median wall µs per request, process CPU µs per request
    including the writer thread's work until every record is persisted)."""
    app = create_app(svc.settings, svc)
    body = {**BODY, "stream": stream}
    times = []
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://b") as http:
        svc.telemetry.start()
        for _ in range(20):  # warm up
            await http.post("/v1/chat/completions", json=body)
        cpu = time.process_time()
        for _ in range(requests):
            started = time.perf_counter()
            response = await http.post("/v1/chat/completions", json=body)
            times.append(time.perf_counter() - started)
            assert response.status_code == 200
        if svc.telemetry.writer is not None:
            assert await svc.telemetry.writer.flush(30), "records not persisted"
        cpu = time.process_time() - cpu
    return statistics.median(times) * 1e6, cpu / requests * 1e6


async def main(args: argparse.Namespace) -> None:
    variants = ["off", "metrics only", "sqlite"] + ([] if args.no_postgres else ["postgresql"])
    with (
        tempfile.TemporaryDirectory() as tmp,
        postgres() if not args.no_postgres else nullcontext() as pg_url,
    ):
        results: dict[tuple[str, bool], list[tuple[float, float]]] = {}
        for _ in range(args.rounds):
            for stream in (False, True):
                for variant in variants:
                    svc = services(Path(tmp), variant, pg_url)
                    results.setdefault((variant, stream), []).append(
                        await measure(svc, args.requests, stream)
                    )
                    await svc.close()
    print(f"{args.requests} sequential requests × {args.rounds} rounds; medians over rounds\n")
    print("| telemetry | request | wall µs/request | CPU µs/request | CPU overhead vs off |")
    print("|---|---|---:|---:|---:|")
    for stream in (False, True):
        base = statistics.median(cpu for _, cpu in results[("off", stream)])
        for variant in variants:
            wall = statistics.median(w for w, _ in results[(variant, stream)])
            cpu = statistics.median(c for _, c in results[(variant, stream)])
            overhead = "—" if variant == "off" else f"{cpu - base:+.0f} µs ({cpu / base - 1:+.0%})"
            kind = "SSE" if stream else "JSON"
            print(f"| {variant} | {kind} | {wall:.0f} | {cpu:.0f} | {overhead} |")


@contextmanager
def nullcontext() -> Iterator[None]:
    yield None


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=600)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--no-postgres", action="store_true")
    asyncio.run(main(parser.parse_args()))
