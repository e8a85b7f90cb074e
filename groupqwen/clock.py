"""Time, as the parts that wait for it see it: ``Clock`` (monotonic and wall time, and an async sleep) and
``SYSTEM_CLOCK``, the real one. Code with timers of its own (the pool's keep-alive and queue waits, the
cache's entry expiry, the Redis store's circuit breaker) takes a ``Clock``, so that a test can drive it
with ``groupqwen.testing.FakeClock`` instead of sleeping."""

from __future__ import annotations

import asyncio
import time
from typing import Protocol


class Clock(Protocol):
    def monotonic(self) -> float:
        """Seconds from an arbitrary start, never going back: for durations and deadlines."""
        ...

    def time(self) -> float:
        """Wall-clock seconds since the epoch: for what is shown or stored."""
        ...

    async def sleep(self, seconds: float) -> None:
        """Return once ``monotonic()`` has advanced by ``seconds``."""
        ...


class SystemClock:
    """The real clock: ``time.monotonic``, ``time.time`` and ``asyncio.sleep``."""

    def monotonic(self) -> float:
        return time.monotonic()

    def time(self) -> float:
        return time.time()

    async def sleep(self, seconds: float) -> None:
        await asyncio.sleep(seconds)


SYSTEM_CLOCK: Clock = SystemClock()
