"""WebSocket sessions and their generations, apart from any socket, so that a generation outlives the
connection that asked for it (docs/api.md, "WebSocket").

- ``Outlet``: the frames waiting to be written to one connection, at most ``ws.send_queue_frames``; a
  generation that finds it full waits (it is paused: it reads no more deltas, so the model waits too).
- ``Generation``: one ``chat.create``; every frame it emits gets the next ``seq`` and is kept in a buffer
  of at most ``ws.buffer_frames`` frames, to be sent again after a reconnect. While its connection is
  attached the oldest frames make room; once parked (the connection dropped), frames emitted since then
  are never dropped: a parked generation that fills its buffer is cancelled (``Overflow``).
- ``Session``: the generations of one client, under an unguessable token (``hello``) bound to the identity
  of the connection that opened it (``owner``); attached to one connection at a time.
- ``Sessions``: every session of the gateway. A detached session with generations is parked for
  ``ws.resume_window_s`` (on the injected ``Clock``), then its running generations are cancelled and the
  session forgotten. With a ``Directory`` (``ws.redis_url``) a session is published there from its first
  generation until it is forgotten, for the other replicas to relay resumes to it (``ws_relay``).
"""

from __future__ import annotations

import asyncio
import secrets
from collections import deque
from collections.abc import Iterable
from typing import Any, Protocol

from groupqwen import log
from groupqwen.api.streaming import json_bytes
from groupqwen.api.ws_directory import Directory
from groupqwen.clock import Clock
from groupqwen.config import WsConfig
from groupqwen.errors import ClientDisconnected, InvalidRequest, ResumeExpired

_log = log.get(__name__)


def encode(frame: dict[str, Any]) -> str:
    return json_bytes(frame).decode()


class Overflow(ClientDisconnected):
    """A parked generation filled its buffer: it is cancelled (nobody is there to read it)."""


class Cancelled(ClientDisconnected):
    """The client cancelled the generation (``cancel``), or left it out of its ``resume``."""


class Outlet:
    """The frames waiting for one connection's writer: ``put`` waits for room (the caller is paused),
    ``offer`` does not (a heartbeat is skipped when the queue is full), ``take`` waits for a frame.
    ``stalled_s``: for how long frames have waited without the writer taking any."""

    def __init__(self, bound: int, clock: Clock) -> None:
        self._frames: deque[str] = deque()
        self._bound = bound
        self._clock = clock
        self._room = asyncio.Event()
        self._room.set()
        self._ready = asyncio.Event()
        self.closed = False
        self._since = clock.monotonic()  # the last take, or the first put into an empty queue

    def __len__(self) -> int:
        return len(self._frames)

    def _append(self, text: str) -> None:
        if not self._frames:
            self._since = self._clock.monotonic()
        self._frames.append(text)
        self._ready.set()

    async def put(self, text: str) -> bool:
        """Queue ``text`` once there is room; ``False`` if the outlet closed meanwhile (not queued)."""
        while len(self._frames) >= self._bound and not self.closed:
            self._room.clear()
            await self._room.wait()
        if self.closed:
            return False
        self._append(text)
        return True

    def offer(self, text: str) -> bool:
        """Queue ``text`` only if there is room now."""
        if self.closed or len(self._frames) >= self._bound:
            return False
        self._append(text)
        return True

    async def take(self) -> str | None:
        """The next frame to write; ``None`` once the outlet is closed."""
        while not self._frames:
            if self.closed:
                return None
            self._ready.clear()
            await self._ready.wait()
        self._since = self._clock.monotonic()
        self._room.set()
        return self._frames.popleft()

    def stalled_s(self) -> float:
        return self._clock.monotonic() - self._since if self._frames else 0.0

    def close(self) -> None:
        self.closed = True
        self._room.set()
        self._ready.set()


class Generation:
    """One ``chat.create`` of a session: its frames (numbered, buffered) and the task that answers it."""

    def __init__(self, gid: str, request_id: str, bound: int, outlet: Outlet | None) -> None:
        self.id = gid
        self.request_id = request_id
        self.seq = 0
        self.outlet = outlet
        self.task: asyncio.Task[None] | None = None
        self.finished_at: float | None = None
        self.reason: ClientDisconnected | None = None  # why it was cancelled, when it was
        self._bound = bound
        self._buffer: deque[tuple[int, str]] = deque()
        self._parked_seq: int | None = None  # the last seq before its connection dropped
        self._lock = asyncio.Lock()  # one of emit / attach at a time: no frame sent twice or lost

    @property
    def running(self) -> bool:
        return self.finished_at is None

    async def emit(self, kind: str, fields: dict[str, Any]) -> None:
        """Number, buffer and send (when attached) one frame; ``Overflow`` when parked and full."""
        async with self._lock:
            if len(self._buffer) >= self._bound:
                if self._parked_seq is not None and self._buffer[0][0] > self._parked_seq:
                    raise Overflow(
                        f"Generation {self.id!r} filled its resume buffer ({self._bound} frames, "
                        "ws.buffer_frames) while its client was away"
                    )
                self._buffer.popleft()
            self.seq += 1
            text = encode({"type": kind, "id": self.id, "seq": self.seq, **fields})
            self._buffer.append((self.seq, text))
            if self.outlet is not None:
                await self.outlet.put(text)  # not queued if the connection closed: the buffer has it

    def park(self) -> None:
        self.outlet = None
        self._parked_seq = self.seq

    async def attach(self, outlet: Outlet, after_seq: int) -> None:
        """Send every buffered frame after ``after_seq``, then the live ones, to ``outlet``."""
        async with self._lock:
            if after_seq > self.seq:
                raise InvalidRequest(
                    f"after_seq {after_seq} of {self.id!r} is beyond its last frame ({self.seq})",
                    param="after_seq",
                )
            oldest = self._buffer[0][0] if self._buffer else self.seq + 1
            if after_seq + 1 < oldest:
                raise ResumeExpired(
                    f"Frames {after_seq + 1}-{oldest - 1} of {self.id!r} are no longer kept "
                    f"(ws.buffer_frames): ask again"
                )
            for seq, text in self._buffer:
                if seq > after_seq:
                    await outlet.put(text)
            self.outlet = outlet
            self._parked_seq = None

    def cancel(self, reason: ClientDisconnected) -> None:
        if self.task is not None and not self.task.done():
            self.reason = reason
            self.task.cancel()


class Owner(Protocol):
    """The connection a session is attached to."""

    def evict(self) -> None:
        """Another connection resumed the session: stop serving it (close the socket)."""
        ...


class Session:
    def __init__(self, token: str, owner: str, config: WsConfig, clock: Clock) -> None:
        self.token = token
        self.owner = owner  # who opened it (``ws.identify``): only they may resume it
        self.generations: dict[str, Generation] = {}
        self.connection: Owner | None = None
        self.published = False  # in the directory
        self._config = config
        self._clock = clock
        self.expiry: asyncio.Task[None] | None = None

    def running(self) -> int:
        return sum(1 for g in self.generations.values() if g.running)

    def add(self, generation: Generation) -> None:
        """Keep ``generation``, forgetting finished ones past the resume window or beyond
        ``ws.max_generations`` of them (oldest first): the frames a client may still miss are bounded."""
        now = self._clock.monotonic()
        finished = [g for g in self.generations.values() if g.finished_at is not None]
        finished.sort(key=lambda g: g.finished_at or 0.0)
        excess = len(finished) - self._config.max_generations + 1
        for i, g in enumerate(finished):
            if i < excess or now - (g.finished_at or now) > self._config.resume_window_s:
                del self.generations[g.id]
        self.generations[generation.id] = generation

    def finished(self, generation: Generation) -> None:
        generation.finished_at = self._clock.monotonic()

    def cancel(self, generations: Iterable[Generation], reason: ClientDisconnected) -> None:
        for generation in list(generations):
            generation.cancel(reason)
            self.generations.pop(generation.id, None)


class Sessions:
    """Every WebSocket session of the gateway; ``gauges`` for telemetry."""

    def __init__(self, config: WsConfig, clock: Clock, directory: Directory | None = None) -> None:
        self.config = config
        self.clock = clock
        self.directory = directory
        self.open_sockets = 0
        self._sessions: dict[str, Session] = {}

    def gauges(self) -> tuple[int, int]:
        """(open sockets, parked generations)."""
        parked = sum(len(s.generations) for s in self._sessions.values() if s.connection is None)
        return self.open_sockets, parked

    def create(self, owner: str, connection: Owner) -> Session:
        session = Session(secrets.token_urlsafe(32), owner, self.config, self.clock)
        session.connection = connection
        self._sessions[session.token] = session
        return session

    def claim(self, token: str, owner: str) -> Session | None:
        """The session ``token`` names, if ``owner`` opened it; ``None`` for any other (unknown, expired,
        someone else's: the caller cannot tell which)."""
        session = self._sessions.get(token)
        if session is None or not secrets.compare_digest(session.owner.encode(), owner.encode()):
            return None
        return session

    def attach(self, session: Session, connection: Owner) -> None:
        """``connection`` serves ``session`` from now on; the one serving it before is evicted."""
        previous, session.connection = session.connection, connection
        if previous is not None and previous is not connection:
            previous.evict()
        if session.expiry is not None:
            session.expiry.cancel()
            session.expiry = None

    def detach(self, session: Session, connection: Owner) -> None:
        """``connection`` is gone: its session's generations are parked for the resume window (a session
        without generations is forgotten at once)."""
        if session.connection is not connection:
            return  # resumed elsewhere meanwhile
        session.connection = None
        if not session.generations:
            self.discard(session)
            return
        for generation in session.generations.values():
            generation.park()
        session.expiry = asyncio.get_running_loop().create_task(self._expire(session))

    def publish(self, session: Session) -> None:
        """``session`` runs a generation: other replicas may relay resumes of it here."""
        if self.directory is not None and not session.published:
            self.directory.publish(session.token, session.owner)
            session.published = True

    def discard(self, session: Session) -> None:
        self._sessions.pop(session.token, None)
        if self.directory is not None and session.published:
            self.directory.withdraw(session.token)
            session.published = False

    async def _expire(self, session: Session) -> None:
        await self.clock.sleep(self.config.resume_window_s)
        if session.connection is not None:
            return
        running = [g for g in session.generations.values() if g.running]
        _log.info("websocket session expired", generations=len(session.generations), running=len(running))
        reason = ClientDisconnected(
            f"The client did not resume within {self.config.resume_window_s:g} s (ws.resume_window_s)"
        )
        session.cancel(session.generations.values(), reason)
        session.expiry = None
        self.discard(session)

    async def close(self) -> None:
        """Cancel every generation (the gateway stops) and wait for them."""
        tasks = []
        for session in list(self._sessions.values()):
            if session.expiry is not None:
                session.expiry.cancel()
            tasks += [g.task for g in session.generations.values() if g.task is not None]
            session.cancel(session.generations.values(), ClientDisconnected("The gateway is stopping"))
        self._sessions.clear()
        if tasks:
            await asyncio.gather(*tasks, return_exceptions=True)
        if self.directory is not None:
            await self.directory.close()
