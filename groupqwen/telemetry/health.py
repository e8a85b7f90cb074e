"""Health checks with timeouts → overall ``ok`` / ``degraded`` / ``down``, with the reason per check.

A check is any ``async () -> CheckResult``; blocking probes (database ping, disk, NVML) run in a thread
through ``blocking`` so that a hung dependency costs one waiting thread, never a hung health answer: each
check gets ``timeout`` seconds, and a probe still stuck from the previous call is not started again.
Overall: ``down`` if a *critical* check is down (no model can serve), else ``degraded`` if any check is
not ok, else ``ok``. Redis (or anything else) plugs in with ``Health.add(name, ping_check(ping))``.
"""

from __future__ import annotations

import asyncio
import shutil
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Protocol

Status = Literal["ok", "degraded", "down"]
_RANK: dict[Status, int] = {"ok": 0, "degraded": 1, "down": 2}
MiB = 1024 * 1024


@dataclass(frozen=True)
class CheckResult:
    status: Status
    reason: str | None = None
    details: Mapping[str, Any] = field(default_factory=dict)


class Check(Protocol):
    def __call__(self) -> Awaitable[CheckResult]: ...


@dataclass(frozen=True)
class ModelHealth:
    id: str
    status: str  # unloaded | loading | loaded | failed
    error: str | None = None


def _error(exc: BaseException) -> str:
    return (f"{type(exc).__name__}: {exc}".splitlines() or [type(exc).__name__])[0][:300]


class Health:
    def __init__(self, *, timeout: float = 2.0) -> None:
        self.timeout = timeout
        self._checks: dict[str, tuple[Check, bool]] = {}

    def add(self, name: str, check: Check, *, critical: bool = False) -> None:
        self._checks[name] = (check, critical)

    async def _one(self, check: Check) -> CheckResult:
        try:
            async with asyncio.timeout(self.timeout):
                return await check()
        except TimeoutError:
            return CheckResult("down", f"no answer within {self.timeout:g}s")
        except Exception as exc:
            return CheckResult("down", _error(exc))

    async def run(self) -> dict[str, Any]:
        started = time.perf_counter()
        names = list(self._checks)
        results = await asyncio.gather(*(self._one(self._checks[n][0]) for n in names))
        overall: Status = "ok"
        for name, result in zip(names, results, strict=True):
            contributes: Status = result.status
            if result.status == "down" and not self._checks[name][1]:
                contributes = "degraded"
            overall = max(overall, contributes, key=_RANK.__getitem__)
        return {
            "status": overall,
            "checked_in_seconds": round(time.perf_counter() - started, 4),
            "checks": {
                name: {
                    "status": r.status,
                    "critical": self._checks[name][1],
                    "reason": r.reason,
                    **dict(r.details),
                }
                for name, r in zip(names, results, strict=True)
            },
        }


def blocking(probe: Callable[[], CheckResult]) -> Check:
    """A check running ``probe`` in its own thread; while an earlier call is stuck, report that instead of
    piling up threads."""
    executor = ThreadPoolExecutor(1, thread_name_prefix="groupqwen-health")
    in_flight: list[Future[CheckResult]] = []

    async def check() -> CheckResult:
        if in_flight and not in_flight[0].done():
            return CheckResult("down", "the previous probe has not answered yet")
        in_flight[:] = [executor.submit(probe)]
        return await asyncio.wrap_future(in_flight[0])

    return check


def database_check(ping: Callable[[], None], store: str, backlog: Callable[[], Mapping[str, Any]]) -> Check:
    """``down`` when the database does not answer a ping; ``degraded`` when it answers but the writer's
    writes keep failing (``backlog()["last_error"]``: a missing table, a full disk, a read-only file)."""

    def probe() -> CheckResult:
        details = {"store": store, **backlog()}
        try:
            ping()
        except Exception as exc:
            return CheckResult("down", f"{store} unreachable: {_error(exc)}", details)
        failing = details.get("last_error")
        if failing:
            return CheckResult("degraded", f"{store} writes failing: {failing}", details)
        return CheckResult("ok", None, details)

    return blocking(probe)


def disk_check(paths: Mapping[str, Path], min_free_bytes: int) -> Check:
    def probe() -> CheckResult:
        details: dict[str, Any] = {}
        problems: list[str] = []
        for label, path in paths.items():
            existing = next(p for p in (path, *path.parents) if p.exists())  # a folder made on first use
            usage = shutil.disk_usage(existing)
            details[label] = {
                "path": str(path),
                "exists": existing == path,
                "free_bytes": usage.free,
                "total_bytes": usage.total,
            }
            if usage.free < min_free_bytes:
                problems.append(f"{label} has {usage.free // MiB} MiB free (< {min_free_bytes // MiB} MiB)")
        return CheckResult("degraded" if problems else "ok", "; ".join(problems) or None, details)

    return blocking(probe)


def gpu_check(probe_gpu: Callable[[], tuple[str, int, int] | None]) -> Check:
    """``probe_gpu`` → ``(name, total, free)`` of the GPU (NVML) or ``None`` on a CPU-only host."""

    def probe() -> CheckResult:
        found = probe_gpu()
        if found is None:
            return CheckResult("ok", None, {"gpu": "none"})
        name, total, free = found
        return CheckResult(
            "ok",
            None,
            {
                "gpu": name,
                "memory_total_bytes": total,
                "memory_used_bytes": total - free,
                "memory_free_bytes": free,
            },
        )

    return blocking(probe)


def models_check(states: Callable[[], Sequence[ModelHealth]]) -> Check:
    async def check() -> CheckResult:
        models = list(states())
        details = {"models": {m.id: {"status": m.status, "error": m.error} for m in models}}
        failed = [m for m in models if m.status == "failed"]
        if not models:
            return CheckResult("down", "no model can be served", details)
        if len(failed) == len(models):
            return CheckResult("down", "every model failed to load", details)
        if failed:
            return CheckResult("degraded", "; ".join(f"{m.id} failed: {m.error}" for m in failed), details)
        return CheckResult("ok", None, details)

    return check


def ping_check(ping: Callable[[], Awaitable[object]], what: str) -> Check:
    """An async ``ping`` (Redis's, for example) that raises when ``what`` is unreachable."""

    async def check() -> CheckResult:
        try:
            await ping()
        except Exception as exc:
            return CheckResult("down", f"{what} unreachable: {_error(exc)}")
        return CheckResult("ok")

    return check
