"""``EmbeddingThread``: the semantic cache's embeddings, run on one thread of their own.

An embedding is blocking work (MiniLM: 2-3 ms of CPU), so it runs off the event loop. Rather than an
executor's hop (``asyncio.to_thread``: a copied context, a ``concurrent.futures`` future with its lock
and condition, the pool's semaphore, an asyncio future chained to it by callbacks), a text and its
asyncio future go into a queue that one thread drains in order, each text embedded on its own (one
``Embedder.embed`` call of one text, so a vector never depends on the texts beside it: the int8 MiniLM
quantises a padded batch's activations with one scale, which moves each row's vector), its vector handed
back with one ``call_soon_threadsafe``. One thread: concurrent misses' embeddings run one after the
other instead of competing for the cores (and the caches) with each other. A text whose waiter has gone
before its turn (the lookup's timeout, a client that left) is not embedded.

The thread starts on the first embedding and ends after ``idle_s`` without one, or at ``close`` (a later
embedding starts it again), so a cache that is never used, or dropped without ``close``, holds no thread.
"""

from __future__ import annotations

import asyncio
import contextlib
import queue
import threading

from groupqwen.cache.embedders import Embedder, Vectors

_Job = tuple[asyncio.AbstractEventLoop, str, "asyncio.Future[Vectors]"]


class EmbeddingThread:
    """Embeds one text at a time with ``embedder`` on a thread of its own; ``embed`` awaits the vector."""

    def __init__(self, embedder: Embedder, idle_s: float = 60.0) -> None:
        self._embedder = embedder
        self._idle_s = idle_s
        self._jobs: queue.SimpleQueue[_Job | None] = queue.SimpleQueue()  # None: end when idle
        self._lock = threading.Lock()  # orders a new job against the thread's decision to end
        self._thread: threading.Thread | None = None

    async def embed(self, text: str) -> Vectors:
        """The unit vector of ``text``; raises what the embedder raised. Cancelling the wait before the
        thread reaches the text spares its embedding."""
        loop = asyncio.get_running_loop()
        future: asyncio.Future[Vectors] = loop.create_future()
        with self._lock:
            self._jobs.put((loop, text, future))
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="groupqwen-embed", daemon=True)
                self._thread.start()
        return await future

    def close(self) -> None:
        """End the thread once the texts queued so far are embedded."""
        self._jobs.put(None)

    def _run(self) -> None:
        while True:
            try:
                job = self._jobs.get(timeout=self._idle_s)
            except queue.Empty:
                job = None
            if job is not None:
                self._embed(*job)
                continue
            with self._lock:
                if self._jobs.empty():  # no job can arrive unseen: ``embed`` queues under the lock
                    self._thread = None
                    return

    def _embed(self, loop: asyncio.AbstractEventLoop, text: str, future: asyncio.Future[Vectors]) -> None:
        if future.cancelled():  # read across threads: at worst a text just abandoned is embedded
            return
        try:
            result: Vectors | Exception = self._embedder.embed([text])[0]
        except Exception as exc:  # the waiter raises it
            result = exc
        with contextlib.suppress(RuntimeError):  # a closed loop: nobody waits any more
            loop.call_soon_threadsafe(_deliver, future, result)


def _deliver(future: asyncio.Future[Vectors], result: Vectors | Exception) -> None:
    if future.done():  # cancelled meanwhile
        return
    if isinstance(result, Exception):
        future.set_exception(result)
    else:
        future.set_result(result)
