"""The pool's memory budget: eviction, keep_alive, pinning, unload, and what it reports."""

from __future__ import annotations

import asyncio
from dataclasses import replace

import pytest

from groupqwen.backends.fake import FakeBackend
from groupqwen.catalog import ModelSpec
from groupqwen.errors import InsufficientMemory, ModelBusy
from groupqwen.pool.budget import MiB
from groupqwen.pool.scheduler import Pool


def _spec(model_id: str, **kw: object) -> ModelSpec:
    base = ModelSpec(
        id=model_id, family="t", parameters="?", context_length=4096, size_bytes=0, backend="fake"
    )
    return replace(base, **kw)  # type: ignore[arg-type]


class Harness:
    """A pool of fake models, each needing ``sizes[id]`` MiB, that records loads and closes."""

    def __init__(self, specs: list[ModelSpec], sizes: dict[str, int], budget_mib: int) -> None:
        self.backends: dict[str, list[FakeBackend]] = {s.id: [] for s in specs}
        self.closed: list[str] = []
        harness = self

        class Recording(FakeBackend):
            async def close(self) -> None:
                harness.closed.append(self.model_id)

        def factory(spec: ModelSpec) -> FakeBackend:
            backend = Recording(model_id=spec.id, tokens=["ok"], delay=0.01)
            self.backends[spec.id].append(backend)
            return backend

        self.pool = Pool(
            {s.id: s for s in specs},
            factory,
            need=lambda spec: sizes[spec.id] * MiB,
            budget=budget_mib * MiB,
            measure=lambda: 0,
        )

    def status(self, model_id: str) -> str:
        return next(s.status for s in self.pool.states() if s.spec.id == model_id)


async def _use(pool: Pool, model_id: str) -> None:
    async with pool.lease(model_id) as backend:
        async for _ in backend.stream(_request()):
            pass


def _request():  # type: ignore[no-untyped-def]
    from groupqwen.messages import GenerationRequest, Message, Sampling

    return GenerationRequest(messages=(Message("user", "hi"),), sampling=Sampling())


async def test_loading_a_model_that_does_not_fit_evicts_the_least_recently_used() -> None:
    h = Harness([_spec("a"), _spec("b"), _spec("c")], {"a": 400, "b": 400, "c": 400}, budget_mib=1000)
    await _use(h.pool, "a")
    await _use(h.pool, "b")
    await _use(h.pool, "a")  # b is now the least recently used
    await _use(h.pool, "c")
    assert h.closed == ["b"]
    assert [h.status(m) for m in "abc"] == ["loaded", "unloaded", "loaded"]
    assert h.pool.used == 800 * MiB


async def test_pinned_and_busy_models_are_never_evicted() -> None:
    h = Harness(
        [_spec("pinned", pinned=True), _spec("busy"), _spec("new")],
        {"pinned": 400, "busy": 400, "new": 400},
        budget_mib=1000,
    )
    await _use(h.pool, "pinned")
    async with h.pool.lease("busy"):
        with pytest.raises(InsufficientMemory) as info:
            await _use(h.pool, "new")
    message = info.value.message
    assert "needs 400 MiB" in message and "200 MiB" in message and "pinned" in message and "busy" in message
    assert info.value.status_code == 503 and info.value.code == "insufficient_memory"
    assert h.closed == []
    assert h.status("new") == "unloaded"
    await _use(h.pool, "new")  # once 'busy' is idle it can go
    assert h.closed == ["busy"]


async def test_a_model_larger_than_the_budget_is_refused_without_evicting() -> None:
    h = Harness([_spec("a"), _spec("huge")], {"a": 100, "huge": 5000}, budget_mib=1000)
    await _use(h.pool, "a")
    with pytest.raises(InsufficientMemory):
        await _use(h.pool, "huge")
    assert h.closed == [] and h.status("a") == "loaded"


async def test_keep_alive_unloads_idle_models() -> None:
    h = Harness(
        [_spec("quick", keep_alive=0.05), _spec("never", keep_alive=-1), _spec("now", keep_alive=0)],
        {"quick": 1, "never": 1, "now": 1},
        budget_mib=1000,
    )
    for model in ("quick", "never", "now"):
        await _use(h.pool, model)
    await asyncio.sleep(0.01)
    assert h.status("now") == "unloaded"
    assert h.status("quick") == "loaded"
    await asyncio.sleep(0.2)
    assert h.status("quick") == "unloaded"
    assert h.status("never") == "loaded"
    await h.pool.close()


async def test_a_new_request_cancels_the_idle_timer() -> None:
    h = Harness([_spec("m", keep_alive=0.1)], {"m": 1}, budget_mib=10)
    await _use(h.pool, "m")
    await asyncio.sleep(0.06)
    await _use(h.pool, "m")  # restarts the 0.1 s idle window
    await asyncio.sleep(0.06)
    assert h.status("m") == "loaded"
    await asyncio.sleep(0.1)
    assert h.status("m") == "unloaded"
    assert len(h.backends["m"]) == 1


async def test_unload_refuses_a_busy_model_and_load_is_idempotent() -> None:
    h = Harness([_spec("m")], {"m": 10}, budget_mib=100)
    state = await h.pool.load("m")
    assert state.status == "loaded" and state.estimated_bytes == 10 * MiB
    await h.pool.load("m")
    assert len(h.backends["m"]) == 1
    async with h.pool.lease("m"):
        with pytest.raises(ModelBusy):
            await h.pool.unload("m")
    await h.pool.unload("m")
    assert h.status("m") == "unloaded" and h.closed == ["m"]
    await h.pool.close()


async def test_requests_for_a_loaded_model_do_not_wait_for_another_models_load() -> None:
    release = asyncio.Event()

    class SlowLoad(FakeBackend):
        async def load(self) -> None:
            await release.wait()

    def factory(spec: ModelSpec) -> FakeBackend:
        return (SlowLoad if spec.id == "slow" else FakeBackend)(model_id=spec.id, tokens=["ok"])

    pool = Pool(
        {"fast": _spec("fast"), "slow": _spec("slow")},
        factory,
        need=lambda spec: 0,
        budget=MiB,
        measure=lambda: 0,
    )
    await _use(pool, "fast")
    slow = asyncio.create_task(_use(pool, "slow"))
    await asyncio.sleep(0.01)
    assert next(s.status for s in pool.states() if s.spec.id == "slow") == "loading"
    await asyncio.wait_for(_use(pool, "fast"), timeout=2)
    release.set()
    await slow
