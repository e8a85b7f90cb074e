"""``Authenticator``: an ``Authorization`` header → the ``Principal`` the request acts for, or an
``AuthenticationFailed`` (401) that says what is wrong without repeating the key.

One function for every transport: HTTP requests and the WebSocket upgrade hand it the same header. Keys are
looked up in the database (``KeyStore``, in a worker thread) and kept in memory for ``auth.key_cache_s``:
a key revoked or rotated on any replica stops working everywhere within that time. While the database
cannot be read, a key looked up within ``auth.key_stale_s`` keeps working as it was; any other gets a 503.
"""

from __future__ import annotations

import asyncio
import datetime as dt
from collections import OrderedDict
from dataclasses import dataclass

import sqlalchemy as sa

from groupqwen import log
from groupqwen.access.keys import KeyRecord, KeyStore, parse_key
from groupqwen.access.principal import ANONYMOUS, Principal
from groupqwen.clock import SYSTEM_CLOCK, Clock
from groupqwen.config import Settings
from groupqwen.errors import AuthenticationFailed, KeysUnavailable
from groupqwen.telemetry.database import database_url

_log = log.get(__name__)
NO_KEY = (
    "You didn't provide an API key. You need to provide your API key in an Authorization header using "
    "Bearer auth (i.e. Authorization: Bearer YOUR_KEY)."
)


@dataclass(frozen=True)
class _Entry:
    record: KeyRecord | None  # None: no such key
    fetched: float  # clock.monotonic() of the lookup


class Authenticator:
    """``store`` ``None``: ``auth: off``, every request is ``ANONYMOUS``."""

    def __init__(
        self,
        store: KeyStore | None,
        *,
        fresh_s: float = 10.0,
        stale_s: float = 600.0,
        clock: Clock = SYSTEM_CLOCK,
        max_entries: int = 10_000,
    ) -> None:
        self.store = store
        self.fresh_s = fresh_s
        self.stale_s = max(stale_s, fresh_s)
        self.clock = clock
        self.max_entries = max_entries
        self._entries: OrderedDict[str, _Entry] = OrderedDict()

    @classmethod
    def from_settings(cls, settings: Settings, *, clock: Clock = SYSTEM_CLOCK) -> Authenticator:
        auth = settings.auth
        if auth.mode == "off":
            return cls(None, clock=clock)
        store = KeyStore(database_url(settings), timeout=settings.telemetry.health_timeout_s * 2)
        return cls(store, fresh_s=auth.key_cache_s, stale_s=auth.key_stale_s, clock=clock)

    @property
    def enabled(self) -> bool:
        return self.store is not None

    async def principal(self, authorization: str | None) -> Principal:
        """Who the request with this ``Authorization`` header acts for."""
        if self.store is None:
            return ANONYMOUS
        scheme, _, token = (authorization or "").strip().partition(" ")
        token = token.strip()
        if not authorization or not token:
            raise AuthenticationFailed(NO_KEY)
        if scheme.lower() != "bearer":
            raise AuthenticationFailed(
                "The Authorization header must read 'Bearer YOUR_KEY' (i.e. Authorization: Bearer gq-…)"
            )
        parsed = parse_key(token)
        if parsed is None:
            raise AuthenticationFailed(
                "Incorrect API key provided: it is not a GroupQwen key (gq-<id>.<secret>). "
                "Ask the gateway's operator for one (groupqwen keys create)."
            )
        key_id, secret = parsed
        record = await self._lookup(key_id)
        if record is None or not record.opens_with(secret):
            raise AuthenticationFailed(
                f"Incorrect API key provided: gq-{key_id}.****. Check the key, or ask the gateway's "
                "operator for a new one (groupqwen keys create)."
            )
        status = record.status(self.clock.time())
        if status == "revoked":
            raise AuthenticationFailed(f"The API key gq-{key_id} has been revoked.")
        if status == "expired":
            assert record.expires_at is not None
            when = dt.datetime.fromtimestamp(record.expires_at, dt.UTC).isoformat(timespec="seconds")
            raise AuthenticationFailed(f"The API key gq-{key_id} expired at {when}.")
        return record.principal()

    async def _lookup(self, key_id: str) -> KeyRecord | None:
        assert self.store is not None
        now = self.clock.monotonic()
        entry = self._entries.get(key_id)
        if entry is not None and now - entry.fetched < self.fresh_s:
            return entry.record
        try:
            record = await asyncio.to_thread(self.store.get, key_id)
        except (sa.exc.SQLAlchemyError, OSError) as exc:
            if entry is not None and now - entry.fetched < self.stale_s:
                _log.warning("key store unreadable: using the key as last seen", key_id=key_id)
                return entry.record
            _log.warning("key store unreadable", error=type(exc).__name__)
            raise KeysUnavailable(
                "The API keys cannot be checked: the gateway's database cannot be read; retry shortly"
            ) from None
        self._entries[key_id] = _Entry(record, now)
        self._entries.move_to_end(key_id)
        while len(self._entries) > self.max_entries:
            self._entries.popitem(last=False)
        return record

    def bootstrap(self, key: str | None) -> KeyRecord | None:
        """At start: ensure the bootstrap admin key (``auth.bootstrap_admin_key``), which needs the
        database (``KeysUnavailable`` when it cannot be reached); without one, only warn when there is no
        key yet, or when the database cannot be read now (requests get a 503 until it can)."""
        if self.store is None:
            return None
        try:
            if key is None:
                if not self.store.list():
                    _log.warning("auth: keys and no key exists yet: create one with `groupqwen keys create`")
                return None
            record = self.store.ensure(key, "bootstrap", now=self.clock.time())
        except sa.exc.SQLAlchemyError as exc:
            reason = (str(getattr(exc, "orig", None) or exc).strip().splitlines() or [type(exc).__name__])[0]
            if key is None:
                _log.warning("the API keys cannot be read yet", error=reason[:300])
                return None
            raise KeysUnavailable(f"The API keys' database cannot be reached: {reason[:300]}") from exc
        if record.revoked_at is not None:
            _log.warning(
                "the bootstrap admin key is revoked: unset auth.bootstrap_admin_key", key_id=record.key_id
            )
        return record

    def close(self) -> None:
        if self.store is not None:
            self.store.close()
