"""Waiting for something another task or thread brings about (a writer's flush, a model's release), with a
generous deadline: the test asserts that it happens, never how fast."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable


async def until(condition: Callable[[], bool], within_s: float = 10.0, every_s: float = 0.001) -> None:
    """Poll ``condition`` every ``every_s`` (letting the loop and threads run) until it holds; fail after
    ``within_s``. A condition that asks a server over HTTP polls less often."""
    deadline = asyncio.get_running_loop().time() + within_s
    while not condition():
        assert asyncio.get_running_loop().time() < deadline, "condition never held"
        await asyncio.sleep(every_s)


def wait_until(condition: Callable[[], bool], within_s: float = 10.0) -> None:
    """``until`` for synchronous tests (a browser driven by Playwright, a server in another process)."""
    deadline = time.monotonic() + within_s
    while not condition():
        assert time.monotonic() < deadline, "condition never held"
        time.sleep(0.02)
