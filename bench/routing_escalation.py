"""Where an escalated short request's time goes: the real pipeline in-process, the real models.

    nice -n 10 .venv/bin/python bench/routing_escalation.py --limit 30

``build_services`` with the default ladder (the cache off, 2 threads, ``n_ctx`` 2048), each model's backend
wrapped to note when a generation starts, when its first token arrives and when it is closed. The first
``--limit`` held-out short questions are asked as the 0.5B, the 1.5B and ``auto``, in rotation (step ``i``
asks the 0.5B question ``i``, the 1.5B question ``i + n/3``, ``auto`` question ``i + 2n/3``), so that
the three see the same load and no request follows its own prompt on a model. For the requests ``auto``
escalated: the 0.5B's time to its first token, from its first token to its generation's close (the rest of
the abandoned answer: what an early abort saves), the gap before the 1.5B starts, and ``auto`` against the
1.5B alone on the same question. ``--weights`` runs another ``router.json`` (an older one, to compare).
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
from collections.abc import AsyncGenerator
from contextlib import aclosing
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "bench"), str(ROOT / "scripts")]

import routing_live  # noqa: E402
import routing_mix  # noqa: E402
from train_router import LARGE, SMALL  # noqa: E402

from groupqwen.api.services import build_services  # noqa: E402
from groupqwen.config import load_settings  # noqa: E402
from groupqwen.messages import ChatRequest, Chunk, GenerationRequest, Sampling  # noqa: E402
from groupqwen.orchestrator.answer import RequestContext  # noqa: E402
from groupqwen.pool.factory import backend_for  # noqa: E402

Events = list[tuple[float, str, str]]  # (perf_counter, model, "start" | "first" | "closed")


class Noted:
    """A backend that notes its generations' start, first token and close in ``events``."""

    def __init__(self, backend: Any, events: Events) -> None:
        self._backend, self._events = backend, events

    def __getattr__(self, name: str) -> Any:
        return getattr(self._backend, name)

    async def stream(self, request: GenerationRequest) -> AsyncGenerator[Chunk, None]:
        model = self._backend.model_id
        self._events.append((time.perf_counter(), model, "start"))
        first = True
        try:
            async with aclosing(self._backend.stream(request)) as chunks:  # closed (cancelled) with this
                async for chunk in chunks:
                    if first and chunk.text:
                        self._events.append((time.perf_counter(), model, "first"))
                        first = False
                    yield chunk
        finally:
            self._events.append((time.perf_counter(), model, "closed"))


async def measure(limit: int, weights: Path | None) -> list[dict[str, Any]]:
    settings = load_settings(cache={"backend": "off"}, n_threads=2, n_ctx=2048)
    if weights is not None:
        settings.router.weights = weights
    events: Events = []
    services = build_services(settings, backend_factory=lambda s: Noted(backend_for(s, settings), events))
    items = routing_live.chosen(routing_mix.items("heldout"), {"short": limit})

    async def ask(item: routing_mix.Item, model: str) -> dict[str, Any]:
        request = ChatRequest(item.request.messages, model, Sampling(temperature=0.0, max_tokens=24, seed=0))
        events.clear()
        started = time.perf_counter()
        answer = await services.pipeline.run(request, RequestContext(ttl_s=0))
        await answer.collect()
        seconds = time.perf_counter() - started
        noted = {(m, what): t - started for t, m, what in events}
        decision = answer.decision
        return {"id": item.id, "model": model, "seconds": seconds, "escalations": decision.escalations,
                "abandoned": decision.abandoned_tokens, "events": noted}  # fmt: skip

    for model in (SMALL, LARGE):  # loaded and warm
        await ask(items[0], model)
    rows = []
    n = len(items)
    for step in range(n):
        for offset, model in enumerate((SMALL, LARGE, "auto")):
            rows.append(await ask(items[(step + offset * n // 3) % n], model))
    await services.pool.close()
    return rows


def report(rows: list[dict[str, Any]]) -> None:
    by: dict[str, dict[str, dict[str, Any]]] = {}
    for row in rows:
        by.setdefault(row["id"], {})[row["model"]] = row
    means = {m: np.mean([v[m]["seconds"] for v in by.values()]) for m in (SMALL, LARGE, "auto")}
    print(f"{len(by)} questions, mean seconds: " + ", ".join(f"{m} {s:.3f}" for m, s in means.items()))
    up = [v for v in by.values() if v["auto"]["escalations"]]
    if not up:
        print("auto escalated none")
        return
    e = [v["auto"]["events"] for v in up]
    columns = {
        "0.5B tokens abandoned": [v["auto"]["abandoned"] for v in up],
        "0.5B start → first token (s)": [x[SMALL, "first"] - x[SMALL, "start"] for x in e],
        "first token → closed (s)": [x[SMALL, "closed"] - x[SMALL, "first"] for x in e],
        "closed → 1.5B starts (s)": [x[LARGE, "start"] - x[SMALL, "closed"] for x in e],
        "auto − 1.5B alone (s)": [v["auto"]["seconds"] - v[LARGE]["seconds"] for v in up],
        "0.5B alone: first token (s)": [v[SMALL]["events"][SMALL, "first"] for v in up],
        "0.5B alone: whole (s)": [v[SMALL]["seconds"] for v in up],
    }
    print(f"the {len(up)} auto escalated (mean, median):")
    for name, values in columns.items():
        print(f"  {name}: {np.mean(values):.3f}, {np.median(values):.3f}")


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--limit", type=int, default=30, help="the first N held-out short questions")
    parser.add_argument("--weights", type=Path, help="a router.json other than the shipped one")
    args = parser.parse_args()
    report(asyncio.run(measure(args.limit, args.weights)))


if __name__ == "__main__":
    main()
