"""``EmbeddingThreads``: the semantic cache's embeddings, run on threads of their own.

An embedding is blocking work (MiniLM: 2-3 ms of CPU), so it runs off the event loop. Rather than an
executor's hop (``asyncio.to_thread``: a copied context, a ``concurrent.futures`` future with its lock
and condition, the pool's semaphore, an asyncio future chained to it by callbacks), a text and its
asyncio future go into a queue that the cache's threads drain in order, each text embedded on its own
(one ``Embedder.embed`` call of one text, so a vector never depends on the texts beside it: the int8
MiniLM quantises a padded batch's activations with one scale, which moves each row's vector), its vector
handed back with one ``call_soon_threadsafe``. A text whose waiter has gone before its turn (the lookup's
timeout, a client that left) is not embedded.

A thread starts when a text arrives and none is idle, up to as many as the executor it replaces would
use (the cores + 4, at most 32: a remote embedder's threads mostly wait on the network, and a single
thread, measured, serialised a local model's concurrent misses); each ends after ``idle_s`` without a
text, or at ``close`` (a later text starts one again), so a cache that is never used, or dropped without
``close``, holds no thread.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import queue
import threading

from groupqwen.cache.embedders import Embedder, Vectors

_Job = tuple[asyncio.AbstractEventLoop, str, "asyncio.Future[Vectors]"]


class EmbeddingThreads:
    """Embeds one text at a time per thread with ``embedder``, on at most ``threads`` threads of its own
    (default: the cores + 4, at most 32, as ``asyncio.to_thread``'s executor); ``embed`` awaits the
    vector."""

    def __init__(self, embedder: Embedder, threads: int | None = None, idle_s: float = 60.0) -> None:
        self._embedder = embedder
        self._max = threads or min(32, (os.cpu_count() or 1) + 4)
        self._idle_s = idle_s
        self._jobs: queue.SimpleQueue[_Job | None] = queue.SimpleQueue()  # None: end when nothing waits
        self._lock = threading.Lock()  # orders starting a thread against the threads' decisions to end
        self._threads = 0  # running
        self._idle = 0  # of which waiting for a job

    async def embed(self, text: str) -> Vectors:
        """The unit vector of ``text``; raises what the embedder raised. Cancelling the wait before a
        thread reaches the text spares its embedding."""
        loop = asyncio.get_running_loop()
        future: asyncio.Future[Vectors] = loop.create_future()
        self._jobs.put((loop, text, future))
        # no lock while a thread is idle (a waiting thread can hold it, and the event loop would wait for
        # it): a thread that ends first counts itself out, then looks at the queue, so either it sees
        # this text or this sees it gone
        if self._idle == 0:
            self._start()
        return await future

    def _start(self) -> None:
        with self._lock:
            if self._idle == 0 and self._threads < self._max:
                self._threads += 1
                threading.Thread(target=self._run, name="groupqwen-embed", daemon=True).start()

    def close(self) -> None:
        """End the threads once the texts queued so far are embedded."""
        with self._lock:
            for _ in range(self._threads):
                self._jobs.put(None)

    def _run(self) -> None:
        while True:
            with self._lock:
                self._idle += 1
            try:
                job = self._jobs.get(timeout=self._idle_s)
            except queue.Empty:
                job = None
            with self._lock:
                self._idle -= 1  # before the look at the queue: ``embed`` queues, then starts a thread
                if job is None and self._jobs.empty():  # if none is idle, so no text arrives unseen
                    self._threads -= 1
                    return
            if job is not None:
                self._embed(*job)

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
