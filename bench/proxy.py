"""The gateway as a proxy: its own cost per request in front of an OpenAI-compatible server, beside the
upstream alone and LiteLLM's proxy on the same upstream, in one interleaved run.

    .venv/bin/python bench/proxy.py [--seconds 5] [--rounds 2] [--concurrency 1 8 64] [--tokens 16]
                                    [--targets direct,gateway,workers,auto,miss,hit,semantic,litellm,wait]
                                    [--modes json,stream] [--workers 1] [--baseline CHECKOUT]
                                    [--json out.json] [--profile DIR]

A fast fake upstream (``bench/fake_upstream.py``, its own process, answers from prebuilt bytes) serves a
``--tokens``-token reply. Targets, each its own process started here: the upstream direct; ``groupqwen
serve`` with one ``openai_http`` model, cache off, telemetry on; ``auto`` over two ``openai_http`` tiers
(the router and the cascade's confidence scoring); the semantic cache on with every prompt new (misses:
exact lookup, embedding, search, store); the cache on with one prompt (exact hits); the cache on with a
paraphrase of the stored prompt (semantic hits: exact lookup, embedding, search, verifier); LiteLLM's proxy
(installed on first use into ``bench/.cache/litellm-venv``, never a dependency of the project; its
version is printed). ``--workers N`` (N > 1) adds the cache-off gateway served by ``groupqwen serve --workers
N`` (target ``workers``): its CPU is its whole process tree's. ``--baseline CHECKOUT`` adds the cache-off
gateway, and each chosen cache target (``miss``, ``hit``, ``semantic``), as another checkout of GroupQwen has
it (its root first on ``PYTHONPATH``): before and after a change, side by side in one run.

The load generator is ``wrk`` (``make wrk``; one thread), a cell = (mode, concurrency, target)
for ``--seconds``; cells are interleaved target by target within each round so that a change of the
machine's load falls on every target alike. Per cell: requests per second, p50 latency, and the CPU time
of the target's process tree (``/proc/<pid>/stat`` utime + stime) over the requests it served, and the
part of it off the main thread (a gateway's event loop): with the cache on, the embeddings' threads. Each
miss and semantic-hit target is split against the cache-off gateway of the same checkout: cache off + the
CPU off the loop beyond cache off's (the embedding) + the rest (what the cache adds beyond the embedding),
and the rest by concurrency. Target ``wait`` (not in the default set) is the cache-off gateway on a second
fake upstream that answers as late as an embedding takes (its CPU, measured first): its event loop sleeps
as long between a request's parts as a miss's does, and a loop that slept a few ms wakes slower, cache or
not (docs/benchmarks.md), so the rest by concurrency is also printed against it: the cache's own cost,
with the wake charged to both.
The machine is shared: CPU per request is the robust figure; the load average is printed.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
from proxy_targets import (  # beside this file
    Target,
    cpu_seconds,
    ensure_litellm,
    gateway,
    gateway_config,
    litellm,
    loop_seconds,
    upstream,
)

from groupqwen.cache.build import embedder_from_settings
from groupqwen.config import load_settings

WORDS = (
    "river",
    "apple",
    "engine",
    "silver",
    "garden",
    "cloud",
    "paper",
    "music",
    "window",
    "forest",
    "bridge",
    "stone",
    "lamp",
    "orbit",
    "violin",
    "pepper",
    "glacier",
    "harbor",
    "lantern",
    "meadow",
    "copper",
    "falcon",
    "tunnel",
    "canyon",
    "pillow",
    "rocket",
    "saddle",
    "thunder",
    "walnut",
    "basket",
    "candle",
    "desert",
    "feather",
    "helmet",
    "island",
    "jacket",
    "kettle",
    "ladder",
    "magnet",
    "needle",
    "ocean",
    "pencil",
    "quartz",
    "ribbon",
    "shadow",
    "tiger",
    "umbrella",
    "valley",
    "wagon",
    "yogurt",
    "zebra",
    "anchor",
    "butter",
    "cactus",
    "dragon",
)


GATEWAY = "GroupQwen, openai_http, cache off"
PROMPT = "What is the answer?"
# a stored question and a paraphrase the verifier accepts as a semantic hit on it (checked by ``warm``)
STORED, PARAPHRASE = "How do I reverse a list in Python?", "How can I reverse a list in Python?"


@dataclass
class Cell:
    rate: float
    p50_ms: float
    cpu_ms: float  # per request
    threads_ms: float  # per request, the part off the main thread (a gateway's: the embeddings, telemetry)
    errors: int
    cache: str  # the x-groupqwen-cache statuses seen, when counted
    load: float  # the machine's 1-minute load average at the cell's end


def _body(model: str, prompt: str, stream: bool) -> str:
    body: dict[str, Any] = {
        "model": model,
        "messages": [{"role": "user", "content": prompt}],
        "max_tokens": 64,
        "temperature": 0,
        "stream": stream,
    }
    return json.dumps(body)


def _lua(target: Target, stream: bool, count: int) -> str:
    """wrk's script: a fixed body, or (cache misses) a new prompt for every request; with the cache on, the
    ``x-groupqwen-cache`` statuses are counted."""
    lines = ['wrk.method = "POST"', 'wrk.headers["Content-Type"] = "application/json"']
    if target.cache == "miss":
        rng = random.Random()
        prompts = [" ".join(rng.sample(WORDS, 6)) + f" {rng.randrange(10**9)}?" for _ in range(count)]
        bodies = ",\n".join(json.dumps(_body(target.model, p, stream)) for p in prompts)
        lines += [
            f"local bodies = {{\n{bodies}\n}}",
            "local n = 0",
            "request = function()",
            "  n = n % #bodies + 1",
            "  return wrk.format(nil, nil, nil, bodies[n])",
            "end",
        ]
    else:
        prompt = PARAPHRASE if target.cache == "semantic" else PROMPT
        lines.append(f"wrk.body = {json.dumps(_body(target.model, prompt, stream))}")
    if target.cache != "off":
        lines += [
            "local threads = {}",
            "setup = function(thread) table.insert(threads, thread) end",
            "statuses = {}",
            "response = function(status, headers, body)",
            '  local s = headers["x-groupqwen-cache"] or "none"',
            "  statuses[s] = (statuses[s] or 0) + 1",
            "end",
            "done = function(summary, latency, requests)",
            "  for _, t in ipairs(threads) do",
            '    for k, v in pairs(t:get("statuses")) do io.write(string.format("CACHE %s %d\\n", k, v)) end',
            "  end",
            "end",
        ]
    return "\n".join(lines) + "\n"


_UNITS = {"us": 1e-3, "ms": 1.0, "s": 1e3, "m": 6e4}


def run_cell(target: Target, stream: bool, concurrency: int, seconds: int, work: Path) -> Cell:
    script = work / f"{abs(hash((target.name, stream)))}.lua"
    script.write_text(_lua(target, stream, count=max(1000, int(seconds * 3000))))
    before, loop_before = cpu_seconds(target.pid), loop_seconds(target.pid)
    out = subprocess.run(
        ["wrk", "-t1", f"-c{concurrency}", f"-d{seconds}s", "--latency", "-s", str(script), target.url],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    used = cpu_seconds(target.pid) - before
    threads = used - (loop_seconds(target.pid) - loop_before)
    total = int(re.search(r"(\d+) requests in", out).group(1))  # type: ignore[union-attr]
    rate = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))  # type: ignore[union-attr]
    p50 = re.search(r"50%\s+([\d.]+)(us|ms|s|m)\b", out)
    errors = int(m.group(1)) if (m := re.search(r"Non-2xx or 3xx responses: (\d+)", out)) else 0
    errors += sum(int(n) for n in re.findall(r"(?:connect|read|write|timeout) (\d+)", out))
    cache = " ".join(f"{k}:{v}" for k, v in re.findall(r"CACHE (\S+) (\d+)", out))
    return Cell(
        rate=rate,
        p50_ms=float(p50.group(1)) * _UNITS[p50.group(2)] if p50 else float("nan"),
        cpu_ms=used * 1e3 / max(total, 1),
        threads_ms=threads * 1e3 / max(total, 1),
        errors=errors,
        cache=cache,
        load=os.getloadavg()[0],
    )


def warm(target: Target) -> None:
    """One request of each mode (models loaded, connections made); for ``hit`` and ``semantic`` the answer
    stored, and for ``semantic`` the paraphrase checked to be a semantic hit."""
    for stream in (False, True):
        prompt = STORED if target.cache == "semantic" else PROMPT
        for _ in range(50):
            response = _ask(target, prompt, stream)
            if target.cache not in ("hit", "semantic") or response.headers.get("x-groupqwen-cache") == "hit":
                break
        if target.cache == "semantic":
            stage = _ask(target, PARAPHRASE, stream).headers.get("x-groupqwen-cache-stage")
            if stage in (None, "exact"):
                raise SystemExit(f"{PARAPHRASE!r} is not a semantic hit on {STORED!r} (stage {stage})")


def _ask(target: Target, prompt: str, stream: bool) -> httpx.Response:
    body = _body(target.model, prompt, stream)
    response = httpx.post(target.url, content=body, headers={"content-type": "application/json"}, timeout=60)
    response.raise_for_status()
    return response


def _targets(
    stack: ExitStack,
    names: set[str],
    tokens: int,
    workers: int,
    work: Path,
    baseline: Path | None,
    wait_ms: float,
) -> list[Target]:
    up = stack.enter_context(upstream(tokens))
    base = up.url.removesuffix("/chat/completions")
    targets = [up] if "direct" in names else []
    if "wait" in names:  # the cache-off gateway whose upstream answers as late as an embedding takes
        late = stack.enter_context(upstream(tokens, wait_ms)).url.removesuffix("/chat/completions")
        config = gateway_config(late, tiers=1, cache=False, data_dir=work / "wait")
        targets.append(
            stack.enter_context(gateway(f"{GATEWAY}, upstream +{wait_ms:.1f} ms", config, "tier-0"))
        )
    if baseline is not None:  # the cache-off gateway as another checkout has it: before/after in one run
        config = gateway_config(base, tiers=1, cache=False, data_dir=work / "baseline")
        name = f"GroupQwen at {_revision(baseline)}, openai_http, cache off"
        targets.append(stack.enter_context(gateway(name, config, "tier-0", source=baseline)))
    plans = [
        ("gateway", GATEWAY, 1, False, "tier-0", "off", 1),
        (
            "workers",
            f"{GATEWAY}, {workers} workers",
            1,
            False,
            "tier-0",
            "off",
            workers,
        ),
        ("auto", "GroupQwen, auto over two openai_http tiers", 2, False, "auto", "off", 1),
        ("miss", "GroupQwen, cache on, every request a miss", 1, True, "tier-0", "miss", 1),
        ("hit", "GroupQwen, cache on, exact hits", 1, True, "tier-0", "hit", 1),
        ("semantic", "GroupQwen, cache on, semantic hits", 1, True, "tier-0", "semantic", 1),
    ]
    for key, name, tiers, cache, model, mode, processes in plans:
        if key in names and (key != "workers" or workers > 1):
            config = gateway_config(base, tiers=tiers, cache=cache, data_dir=work / key)
            targets.append(stack.enter_context(gateway(name, config, model, mode, processes)))
            if baseline is not None and cache:  # the cache's targets as the other checkout has them too
                config = gateway_config(base, tiers=tiers, cache=cache, data_dir=work / f"{key}-baseline")
                before = f"GroupQwen at {_revision(baseline)}, {name.removeprefix('GroupQwen, ')}"
                targets.append(stack.enter_context(gateway(before, config, model, mode, source=baseline)))
    if "litellm" in names:
        targets.append(stack.enter_context(litellm(base, work)))
    return targets


def _revision(checkout: Path) -> str:
    command = ["git", "-C", str(checkout), "rev-parse", "--short", "HEAD"]
    done = subprocess.run(command, capture_output=True, text=True, check=False)
    return done.stdout.strip() or checkout.name


def table(
    results: dict[tuple[str, str, int], list[Cell]], targets: list[Target], concurrency: list[int]
) -> str:
    out = []
    for mode in ("json", "stream"):
        if not any(k[1] == mode for k in results):
            continue
        litellm_rates = {c: _median(results, "LiteLLM proxy", mode, c, "rate") for c in concurrency}
        direct_p50 = _median(results, "upstream direct", mode, 1, "p50_ms")
        heads = [f"c={c} req/s" for c in concurrency] + [
            "CPU ms/req, median (range)",
            "off the loop ms/req",
            "p50 c=1 ms",
            "added p50 ms",
            "× LiteLLM",
            "load avg",
        ]
        out.append(f"\n{mode}:\n| target | " + " | ".join(heads) + " |")
        out.append("|---|" + "---:|" * len(heads))
        for t in targets:
            rates = [_median(results, t.name, mode, c, "rate") for c in concurrency]
            cpus = [cell.cpu_ms for c in concurrency for cell in results.get((t.name, mode, c), [])]
            p50 = _median(results, t.name, mode, 1, "p50_ms")
            ratios = [
                r / litellm_rates[c] for r, c in zip(rates, concurrency, strict=True) if litellm_rates[c] > 0
            ]
            row = [f"{r:,.0f}" for r in rates]
            row.append(f"{statistics.median(cpus):.2f} ({min(cpus):.2f}–{max(cpus):.2f})" if cpus else "–")
            threads = [cell.threads_ms for c in concurrency for cell in results.get((t.name, mode, c), [])]
            row.append(f"{statistics.median(threads):.2f}" if threads and t.workers == 1 else "–")
            row.append(f"{p50:.2f}")
            row.append(f"{p50 - direct_p50:+.2f}" if t.name != "upstream direct" and direct_p50 > 0 else "–")
            row.append(f"{min(ratios):.1f}–{max(ratios):.1f}" if ratios else "–")
            loads = [cell.load for c in concurrency for cell in results.get((t.name, mode, c), [])]
            row.append(f"{min(loads):.1f}–{max(loads):.1f}" if loads else "–")
            out.append(f"| {t.name} | " + " | ".join(row) + " |")
    return "\n".join(out)


def _median(
    results: dict[tuple[str, str, int], list[Cell]], name: str, mode: str, c: int, what: str
) -> float:
    cells = results.get((name, mode, c), [])
    return statistics.median(getattr(cell, what) for cell in cells) if cells else float("nan")


def beyond(results: dict[tuple[str, str, int], list[Cell]], targets: list[Target]) -> str:
    """Each cache target's CPU per request taken apart against the cache-off gateway of the same checkout
    (medians over all its cells): the cache-off request, the CPU off the event loop beyond cache off's
    (the embedding's thread), and the rest, on the event loop: what the cache adds beyond the embedding;
    the rest by concurrency, and with target ``wait`` also against the cache-off gateway whose upstream
    answers as late as an embedding takes."""
    lines = ["\nper request, against cache off (median CPU ms): total = cache off + off the loop + beyond"]
    offs = {t.name.removesuffix("openai_http, cache off"): t for t in targets if t.name.endswith("cache off")}
    for mode in ("json", "stream"):
        for t in targets:
            prefix = t.name.partition("cache on, ")[0]
            off = offs.get(prefix)
            if t.cache not in ("miss", "semantic") or off is None:  # the targets that embed
                continue
            cells = [
                cell for (name, m, _), cs in results.items() if name == t.name and m == mode for cell in cs
            ]
            base = [
                cell for (name, m, _), cs in results.items() if name == off.name and m == mode for cell in cs
            ]
            if not cells or not base:
                continue
            total, threads = (
                statistics.median(getattr(c, f) for c in cells) for f in ("cpu_ms", "threads_ms")
            )
            off_total, off_threads = (
                statistics.median(getattr(c, f) for c in base) for f in ("cpu_ms", "threads_ms")
            )
            embedding = threads - off_threads
            lines.append(
                f"- {mode}, {t.name}: {total:.2f} = {off_total:.2f} + {embedding:.2f} + "
                f"{total - off_total - embedding:.2f}"
            )
            lines.append(f"  the rest by concurrency: {_rest(results, t.name, off.name, mode)}")
            wait = next((w.name for w in targets if w.name.startswith(f"{off.name}, upstream +")), None)
            if wait is not None:
                lines.append(
                    f"  against {wait.removeprefix(GATEWAY + ', ')}: {_rest(results, t.name, wait, mode)}"
                )
    return "\n".join(lines)


def _rest(results: dict[tuple[str, str, int], list[Cell]], name: str, off: str, mode: str) -> str:
    """The event loop's CPU per request of ``name`` beyond ``off``'s, by concurrency (cell medians)."""
    out = []
    for c in sorted({k[2] for k in results if k[0] == name and k[1] == mode}):
        loops = [
            statistics.median(x.cpu_ms - x.threads_ms for x in results.get((n, mode, c), []))
            for n in (name, off)
        ]
        out.append(f"c={c} {loops[0] - loops[1]:.2f}")
    return " / ".join(out)


def embedding_ms(count: int = 200) -> float:
    """CPU per embedding of one prompt like the misses' (the cache's default embedder, in this process):
    the part of a miss's cost that is the embedding's."""
    embedder = embedder_from_settings(load_settings())
    rng = random.Random(1)
    prompts = [" ".join(rng.sample(WORDS, 6)) + f" {rng.randrange(10**9)}?" for _ in range(count + 10)]
    for prompt in prompts[:10]:
        embedder.embed([prompt])
    started = time.process_time()
    for prompt in prompts[10:]:
        embedder.embed([prompt])
    return (time.process_time() - started) * 1e3 / count


def profile(targets: list[Target], modes: list[str], seconds: int, work: Path, out: Path) -> None:
    """Flame graphs (py-spy, SVG) of the cache-off gateway in each mode, at c=8, in ``out``
    (``proxy-MODE.svg``), and of the ``--baseline`` one beside it (``proxy-MODE-before.svg``)."""
    profiled = [(t, "") for t in targets if t.name == GATEWAY]
    profiled += [(t, "-before") for t in targets if t.name.startswith("GroupQwen at ") and t.cache == "off"]
    out.mkdir(parents=True, exist_ok=True)
    for mode in modes:
        for target, suffix in profiled:
            svg = out / f"proxy-{mode}{suffix}.svg"
            spy_bin = str(Path(sys.executable).with_name("py-spy"))
            command = [spy_bin, "record", "-p", str(target.pid), "-d", str(seconds), "-r", "250"]
            command += ["-o", str(svg)]
            spy = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            run_cell(target, mode == "stream", 8, seconds + 1, work)
            spy.wait()
            print(f"flame graph of {target.name}, {mode}, c=8: {svg}", file=sys.stderr)


def scaling(results: dict[tuple[str, str, int], list[Cell]], concurrency: list[int]) -> str:
    """Requests per second of the ``--workers`` gateway over the one-process gateway's, per cell."""
    workers = next(
        (k[0] for k in results if k[0].startswith(GATEWAY + ",") and k[0].endswith("workers")), None
    )
    if workers is None:
        return ""
    lines = [f"\n{workers.removeprefix(GATEWAY + ', ')} over 1 (req/s, median of the rounds):"]

    def rate(name: str, mode: str, c: int) -> float:
        return _median(results, name, mode, c, "rate")

    for mode in ("json", "stream"):
        ratios = [
            f"c={c} {rate(workers, mode, c) / rate(GATEWAY, mode, c):.2f}×"
            for c in concurrency
            if (GATEWAY, mode, c) in results
        ]
        if ratios:
            lines.append(f"- {mode}: " + ", ".join(ratios))
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=int, default=5)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 8, 64])
    parser.add_argument("--tokens", type=int, default=16)
    parser.add_argument("--targets", default="direct,gateway,workers,auto,miss,hit,semantic,litellm")
    parser.add_argument("--modes", default="json,stream")
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument(
        "--baseline",
        type=Path,
        help="also the cache-off gateway and the chosen cache targets from this checkout of GroupQwen "
        "(e.g. a worktree of main): before and after in one interleaved run",
    )
    parser.add_argument("--json", type=Path, help="also write every cell here")
    parser.add_argument(
        "--profile", type=Path, help="also write py-spy flame graphs (SVG) of the gateway here"
    )
    args = parser.parse_args()
    if shutil.which("wrk") is None:
        raise SystemExit("wrk is not installed: `make wrk` (Debian, as root) installs it")
    names = set(args.targets.split(","))
    version = ensure_litellm() if "litellm" in names else None
    modes = args.modes.split(",")
    results: dict[tuple[str, str, int], list[Cell]] = defaultdict(list)
    load_before = os.getloadavg()
    with tempfile.TemporaryDirectory() as tmp, ExitStack() as stack:
        work = Path(tmp)
        embed_ms = embedding_ms() if names & {"miss", "semantic", "wait"} else None
        targets = _targets(stack, names, args.tokens, args.workers, work, args.baseline, embed_ms or 0.0)
        for target in targets:
            warm(target)
        for round_ in range(args.rounds):
            for mode in modes:
                for c in args.concurrency:
                    for target in targets:
                        cell = run_cell(target, mode == "stream", c, args.seconds, work)
                        results[(target.name, mode, c)].append(cell)
                        note = f" errors={cell.errors}" if cell.errors else ""
                        print(
                            f"round {round_ + 1} {mode:6} c={c:<3} {target.name:48} {cell.rate:9,.0f} req/s "
                            f"{cell.cpu_ms:6.2f} ms CPU/req p50 {cell.p50_ms:7.2f} ms "
                            f"load {cell.load:4.1f} {cell.cache}{note}",
                            file=sys.stderr,
                            flush=True,
                        )
        if args.profile:
            profile(targets, modes, args.seconds, work, args.profile)
    load_after = os.getloadavg()
    embed = f"{embed_ms:.2f} ms CPU" if embed_ms is not None else "not measured"
    print(
        f"{args.tokens}-token replies, {args.seconds:g} s cells, {args.rounds} rounds, wrk, "
        f"{os.cpu_count()} cores"
    )
    print(
        f"load average {load_before[0]:.1f} before, {load_after[0]:.1f} after; LiteLLM {version or 'not run'}"
    )
    print(
        f"the embedding alone (the default embedder, one prompt; part of a miss and a semantic hit): {embed}"
    )
    print(table(results, targets, args.concurrency))
    print(scaling(results, args.concurrency))
    print(beyond(results, targets))
    if args.json:
        cells = [
            {"target": k[0], "mode": k[1], "c": k[2], **vars(cell)} for k, v in results.items() for cell in v
        ]
        args.json.write_text(
            json.dumps({"litellm": version, "load": [load_before, load_after], "cells": cells})
        )


if __name__ == "__main__":
    main()
