"""``GET /v1/ws``: chat completions over one WebSocket, a thin adapter over ``Pipeline.run`` like the JSON
and SSE routes (docs/api.md, "WebSocket"). JSON text frames, one message type per ``type``:

- client → server: ``chat.create`` (``id``, ``body``: a ``POST /v1/chat/completions`` body, ``headers``:
  its cache headers, optional), ``cancel``
  (``id``), ``resume`` (``session``, ``generations``: ``[{id, after_seq}]``), ``ping``, ``pong``;
- server → client: ``hello`` (first: ``protocol``, ``session``), ``chunk`` / ``done`` / ``error`` /
  ``cancelled`` of a generation (``id``, ``seq``), ``error`` about a frame (no ``seq``), ``resumed``,
  ``ping``, ``pong``.

A generation runs in a task of its own, not the connection's: when the socket drops it goes on, parked, for
``ws.resume_window_s`` (``ws_sessions``). One ``Connection`` per socket reads frames (this task), writes
them from its ``Outlet`` (a writer task) and keeps the heartbeat (a third task). A resume of a session
another replica holds turns the connection into a relay to that replica (``ws_relay``, ``ws.redis_url``).
"""

from __future__ import annotations

import asyncio
import hashlib
import secrets
from contextlib import suppress
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from fastapi import APIRouter, WebSocket
from starlette.requests import HTTPConnection

from groupqwen import log
from groupqwen.api import auth
from groupqwen.api.services import Services
from groupqwen.api.ws_frames import (
    GOING_AWAY,
    NORMAL_CLOSURE,
    POLICY_VIOLATION,
    RESUMED_ELSEWHERE,
    Violation,
    error_frame,
    parse,
    request_headers,
    resumes,
)
from groupqwen.api.ws_generation import generate
from groupqwen.api.ws_relay import RELAYED, Relay, open_relay
from groupqwen.api.ws_sessions import Cancelled, Generation, Outlet, Session, encode
from groupqwen.errors import GroupQwenError, InvalidRequest, NotFound, ResumeExpired, TooManyGenerations

router = APIRouter()
_log = log.get(__name__)
PROTOCOL = 1


@dataclass(frozen=True)
class Identity:
    """Who opened a WebSocket: the upgrade request (its principal, settled by ``api/auth.py`` before the
    route runs: a refused key is closed with 1008 at the upgrade) and ``owner``, what its sessions are
    bound to (only the same owner may resume them); ``relayed``: another replica's relay (``ws_relay``),
    which is never relayed further."""

    connection: HTTPConnection
    owner: str
    relayed: bool = False


def identify(websocket: WebSocket) -> Identity:
    """The one place that settles who opens a WebSocket: the upgrade's principal (its key, or with
    ``auth: off`` the ``Authorization`` sent), as the HTTP routes read theirs."""
    principal = auth.principal_of(websocket)
    who = f"{principal.key_id or ''}\x00{auth.owner(websocket)}"
    owner = hashlib.sha256(who.encode()).hexdigest()
    return Identity(websocket, owner, relayed=RELAYED in websocket.headers)


def origin_allowed(websocket: WebSocket, allowed: list[str]) -> bool:
    """A browser's ``Origin`` must be the gateway's own or in ``ws.allowed_origins`` (``*``: any); clients
    that send none (not browsers) are not subject to it."""
    origin = websocket.headers.get("origin")
    if origin is None or "*" in allowed:
        return True
    origin = origin.rstrip("/").lower()
    if origin in {o.rstrip("/").lower() for o in allowed}:
        return True
    return urlsplit(origin).netloc == websocket.headers.get("host", "").lower()


@router.websocket("/v1/ws")
async def chat_socket(websocket: WebSocket) -> None:
    services: Services = websocket.app.state.services
    if not origin_allowed(websocket, services.settings.ws.allowed_origins):
        _log.info("websocket refused", origin=websocket.headers.get("origin", "")[:200])
        await websocket.close(code=POLICY_VIOLATION)  # before the upgrade: an HTTP 403
        return
    identity = identify(websocket)
    await websocket.accept()
    await Connection(websocket, services, identity).serve()


class Connection:
    """One socket: reads and answers frames, writes its ``Outlet``, keeps the heartbeat."""

    def __init__(self, websocket: WebSocket, services: Services, identity: Identity) -> None:
        self.websocket = websocket
        self.services = services
        self.identity = identity
        self.sessions = services.sessions
        self.config = services.settings.ws
        self.clock = self.sessions.clock
        self.outlet = Outlet(self.config.send_queue_frames, self.clock)
        self.session: Session = self.sessions.create(identity.owner, self)
        self.received_at = self.clock.monotonic()
        self.violations = 0
        task = asyncio.current_task()
        assert task is not None
        self._task = task
        self._closing: tuple[int, str] | None = None
        self._gone = False
        self._goodbye = False  # the client closed normally (1000)
        self.relay: Relay | None = None  # the session is another replica's (``ws_relay``)
        self._pump: asyncio.Task[None] | None = None

    # -- lifetime -------------------------------------------------------------------------------------

    async def serve(self) -> None:
        self.sessions.open_sockets += 1
        loop = asyncio.get_running_loop()
        writer, heartbeat = loop.create_task(self._write()), loop.create_task(self._heartbeat())
        try:
            await self._send(self._hello())
            await self._read()
        except asyncio.CancelledError:
            if self._closing is None and not self._gone:
                raise
            self._task.uncancel()
        finally:
            self.sessions.open_sockets -= 1
            self.outlet.close()
            writer.cancel()
            heartbeat.cancel()
            self.sessions.detach(self.session, self)
            if self.relay is not None:
                assert self._pump is not None
                self._pump.cancel()
                with suppress(Exception):
                    await self.relay.close(self._goodbye)
        if self._closing is not None and not self._gone:
            # the peer may be gone, or not reading: the close frame waits for room at most a heartbeat
            with suppress(Exception):
                async with asyncio.timeout(self.config.heartbeat_s):
                    await self.websocket.close(*self._closing)

    def _stop(self, code: int, reason: str) -> None:
        """End this connection from another task, with a close frame."""
        if self._closing is not None or self._gone:
            return
        self._closing = (code, reason)
        _log.info("websocket closed by the server", code=code, reason=reason)
        self.outlet.close()
        self._task.cancel()

    def evict(self) -> None:
        self._stop(RESUMED_ELSEWHERE, "the session was resumed on another connection")

    def _hello(self) -> dict[str, Any]:
        config = self.config
        return {
            "type": "hello",
            "protocol": PROTOCOL,
            "session": self.session.token,
            "resume_window_s": config.resume_window_s,
            "heartbeat_s": config.heartbeat_s,
            "max_generations": config.max_generations,
            "max_frame_bytes": config.max_frame_bytes,
        }

    async def _send(self, frame: dict[str, Any]) -> None:
        await self.outlet.put(encode(frame))

    async def _write(self) -> None:
        try:
            while (text := await self.outlet.take()) is not None:
                await self.websocket.send_text(text)
        except Exception:  # the socket is closing under the writer: nothing more is written, and the
            # reader takes the close, whose code says whether the client said goodbye (1000: its generations
            # are cancelled) or dropped (parked for a resume); cancelling the reader here lost that code on a
            # busy machine. A peer that neither closes nor answers is the heartbeat's to drop.
            self.outlet.close()

    async def _heartbeat(self) -> None:
        """A ``ping`` every ``ws.heartbeat_s``; a peer that sent nothing for 2 intervals, or that took no
        frame from a full queue for 2 intervals, is dropped (its generations are parked). When both hold,
        the stalled queue is the reason given: it is the more specific one."""
        interval = self.config.heartbeat_s
        clock = self.clock
        next_ping = clock.monotonic() + interval
        while True:
            now = clock.monotonic()
            stalled = self.outlet.stalled_s()
            if stalled >= 2 * interval:
                self._stop(POLICY_VIOLATION, f"the client read nothing for {2 * interval:g} s")
                return
            if now - self.received_at >= 2 * interval:
                self._stop(GOING_AWAY, f"nothing from the client for {2 * interval:g} s (ws.heartbeat_s)")
                return
            if now >= next_ping:
                self.outlet.offer(encode({"type": "ping"}))
                next_ping = now + interval
            wake = min(next_ping, self.received_at + 2 * interval)
            if len(self.outlet):
                wake = min(wake, now + 2 * interval - stalled)
            await clock.sleep(max(wake - now, 0.0))

    # -- reading --------------------------------------------------------------------------------------

    async def _read(self) -> None:
        while True:
            message = await self.websocket.receive()
            if message["type"] == "websocket.disconnect":
                self._gone = True
                self._goodbye = message.get("code") == NORMAL_CLOSURE
                if self._goodbye:  # the client said goodbye: nothing to resume
                    self.session.cancel(self.session.generations.values(), Cancelled("The client closed"))
                return
            self.received_at = self.clock.monotonic()
            try:
                kind, gid, frame = parse(message, self.config.max_frame_bytes)
            except Violation as violation:
                self.violations += 1
                await self._send(error_frame(violation.error, violation.gid))
                if self.violations >= self.config.max_violations:
                    self._stop(POLICY_VIOLATION, f"{self.violations} protocol violations in a row")
                    await asyncio.sleep(0)  # cancelled here
                continue
            self.violations = 0
            try:
                await self._dispatch(kind, gid, frame)
            except GroupQwenError as exc:
                await self._send(error_frame(exc, gid))

    async def _dispatch(self, kind: str, gid: str | None, frame: dict[str, Any]) -> None:
        if kind == "ping":
            await self._send({"type": "pong", **({"data": frame["data"]} if "data" in frame else {})})
        elif kind == "pong":
            pass
        elif self.relay is not None:  # the session's replica answers the rest
            await self.relay.send(frame)
        elif kind == "chat.create":
            assert gid is not None
            self._create(gid, frame["body"], request_headers(frame))
        elif kind == "cancel":
            assert gid is not None
            generation = self.session.generations.get(gid)
            if generation is None or not generation.running:
                raise NotFound(
                    f"No generation {gid!r} is running on this session", param="id", code="unknown_id"
                )
            generation.cancel(Cancelled("The client cancelled the generation"))
        elif kind == "resume":
            await self._resume(frame["session"], resumes(frame))

    def _create(self, gid: str, body: dict[str, Any], headers: dict[str, str]) -> None:
        session = self.session
        existing = session.generations.get(gid)
        if existing is not None and existing.running:
            raise InvalidRequest(
                f"A generation with id {gid!r} is already running on this session: give each a new id",
                param="id",
                code="duplicate_id",
            )
        if session.running() >= self.config.max_generations:
            raise TooManyGenerations(
                f"{session.running()} generations are running on this connection, the most allowed "
                f"(ws.max_generations): wait for one to finish or cancel one"
            )
        generation = Generation(gid, secrets.token_hex(16), self.config.buffer_frames, self.outlet)
        session.add(generation)
        self.sessions.publish(session)
        work = generate(self.services, session, generation, body, headers, self.identity.connection)
        generation.task = asyncio.get_running_loop().create_task(work)

    async def _resume(self, token: str, wanted: list[tuple[str, int]]) -> None:
        claimed = self.sessions.claim(token, self.identity.owner)
        if claimed is None and await self._relay(token, wanted):
            return
        if claimed is None:  # unknown, expired or someone else's: the same answer
            for gid, _ in wanted or [("", 0)]:
                gone = ResumeExpired("That session cannot be resumed (expired, or not yours): ask again")
                await self._send(error_frame(gone, gid or None))
            return
        if claimed is not self.session:
            if self.session.generations:
                raise InvalidRequest(
                    "'resume' must come before any 'chat.create' on a connection", code="invalid_frame"
                )
            self.sessions.discard(self.session)
            self.session = claimed
        self.sessions.attach(claimed, self)
        names = {gid for gid, _ in wanted}
        unnamed = [g for g in claimed.generations.values() if g.id not in names]
        claimed.cancel(unnamed, Cancelled("Not named by the client's resume"))
        await self._send({"type": "resumed", "session": claimed.token})
        for gid, after in wanted:
            generation = claimed.generations.get(gid)
            try:
                if generation is None:
                    raise ResumeExpired(f"Generation {gid!r} is gone (ws.resume_window_s, ws.buffer_frames)")
                await generation.attach(self.outlet, after)
            except GroupQwenError as exc:
                if generation is not None and isinstance(exc, ResumeExpired):
                    claimed.cancel([generation], Cancelled("Its frames are no longer kept"))
                await self._send(error_frame(exc, gid))

    async def _relay(self, token: str, wanted: list[tuple[str, int]]) -> bool:
        """Whether another replica holds session ``token`` for this client and took its resume: then this
        connection relays to it from now on (``ws_relay``)."""
        directory = self.sessions.directory
        if directory is None or self.identity.relayed or self.session.generations:
            return False
        identity = self.identity
        relay = await open_relay(directory, self.config, identity.connection, identity.owner, token, wanted)
        if relay is None:
            return False
        self.sessions.discard(self.session)
        self.relay = relay
        self._pump = asyncio.get_running_loop().create_task(self._relay_frames(relay))
        return True

    async def _relay_frames(self, relay: Relay) -> None:
        code, reason = await relay.pump(self.outlet)
        self._stop(code, reason)
