"""A ``resume`` for a session another replica holds, relayed to it (``ws.redis_url``; docs/api.md,
"WebSocket"; docs/DEPLOYMENT.md, "Several replicas").

The directory (``api/ws_directory.py``) names the holder and the session's owner. A resume from anyone
else is answered as an unknown session, without asking the holder. Otherwise ``open_relay`` opens a
WebSocket to the holder with the client's own credentials (its ``Authorization``), so the holder settles
who it is exactly as for a client and resumes the session only for its owner, and sends the client's
``resume``; once the holder answers ``resumed``, the client's connection is a pipe to it (``Relay``):
the holder's frames go to the client (the buffered ones after each ``after_seq``, then the live ones,
with the client's reading pace), the client's frames (``chat.create``, ``cancel``, ``resume``) go to the
holder. Each leg keeps its own heartbeat: this replica answers the holder's pings and the client's. A
relay's own connection carries ``x-groupqwen-relayed`` and is never relayed further.

The holder unreachable, slower than ``ws.relay_timeout_s`` or not holding the session (it restarted): the
resume is answered ``resume_expired``, as on a lone replica. The holder gone once relaying: the client's
connection is closed with 1001, and its next resume is answered ``resume_expired``.
"""

from __future__ import annotations

import asyncio
import json
import secrets
from contextlib import suppress
from typing import Any

from starlette.requests import HTTPConnection
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, WebSocketException

from groupqwen import log
from groupqwen.api.ws_directory import Directory
from groupqwen.api.ws_frames import GOING_AWAY, NORMAL_CLOSURE
from groupqwen.api.ws_sessions import Outlet, encode
from groupqwen.config import WsConfig

_log = log.get(__name__)
RELAYED = "x-groupqwen-relayed"  # the header of a relay's own connection
_UNSENDABLE = (1005, 1006, 1015)  # close codes that say no close frame came: never sent on
_PING, _PONG = encode({"type": "ping"}), encode({"type": "pong"})  # as the holder (this code) writes them


class Relay:
    """A client connection's pipe to the replica holding its session."""

    def __init__(self, upstream: ClientConnection, resumed: str) -> None:
        self._upstream = upstream
        self._resumed = resumed

    async def send(self, frame: dict[str, Any]) -> None:
        """A client frame, to the holder (once the holder is gone, ``pump`` ends the connection)."""
        with suppress(ConnectionClosed):
            await self._upstream.send(encode(frame))

    async def pump(self, outlet: Outlet) -> tuple[int, str]:
        """The holder's frames into ``outlet`` (its ``resumed`` first), its pings answered, until it
        closes: then the close code and reason to close the client's connection with."""
        await outlet.put(self._resumed)
        try:
            while True:
                text = await self._upstream.recv(decode=True)
                if text == _PING:
                    await self._upstream.send(_PONG)
                else:
                    await outlet.put(text)
        except ConnectionClosed as closed:
            frame = closed.rcvd
            if frame is None or frame.code in _UNSENDABLE:
                _log.info("websocket relay lost its holder", error=str(closed))
                return GOING_AWAY, "the replica holding this session went away: resume again"
            return frame.code, frame.reason

    async def close(self, goodbye: bool) -> None:
        """The client left: said goodbye (its generations are cancelled, as when it closes a connection
        to their replica), or dropped (they stay parked there for a resume)."""
        await self._upstream.close(NORMAL_CLOSURE if goodbye else GOING_AWAY)


async def open_relay(
    directory: Directory,
    config: WsConfig,
    client: HTTPConnection,
    owner: str,
    token: str,
    wanted: list[tuple[str, int]],
) -> Relay | None:
    """A relay for the client's ``resume`` of session ``token`` (the generations ``wanted``), or ``None``
    when no other replica holds it for ``owner`` (unknown, someone else's, its holder gone or too slow)."""
    entry = await directory.lookup(token)
    if entry is None or entry.url == directory.url:
        return None
    if not secrets.compare_digest(entry.owner.encode(), owner.encode()):
        return None
    headers = {RELAYED: "1"}
    if (authorization := client.headers.get("authorization")) is not None:
        headers["Authorization"] = authorization
    resume = {
        "type": "resume",
        "session": token,
        "generations": [{"id": g, "after_seq": s} for g, s in wanted],
    }
    upstream: ClientConnection | None = None
    try:
        async with asyncio.timeout(config.relay_timeout_s):
            upstream = await connect(
                "ws" + entry.url.removeprefix("http") + "/v1/ws",
                additional_headers=headers,
                open_timeout=None,  # the timeout above bounds it all
                ping_interval=config.heartbeat_s,
                ping_timeout=config.heartbeat_s,
                close_timeout=config.relay_timeout_s,
                max_size=None,  # the holder's frames: sized by the holder
                proxy=None,  # replicas talk directly, whatever the environment's proxy
            )
            await upstream.send(encode(resume))
            while True:  # its hello, maybe a ping, then its answer
                answer = await upstream.recv(decode=True)
                kind = json.loads(answer).get("type")
                if kind == "ping":
                    await upstream.send(_PONG)
                elif kind != "hello":
                    break
    except BaseException as exc:  # cancelled too (the client went away meanwhile): never left open
        if upstream is not None:
            await upstream.close(GOING_AWAY)
        if not isinstance(exc, (OSError, TimeoutError, WebSocketException, ValueError)):
            raise
        _log.warning("websocket relay failed", holder=entry.url, error=str(exc) or type(exc).__name__)
        return None
    if kind != "resumed":  # the holder no longer has it
        await upstream.close(NORMAL_CLOSURE)
        return None
    _log.info("websocket session relayed", holder=entry.url)
    return Relay(upstream, answer)
