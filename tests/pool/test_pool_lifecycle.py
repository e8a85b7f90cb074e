"""The pool's memory budget: eviction, keep_alive (on a fake clock), pinning, unload, and what it reports."""

from __future__ import annotations

import asyncio
from dataclasses import replace

import pytest
from waiting import until

from groupqwen.backends.fake import FakeBackend
from groupqwen.catalog import ModelSpec
from groupqwen.errors import InsufficientMemory, ModelBusy, ModelNotFound
from groupqwen.pool.budget import MiB
from groupqwen.pool.scheduler import Pool
from groupqwen.testing import FakeClock


def _spec(model_id: str, **kw: object) -> ModelSpec:
    base = ModelSpec(
        id=model_id, family="t", parameters="?", context_length=4096, size_bytes=0, backend="fake"
    )
    return replace(base, **kw)  # type: ignore[arg-type]


class Harness:
    """A pool of fake models, each needing ``sizes[id]`` MiB, that records loads and closes, on a fake
    clock that each use moves one second on (so that least recently used is well defined)."""

    def __init__(self, specs: list[ModelSpec], sizes: dict[str, int], budget_mib: int) -> None:
        self.backends: dict[str, list[FakeBackend]] = {s.id: [] for s in specs}
        self.closed: list[str] = []
        self.clock = FakeClock()
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
            max_queue=16,
            measure=lambda: 0,
            clock=self.clock,
        )

    async def use(self, model_id: str) -> None:
        await _use(self.pool, model_id)
        self.clock.advance(1)

    def status(self, model_id: str) -> str:
        return next(s.status for s in self.pool.states() if s.spec.id == model_id)


async def _turns(n: int = 20) -> None:
    """Let the event loop run whatever is ready ``n`` times (what waits on the fake clock stays waiting)."""
    for _ in range(n):
        await asyncio.sleep(0)


async def _use(pool: Pool, model_id: str) -> None:
    async with pool.lease(model_id) as backend:
        async for _ in backend.stream(_request()):
            pass


def _request():  # type: ignore[no-untyped-def]
    from groupqwen.messages import GenerationRequest, Message, Sampling

    return GenerationRequest(messages=(Message("user", "hi"),), sampling=Sampling())


async def test_loading_a_model_that_does_not_fit_evicts_the_least_recently_used() -> None:
    h = Harness([_spec("a"), _spec("b"), _spec("c")], {"a": 400, "b": 400, "c": 400}, budget_mib=1000)
    await h.use("a")
    await h.use("b")
    await h.use("a")  # b is now the least recently used
    await h.use("c")
    assert h.closed == ["b"]
    assert [h.status(m) for m in "abc"] == ["loaded", "unloaded", "loaded"]
    assert h.pool.used == 800 * MiB


async def test_pinned_and_busy_models_are_never_evicted() -> None:
    h = Harness(
        [_spec("pinned", pinned=True), _spec("busy"), _spec("new")],
        {"pinned": 400, "busy": 400, "new": 400},
        budget_mib=1000,
    )
    await h.use("pinned")
    async with h.pool.lease("busy"):
        with pytest.raises(InsufficientMemory) as info:
            await h.use("new")
    message = info.value.message
    assert "needs 400 MiB" in message and "200 MiB" in message and "pinned" in message and "busy" in message
    assert info.value.status_code == 503 and info.value.code == "insufficient_memory"
    assert h.closed == []
    assert h.status("new") == "unloaded"
    await h.use("new")  # once 'busy' is idle it can go
    assert h.closed == ["busy"]


async def test_a_model_larger_than_the_budget_is_refused_without_evicting() -> None:
    h = Harness([_spec("a"), _spec("huge")], {"a": 100, "huge": 5000}, budget_mib=1000)
    await h.use("a")
    with pytest.raises(InsufficientMemory):
        await h.use("huge")
    assert h.closed == [] and h.status("a") == "loaded"


async def test_keep_alive_unloads_idle_models() -> None:
    h = Harness(
        [_spec("quick", keep_alive=5), _spec("never", keep_alive=-1), _spec("now", keep_alive=0)],
        {"quick": 1, "never": 1, "now": 1},
        budget_mib=1000,
    )
    for model in ("quick", "never", "now"):
        await _use(h.pool, model)
    assert await h.pool.expire_idle() == ["now"]
    assert [h.status(m) for m in ("quick", "never", "now")] == ["loaded", "loaded", "unloaded"]
    h.clock.advance(4.9)
    assert await h.pool.expire_idle() == []
    h.clock.advance(0.1)
    assert await h.pool.expire_idle() == ["quick"]
    h.clock.advance(1e9)
    assert await h.pool.expire_idle() == []
    assert [h.status(m) for m in ("quick", "never", "now")] == ["unloaded", "loaded", "unloaded"]
    await h.pool.close()


async def test_the_pools_own_timer_unloads_an_idle_model() -> None:
    h = Harness([_spec("m", keep_alive=5)], {"m": 1}, budget_mib=10)
    await _use(h.pool, "m")
    await until(lambda: h.clock.sleepers == 1)  # the idle timer waits on the clock
    h.clock.advance(4)
    await _turns()
    assert h.status("m") == "loaded"
    h.clock.advance(1)
    await until(lambda: h.status("m") == "unloaded")
    assert h.closed == ["m"]
    await h.pool.close()


async def test_a_new_request_restarts_the_idle_window() -> None:
    h = Harness([_spec("m", keep_alive=10)], {"m": 1}, budget_mib=10)
    await _use(h.pool, "m")
    h.clock.advance(6)
    await _use(h.pool, "m")  # restarts the 10 s idle window
    h.clock.advance(6)
    assert await h.pool.expire_idle() == []
    await _turns()  # nor has the idle timer the second request started
    assert h.status("m") == "loaded"
    h.clock.advance(4)
    assert await h.pool.expire_idle() == ["m"]
    assert len(h.backends["m"]) == 1
    await h.pool.close()


async def test_a_model_loaded_ahead_idles_out_from_its_load() -> None:
    h = Harness([_spec("m", keep_alive=10)], {"m": 1}, budget_mib=10)
    h.clock.advance(1000)
    await h.pool.load("m")
    await _turns()
    h.clock.advance(9)
    assert await h.pool.expire_idle() == []
    assert h.status("m") == "loaded"
    h.clock.advance(1)
    assert await h.pool.expire_idle() == ["m"]


async def test_a_busy_model_never_expires() -> None:
    h = Harness([_spec("m", keep_alive=1)], {"m": 1}, budget_mib=10)
    await _use(h.pool, "m")
    async with h.pool.lease("m"):
        h.clock.advance(100)
        assert await h.pool.expire_idle() == []
    assert h.status("m") == "loaded"
    h.clock.advance(1)
    assert await h.pool.expire_idle() == ["m"]
    await h.pool.close()


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
        max_queue=16,
        measure=lambda: 0,
    )
    await _use(pool, "fast")
    slow = asyncio.create_task(_use(pool, "slow"))
    await until(lambda: next(s.status for s in pool.states() if s.spec.id == "slow") == "loading")
    await asyncio.wait_for(_use(pool, "fast"), timeout=30)  # would hang: the slow load waits for release
    release.set()
    await slow


async def test_a_removed_model_finishes_its_requests_then_unloads() -> None:
    """``remove`` (a deleted fine-tuned model): at once no new lease and no listing; the request holding a
    slot and the one waiting for it finish; then it is unloaded and ``then`` runs. Its memory counts until
    then, and a load that needs it cannot evict it."""
    h = Harness([_spec("a", max_parallel=1), _spec("b")], {"a": 60, "b": 60}, budget_mib=100)
    gone: list[str] = []
    release = asyncio.Event()
    holding = asyncio.Event()

    async def hold() -> None:
        async with h.pool.lease("a"):
            holding.set()
            await release.wait()

    first = asyncio.create_task(hold())
    await holding.wait()
    second = asyncio.create_task(_use(h.pool, "a"))  # waits for the slot
    await until(lambda: any(s.queued == 1 for s in h.pool.states() if s.spec.id == "a"))
    h.pool.remove("a", lambda: gone.append("a"))
    assert "a" not in h.pool and [s.spec.id for s in h.pool.states()] == ["b"]
    with pytest.raises(ModelNotFound):
        await _use(h.pool, "a")
    assert h.pool.used == 60 * MiB  # still resident: b cannot evict it
    with pytest.raises(InsufficientMemory):
        await _use(h.pool, "b")
    assert gone == [] and h.closed == []
    release.set()
    await first
    await second
    await until(lambda: gone == ["a"])
    assert h.closed == ["a"] and h.pool.used == 0
    await h.use("b")

    h.pool.remove("nothing", lambda: gone.append("nothing"))  # not served here: at once
    assert gone == ["a", "nothing"]
