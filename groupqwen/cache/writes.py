"""The semantic cache's writes in flight (``SemanticCache.store`` runs each as a background task)."""

from __future__ import annotations

import asyncio
from collections.abc import Collection
from functools import partial


async def settled(tasks: Collection[asyncio.Task[None]]) -> None:
    """Wait until ``tasks`` are done, without cancelling them if the waiter is cancelled (a timeout)."""
    running = [t for t in tasks if not t.done()]
    if running:
        await asyncio.wait(running)


class Writes:
    """The cache's writes in flight: strong references to their tasks, by entry key and by scope."""

    def __init__(self) -> None:
        self.tasks: set[asyncio.Task[None]] = set()
        self.by_key: dict[str, asyncio.Task[None]] = {}  # the last write scheduled for a key
        self.by_scope: dict[str, set[asyncio.Task[None]]] = {}

    def add(self, entry_key: str, scope: str, task: asyncio.Task[None]) -> None:
        self.tasks.add(task)
        self.by_key[entry_key] = task
        self.by_scope.setdefault(scope, set()).add(task)
        task.add_done_callback(partial(self._done, entry_key, scope))

    def _done(self, entry_key: str, scope: str, task: asyncio.Task[None]) -> None:
        self.tasks.discard(task)
        if self.by_key.get(entry_key) is task:
            del self.by_key[entry_key]
        tasks = self.by_scope.get(scope)
        if tasks is not None:
            tasks.discard(task)
            if not tasks:
                del self.by_scope[scope]
