"""``Pool``: one load for concurrent cold requests, slots, the bounded queue, failed loads."""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import Callable
from dataclasses import replace
from typing import Any

import pytest

from groupqwen.backends.base import Backend
from groupqwen.backends.fake import FakeBackend
from groupqwen.catalog import ModelSpec
from groupqwen.config import Settings
from groupqwen.errors import GroupQwenError, ModelLoadError, ModelNotFound, Overloaded
from groupqwen.pool.scheduler import Pool


def _spec(model_id: str, max_parallel: int = 1) -> ModelSpec:
    return ModelSpec(
        id=model_id,
        family="test",
        parameters="0",
        context_length=4096,
        size_bytes=0,
        backend="fake",
        keep_alive=-1,  # idle expiry is not what these tests are about
        max_parallel=max_parallel,
    )


def _pool(ids: list[str], factory: Callable[[ModelSpec], Backend], max_parallel: int = 1, **kw: Any) -> Pool:
    """A pool with room for everything: memory accounting is not what these tests are about."""
    specs = {model_id: _spec(model_id, max_parallel) for model_id in ids}
    return Pool(specs, factory, need=lambda spec: 0, budget=1 << 40, **{"max_queue": 16, **kw})


class Factory:
    """Builds one ``FakeBackend`` per model (or a broken one) and counts the calls."""

    def __init__(self, broken: Callable[[str], Exception | None] = lambda _: None) -> None:
        self.calls: list[str] = []
        self.backends: dict[str, FakeBackend] = {}
        self._broken = broken

    def __call__(self, spec: ModelSpec) -> Backend:
        self.calls.append(spec.id)
        error = self._broken(spec.id)
        if error is not None:
            return _BrokenBackend(spec.id, error)
        backend = FakeBackend(model_id=spec.id)
        self.backends[spec.id] = backend
        return backend


class _BrokenBackend(FakeBackend):
    def __init__(self, model_id: str, error: Exception) -> None:
        super().__init__(model_id=model_id)
        self._error = error

    async def load(self) -> None:
        await asyncio.sleep(0)
        raise self._error


class _SlowLoad(FakeBackend):
    async def load(self) -> None:
        await asyncio.sleep(0.02)
        await super().load()


async def _until(condition: Callable[[], bool], within: float = 2.0) -> None:
    """Poll ``condition`` (state owned by someone else) until it holds; fail after ``within`` seconds."""
    step = 0.001
    for _ in range(int(within / step)):
        if condition():
            return
        await asyncio.sleep(step)
    assert condition(), "condition not reached in time"


def _state(pool: Pool, model_id: str):  # type: ignore[no-untyped-def]
    return next(s for s in pool.states() if s.spec.id == model_id)


async def test_concurrent_cold_requests_load_once() -> None:
    calls: list[str] = []
    backend = _SlowLoad(model_id="m")

    def factory(spec: ModelSpec) -> Backend:
        calls.append(spec.id)
        return backend

    pool = _pool(["m"], factory, max_parallel=8, max_queue=16)
    got: list[Backend] = []

    async def one() -> None:
        async with pool.lease("m") as leased:
            got.append(leased)

    await asyncio.gather(*(one() for _ in range(8)))
    assert calls == ["m"]
    assert backend.loads == 1
    assert got == [backend] * 8
    assert _state(pool, "m").status == "loaded"
    # and later leases reuse the loaded backend
    async with pool.lease("m") as again:
        assert again is backend
    assert calls == ["m"] and backend.loads == 1


async def test_concurrent_cold_requests_load_once_with_one_slot() -> None:
    factory = Factory()
    pool = _pool(["m"], factory, max_parallel=1, max_queue=16)

    async def one() -> None:
        async with pool.lease("m"):
            await asyncio.sleep(0)

    await asyncio.gather(*(one() for _ in range(5)))
    assert factory.calls == ["m"]
    assert factory.backends["m"].loads == 1


async def test_max_parallel_one_serialises() -> None:
    pool = _pool(["m"], Factory(), max_parallel=1, max_queue=16)
    running = 0
    peak = 0
    order: list[str] = []

    async def one(name: str) -> None:
        nonlocal running, peak
        async with pool.lease("m"):
            running += 1
            peak = max(peak, running)
            order.append(f"start {name}")
            await asyncio.sleep(0.005)
            order.append(f"end {name}")
            running -= 1

    await asyncio.gather(*(one(str(i)) for i in range(4)))
    assert peak == 1
    for i in range(0, len(order), 2):  # each start is followed by its own end
        assert order[i].split()[1] == order[i + 1].split()[1]


async def test_max_parallel_two_runs_two_at_once() -> None:
    pool = _pool(["m"], Factory(), max_parallel=2, max_queue=16)
    inside = asyncio.Event()
    release = asyncio.Event()
    count = 0

    async def one() -> None:
        nonlocal count
        async with pool.lease("m"):
            count += 1
            if count == 2:
                inside.set()
            await release.wait()

    tasks = [asyncio.create_task(one()) for _ in range(2)]
    await asyncio.wait_for(inside.wait(), 2)
    assert _state(pool, "m").active == 2
    release.set()
    await asyncio.gather(*tasks)


async def test_queue_full_raises_overloaded_and_states_report_it() -> None:
    pool = _pool(["m"], Factory(), max_parallel=1, max_queue=1, retry_after=7)
    release = asyncio.Event()
    entered: list[int] = []

    async def holder(i: int) -> None:
        async with pool.lease("m"):
            entered.append(i)
            await release.wait()

    first = asyncio.create_task(holder(1))
    await _until(lambda: entered == [1])
    second = asyncio.create_task(holder(2))
    await _until(lambda: _state(pool, "m").queued == 1)
    state = _state(pool, "m")
    assert (state.active, state.queued) == (1, 1)

    with pytest.raises(Overloaded) as info:
        async with pool.lease("m"):
            pytest.fail("a third lease must not be granted")
    error = info.value
    assert error.retry_after == 7
    assert error.headers() == {"Retry-After": "7"}
    assert error.status_code == 503
    assert isinstance(error, GroupQwenError)
    assert (_state(pool, "m").active, _state(pool, "m").queued) == (1, 1)  # the refusal left no trace

    release.set()
    await asyncio.gather(first, second)
    assert entered == [1, 2]
    state = _state(pool, "m")
    assert (state.active, state.queued) == (0, 0)
    assert state.last_used is not None


async def test_max_queue_zero_refuses_the_second_request() -> None:
    pool = _pool(["m"], Factory(), max_parallel=1, max_queue=0)
    release = asyncio.Event()
    holding = asyncio.Event()

    async def holder() -> None:
        async with pool.lease("m"):
            holding.set()
            await release.wait()

    task = asyncio.create_task(holder())
    await asyncio.wait_for(holding.wait(), 2)
    with pytest.raises(Overloaded):
        async with pool.lease("m"):
            pass
    release.set()
    await task
    async with pool.lease("m"):  # free again
        pass


async def test_cancelled_waiter_leaves_the_queue() -> None:
    pool = _pool(["m"], Factory(), max_parallel=1, max_queue=1)
    release = asyncio.Event()
    holding = asyncio.Event()

    async def holder() -> None:
        async with pool.lease("m"):
            holding.set()
            await release.wait()

    async def waiter() -> None:
        async with pool.lease("m"):
            pass

    first = asyncio.create_task(holder())
    await asyncio.wait_for(holding.wait(), 2)
    second = asyncio.create_task(waiter())
    await _until(lambda: _state(pool, "m").queued == 1)
    second.cancel()
    with pytest.raises(asyncio.CancelledError):
        await second
    assert _state(pool, "m").queued == 0
    third = asyncio.create_task(waiter())  # the queue has room again
    await _until(lambda: _state(pool, "m").queued == 1)
    release.set()
    await asyncio.gather(first, third)


async def test_failed_load_is_marked_logged_once_and_other_models_still_work(
    caplog: pytest.LogCaptureFixture,
) -> None:
    factory = Factory(broken=lambda model_id: ModelLoadError("corrupt GGUF") if model_id == "bad" else None)
    pool = _pool(["bad", "good"], factory)
    with caplog.at_level(logging.INFO, logger="groupqwen"), pytest.raises(ModelLoadError) as info:
        async with pool.lease("bad"):
            pytest.fail("a failed load must not lease")
    assert "corrupt GGUF" in info.value.message
    assert info.value.status_code == 502
    assert info.value.code == "model_load_failed"
    state = _state(pool, "bad")
    assert state.status == "failed"
    assert state.error is not None and "corrupt GGUF" in state.error
    assert (state.active, state.queued) == (0, 0)
    [logged] = [r for r in caplog.records if r.levelno >= logging.WARNING]  # by the pool, which handles it
    assert logged.getMessage() == "model load failed" and logged.kv["model"] == "bad"  # type: ignore[attr-defined]

    async with pool.lease("good") as backend:
        assert backend is factory.backends["good"]
    assert _state(pool, "good").status == "loaded"
    assert _state(pool, "bad").status == "failed"


async def test_a_backend_factory_that_raises_marks_the_model_failed_not_loading() -> None:
    """Building the backend is part of the load: a factory that refuses the model (a setting it cannot
    serve) leaves it ``failed`` with the reason, and the next request tries again."""
    refusals = [ModelLoadError("no server configured for m")]

    def factory(spec: ModelSpec) -> Backend:
        if refusals:
            raise refusals.pop()
        return FakeBackend(model_id=spec.id, tokens=["ok"])

    pool = _pool(["m"], factory)
    with pytest.raises(ModelLoadError):
        async with pool.lease("m"):
            pytest.fail("a failed load must not lease")
    assert (_state(pool, "m").status, _state(pool, "m").error) == ("failed", "no server configured for m")
    async with pool.lease("m"):
        assert _state(pool, "m").status == "loaded"


async def test_failed_load_with_a_groupqwen_error_keeps_its_message() -> None:
    factory = Factory(broken=lambda _: ModelLoadError("no file at /x.gguf"))
    pool = _pool(["m"], factory)
    with pytest.raises(ModelLoadError, match=r"no file at /x\.gguf"):
        async with pool.lease("m"):
            pass
    state = _state(pool, "m")
    assert (state.status, state.error) == ("failed", "no file at /x.gguf")


async def test_a_bug_in_a_backends_load_is_not_translated_by_the_pool() -> None:
    """A backend translates its own foreign errors; anything else that escapes it is a bug: the model is
    marked failed and the exception goes up unchanged (the API makes it a logged 500)."""
    factory = Factory(broken=lambda _: RuntimeError("a bug"))
    pool = _pool(["m"], factory)
    with pytest.raises(RuntimeError, match="a bug"):
        async with pool.lease("m"):
            pass
    state = _state(pool, "m")
    assert (state.status, state.error) == ("failed", "RuntimeError: a bug")


async def test_concurrent_requests_for_a_failing_model_all_fail() -> None:
    factory = Factory(broken=lambda _: ModelLoadError("boom"))
    pool = _pool(["m"], factory, max_parallel=4)

    async def one() -> None:
        async with pool.lease("m"):
            pass

    results = await asyncio.gather(*(one() for _ in range(4)), return_exceptions=True)
    assert all(isinstance(r, ModelLoadError) for r in results)
    assert (_state(pool, "m").active, _state(pool, "m").queued) == (0, 0)


async def test_states_report_every_model_and_activity() -> None:
    pool = _pool(["a", "b"], Factory(), max_parallel=1)
    assert [(s.spec.id, s.status, s.active, s.queued, s.error) for s in pool.states()] == [
        ("a", "unloaded", 0, 0, None),
        ("b", "unloaded", 0, 0, None),
    ]
    async with pool.lease("a"):
        state = _state(pool, "a")
        assert (state.status, state.active, state.queued) == ("loaded", 1, 0)
        assert _state(pool, "b").status == "unloaded"
    assert _state(pool, "a").active == 0


async def test_unknown_model() -> None:
    pool = _pool(["m"], Factory())
    assert "m" in pool and "other" not in pool
    with pytest.raises(ModelNotFound) as info:
        async with pool.lease("other"):
            pass
    assert info.value.param == "model"
    assert info.value.status_code == 404
    with pytest.raises(ModelNotFound):
        await pool.load("other")


async def test_load_is_idempotent_and_close_unloads() -> None:
    factory = Factory()
    pool = _pool(["m"], factory)
    await pool.load("m")
    await pool.load("m")
    assert factory.calls == ["m"]
    assert _state(pool, "m").status == "loaded"
    await pool.close()
    assert _state(pool, "m").status == "unloaded"


async def test_request_cancelled_during_a_cold_load_does_not_leave_the_model_loading() -> None:
    started = asyncio.Event()
    gate = asyncio.Event()

    class _GatedLoad(FakeBackend):
        async def load(self) -> None:
            started.set()
            await gate.wait()
            await super().load()

    pool = _pool(["m"], lambda spec: _GatedLoad(model_id=spec.id))

    async def one() -> None:
        async with pool.lease("m"):
            pass

    task = asyncio.create_task(one())
    await asyncio.wait_for(started.wait(), 2)
    task.cancel()  # the client went away while the model was loading
    with pytest.raises(asyncio.CancelledError):
        await task
    state = _state(pool, "m")
    assert (state.active, state.queued) == (0, 0)
    assert state.status != "loading", "nothing is loading any more"
    gate.set()
    async with pool.lease("m") as backend:  # the next request loads it
        assert isinstance(backend, FakeBackend) and backend.loads == 1
    assert _state(pool, "m").status == "loaded"


def test_shares_the_cpu_only_for_in_process_models_on_every_core() -> None:
    """Decides ``cache.overlap: auto``: overlap the embedding with generation where they do not compete, and
    never by sending a remote server a request that a semantic hit would abandon."""
    from groupqwen.api.services import overlap_from_settings
    from groupqwen.pool.factory import shares_the_cpu

    local = ModelSpec(id="m", family="f", parameters="1B", context_length=4096, size_bytes=1)
    remote = replace(local, backend="openai_http", urls=("http://127.0.0.1:1/v1",))
    assert shares_the_cpu(local, Settings(), cores=2)  # n_threads 0: every core
    assert shares_the_cpu(local, Settings(n_threads=4), cores=2)
    assert not shares_the_cpu(local, Settings(n_threads=1), cores=2)  # a core left for the embedding
    assert not shares_the_cpu(local, Settings(n_gpu_layers=-1), cores=2)  # computes on the GPU
    assert not shares_the_cpu(remote, Settings(), cores=2)  # computes elsewhere
    auto = overlap_from_settings(Settings(n_threads=os.cpu_count() or 1))
    assert not auto(local) and not auto(remote)  # remote: a semantic hit would abandon a request sent
    assert overlap_from_settings(Settings(n_gpu_layers=-1))(local)
    assert overlap_from_settings(Settings(cache={"overlap": "always"}))(local)
    assert not overlap_from_settings(Settings(cache={"overlap": "never"}))(remote)
