"""Fan-out of finished request records to live subscribers (the dashboard's SSE stream).

Each subscriber has a bounded queue; a slow one loses its oldest undelivered records (counted in its
``missed``) instead of slowing requests down. The number of subscribers is capped.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from groupqwen.errors import Overloaded
from groupqwen.telemetry.records import RequestRecord


class Subscription:
    def __init__(self, size: int) -> None:
        self.queue: asyncio.Queue[RequestRecord] = asyncio.Queue(size)
        self.missed = 0

    def offer(self, record: RequestRecord) -> None:
        if self.queue.full():
            self.queue.get_nowait()
            self.missed += 1
        self.queue.put_nowait(record)

    async def next(self, within: float) -> RequestRecord | None:
        """The next record, or ``None`` when ``within`` seconds pass without one."""
        try:
            async with asyncio.timeout(within):
                return await self.queue.get()
        except TimeoutError:
            return None


class LiveHub:
    def __init__(self, *, max_subscribers: int = 32, queue_size: int = 256) -> None:
        self._subscribers: set[Subscription] = set()
        self._max = max_subscribers
        self._size = queue_size

    @property
    def subscribers(self) -> int:
        return len(self._subscribers)

    def publish(self, record: RequestRecord) -> None:
        for subscription in self._subscribers:
            subscription.offer(record)

    def check_room(self) -> None:
        """Raise ``Overloaded`` (503) if no more subscribers are allowed."""
        if len(self._subscribers) >= self._max:
            raise Overloaded(
                f"{self._max} live metric streams are open already (the limit); retry later", retry_after=5
            )

    @asynccontextmanager
    async def subscribe(self) -> AsyncIterator[Subscription]:
        self.check_room()
        subscription = Subscription(self._size)
        self._subscribers.add(subscription)
        try:
            yield subscription
        finally:
            self._subscribers.discard(subscription)
