"""Which replica holds which WebSocket session, in Redis (``ws.redis_url``), so that a ``resume`` reaching
any replica finds the one that can answer it (``api/ws_relay.py``; docs/DEPLOYMENT.md, "Several replicas").

One key per session that has run a generation: ``ws.redis_prefix`` + the SHA-256 of its token (the token
itself, a secret, is not stored), holding the holder's address (``ws.advertise_url``) and the session's
owner (``ws.identify``). The holder writes it when the session's first generation starts and writes it
again every ``ws.heartbeat_s / 2``; each write lives ``2 × ws.heartbeat_s``, so the keys of a replica
that died go with it. A session that ends is deleted at once. Redis slow or down: a lookup finds nothing
(the resume is answered as on a lone replica), a failed write is retried by the next refresh; logged once
per outage.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import socket
from collections.abc import Coroutine
from dataclasses import dataclass
from typing import Any

from redis.exceptions import RedisError

from groupqwen import log, redis_client
from groupqwen.clock import Clock
from groupqwen.config import Settings, WsConfig
from groupqwen.errors import ConfigError

_log = log.get(__name__)
_REDIS_DOWN = (RedisError, OSError, TimeoutError)


def advertised_url(settings: Settings) -> str:
    """Where the other replicas reach this one: ``ws.advertise_url``, else ``http://<host>:<port>`` with
    a listen-everywhere host replaced by the address this machine's hostname resolves to (a container's
    or a pod's own)."""
    if settings.ws.advertise_url is not None:
        return settings.ws.advertise_url
    host = settings.host
    if host in ("", "0.0.0.0", "::"):
        try:
            host = socket.gethostbyname(socket.gethostname())
        except OSError as exc:
            problem = (
                f"this machine's address is unknown ({exc}): set it, e.g. http://10.0.0.5:{settings.port}"
            )
            raise ConfigError([("ws.advertise_url", problem)]) from None
    return f"http://{f'[{host}]' if ':' in host else host}:{settings.port}"


@dataclass(frozen=True)
class Entry:
    """A session's holder (its base URL) and owner, as the directory has them."""

    url: str
    owner: str


class Directory:
    """The sessions this replica holds, published in Redis, and the lookup of any replica's."""

    def __init__(self, config: WsConfig, url: str, clock: Clock) -> None:
        assert config.redis_url is not None
        self.url = url
        self._redis = redis_client.bounded(
            config.redis_url, timeout_s=config.redis_timeout_s, pool_wait_s=config.redis_timeout_s
        )
        self._prefix = config.redis_prefix + "session:"
        self._ttl_ms = max(1, round(2 * config.heartbeat_s * 1000))
        self._every_s = config.heartbeat_s / 2
        self._clock = clock
        self._published: dict[str, str] = {}  # key → value, of the sessions this replica holds
        self._refresher: asyncio.Task[None] | None = None
        self._writes: set[asyncio.Task[None]] = set()
        self._down = False

    def _key(self, token: str) -> str:
        return self._prefix + hashlib.sha256(token.encode()).hexdigest()

    def publish(self, token: str, owner: str) -> None:
        """Record that this replica holds session ``token`` of ``owner`` (written in the background)."""
        key = self._key(token)
        value = json.dumps({"url": self.url, "owner": owner})
        self._published[key] = value
        self._spawn(self._write({key: value}))
        if self._refresher is None or self._refresher.done():
            self._refresher = asyncio.get_running_loop().create_task(self._refresh())

    def withdraw(self, token: str) -> None:
        """Session ``token`` ended here: delete its key (in the background)."""
        key = self._key(token)
        if self._published.pop(key, None) is not None:
            self._spawn(self._delete([key]))

    async def lookup(self, token: str) -> Entry | None:
        """The holder and owner of session ``token``; ``None`` when unknown or when Redis cannot say."""
        try:
            raw = await self._redis.get(self._key(token))
        except _REDIS_DOWN as exc:
            self._failed("looking up a session", exc)
            return None
        self._recovered()
        if raw is None:
            return None
        value = json.loads(raw)
        return Entry(str(value["url"]), str(value["owner"]))

    async def close(self) -> None:
        """Stop refreshing and delete the keys of the sessions still held (the gateway stops)."""
        if self._refresher is not None:
            self._refresher.cancel()
        keys, self._published = list(self._published), {}
        try:
            if self._writes:  # before the delete, which they would otherwise undo
                await asyncio.gather(*self._writes, return_exceptions=True)
            if keys:
                await self._delete(keys)
        finally:
            await self._redis.aclose()

    def _spawn(self, work: Coroutine[Any, Any, None]) -> None:
        task = asyncio.get_running_loop().create_task(work)
        self._writes.add(task)
        task.add_done_callback(self._writes.discard)

    async def _refresh(self) -> None:
        while self._published:
            await self._clock.sleep(self._every_s)
            await self._write(dict(self._published))

    async def _write(self, entries: dict[str, str]) -> None:
        if not entries:
            return
        try:
            async with self._redis.pipeline(transaction=False) as pipe:
                for key, value in entries.items():
                    pipe.set(key, value, px=self._ttl_ms)
                await pipe.execute()
        except _REDIS_DOWN as exc:
            self._failed("publishing sessions", exc)
            return
        self._recovered()

    async def _delete(self, keys: list[str]) -> None:
        try:
            await self._redis.delete(*keys)
        except _REDIS_DOWN as exc:
            self._failed("deleting sessions (they expire by themselves)", exc)

    def _failed(self, doing: str, exc: BaseException) -> None:
        if not self._down:
            _log.warning(
                "websocket directory unavailable: resumes stay on their replica", doing=doing, error=str(exc)
            )
        self._down = True

    def _recovered(self) -> None:
        if self._down:
            _log.info("websocket directory available again")
        self._down = False
