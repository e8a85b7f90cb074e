"""``api/ws_sessions.py`` alone: the send queue's bound (a full one pauses the writer of frames), the
per-generation buffer (what a resume can get back, and the cancel of a parked generation that fills it),
and sessions bound to who opened them."""

from __future__ import annotations

import asyncio
import json

import pytest

from groupqwen.api.ws_sessions import Generation, Outlet, Overflow, Sessions
from groupqwen.config import WsConfig
from groupqwen.errors import InvalidRequest, ResumeExpired
from groupqwen.testing import FakeClock


class Owner:
    evicted = False

    def evict(self) -> None:
        self.evicted = True


async def test_a_full_outlet_pauses_the_writer_until_a_frame_is_taken() -> None:
    clock = FakeClock()
    outlet = Outlet(2, clock)
    assert await outlet.put("a") and await outlet.put("b")
    assert not outlet.offer("ping")  # a heartbeat is skipped, never queued past the bound
    third = asyncio.create_task(outlet.put("c"))
    await asyncio.sleep(0)
    assert not third.done() and len(outlet) == 2
    clock.advance(5)
    assert outlet.stalled_s() == 5
    assert await outlet.take() == "a"
    assert await third and len(outlet) == 2 and outlet.stalled_s() == 0
    outlet.close()
    assert not await outlet.put("d")
    assert [await outlet.take(), await outlet.take(), await outlet.take()] == ["b", "c", None]


async def test_a_closed_outlet_releases_a_paused_writer() -> None:
    outlet = Outlet(1, FakeClock())
    await outlet.put("a")
    paused = asyncio.create_task(outlet.put("b"))
    await asyncio.sleep(0)
    outlet.close()
    assert await paused is False


async def _frames(outlet: Outlet) -> list[int]:
    out = []
    while len(outlet):
        out.append(json.loads(await outlet.take() or "{}")["seq"])
    return out


async def test_attach_sends_what_came_after_the_clients_last_frame() -> None:
    clock = FakeClock()
    generation = Generation("g", "r", 8, Outlet(100, clock))
    for i in range(5):
        await generation.emit("chunk", {"n": i})
    generation.park()
    await generation.emit("chunk", {"n": 5})  # while parked: buffered only
    outlet = Outlet(100, clock)
    await generation.attach(outlet, 3)
    assert await _frames(outlet) == [4, 5, 6]
    await generation.emit("done", {})
    assert await _frames(outlet) == [7]  # then the live ones
    with pytest.raises(InvalidRequest, match="beyond its last frame"):
        await generation.attach(Outlet(100, clock), 99)


async def test_frames_no_longer_kept_are_a_resume_expired() -> None:
    clock = FakeClock()
    generation = Generation("g", "r", 8, Outlet(100, clock))
    for i in range(20):
        await generation.emit("chunk", {"n": i})  # attached: the oldest make room
    generation.park()
    with pytest.raises(ResumeExpired, match="Frames 3-12"):
        await generation.attach(Outlet(100, clock), 2)
    await generation.attach(Outlet(100, clock), 12)


async def test_a_parked_generation_that_fills_its_buffer_overflows() -> None:
    generation = Generation("g", "r", 8, None)
    for i in range(8):
        await generation.emit("chunk", {"n": i})
    generation.park()
    for i in range(8):  # what came before the drop makes room for what comes after
        await generation.emit("chunk", {"n": i})
    with pytest.raises(Overflow, match=r"ws\.buffer_frames"):
        await generation.emit("chunk", {"n": 99})


async def test_a_session_is_only_its_owners() -> None:
    sessions = Sessions(WsConfig(), FakeClock())
    first = Owner()
    session = sessions.create("alice", first)
    assert sessions.claim(session.token, "mallory") is None
    assert sessions.claim(session.token + "x", "alice") is None
    assert sessions.claim(session.token, "alice") is session
    second = Owner()
    sessions.attach(session, second)
    assert first.evicted and session.connection is second
    sessions.detach(session, first)  # the evicted connection's goodbye changes nothing
    assert session.connection is second
    sessions.detach(session, second)  # no generations: forgotten at once
    assert sessions.claim(session.token, "alice") is None
    assert len({sessions.create("alice", Owner()).token for _ in range(100)}) == 100
