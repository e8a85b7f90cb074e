"""API keys, kept hashed in the gateway's database (``telemetry.database_url``: SQLite by default,
PostgreSQL for replicas, which then share them).

A key reads ``gq-<key_id>.<secret>``: the ``key_id`` (16 hex digits) is public — it names the key in
listings, logs and error messages — and finds its row; the ``secret`` (43 random URL-safe characters,
256 bits) is shown once, at creation or rotation, and only its SHA-256 is stored, compared in constant
time. A slow password hash buys nothing for a random 256-bit secret, and would cost every request.

``KeyStore`` is synchronous (callers run it in a worker thread) and migrates its table on first use.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import hmac
import json
import re
import secrets
import threading
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, Literal

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Connection

from groupqwen.access.principal import SCOPES, Limits, Principal, Scope
from groupqwen.errors import InvalidRequest, NotFound
from groupqwen.telemetry import database
from groupqwen.telemetry.records import parse_window

KEY_PREFIX = "gq-"
DEFAULT_TENANT = "default"
_KEY = re.compile(r"^gq-([0-9a-f]{16})\.([A-Za-z0-9_-]{32,128})$")
_TENANT = re.compile(r"^[A-Za-z0-9_-][A-Za-z0-9._-]{0,63}$")  # a folder name: never "." or ".."
KeyStatus = Literal["active", "revoked", "expired"]

metadata = sa.MetaData()
migrations_table = database.migrations_table("groupqwen_access_migrations", metadata)
keys_table = sa.Table(
    "api_keys",
    metadata,
    sa.Column("key_id", sa.String(16), primary_key=True),
    sa.Column("secret_sha256", sa.String(64), nullable=False),
    sa.Column("name", sa.String(100), nullable=False),
    sa.Column("tenant", sa.String(64), nullable=False),
    sa.Column("scopes", sa.String(100), nullable=False),  # comma-separated
    sa.Column("models", sa.Text),  # a JSON list; NULL: every model
    sa.Column("requests_per_minute", sa.Integer),
    sa.Column("tokens_per_minute", sa.Integer),
    sa.Column("concurrent_requests", sa.Integer),
    sa.Column("created_at", sa.Float, nullable=False),
    sa.Column("expires_at", sa.Float),
    sa.Column("revoked_at", sa.Float),
    sa.Column("rotated_at", sa.Float),
)


def _v1(conn: Connection) -> None:
    keys_table.create(conn, checkfirst=True)


MIGRATIONS: tuple[database.Migration, ...] = ((1, _v1),)
_PG_MIGRATION_LOCK = 0x67715F6B6579  # pg_advisory_xact_lock key of the access tables


@dataclass(frozen=True)
class KeyRecord:
    """A key's row: everything but its secret."""

    key_id: str
    name: str
    tenant: str
    scopes: frozenset[Scope]
    models: frozenset[str] | None
    limits: Limits
    created_at: float
    expires_at: float | None
    revoked_at: float | None
    secret_sha256: str

    def status(self, now: float) -> KeyStatus:
        if self.revoked_at is not None:
            return "revoked"
        if self.expires_at is not None and now >= self.expires_at:
            return "expired"
        return "active"

    def opens_with(self, secret: str) -> bool:
        return hmac.compare_digest(self.secret_sha256, _sha256(self.key_id, secret))

    def principal(self) -> Principal:
        return Principal(self.key_id, self.name, self.tenant, self.scopes, self.models, self.limits)

    def public(self, now: float) -> dict[str, Any]:
        """What a listing shows (never the secret nor its hash)."""
        return {
            "id": self.key_id,
            "name": self.name,
            "tenant": self.tenant,
            "scopes": sorted(self.scopes),
            "models": sorted(self.models) if self.models is not None else None,
            "limits": {k: v for k, v in vars(self.limits).items() if v is not None},
            "created_at": self.created_at,
            "expires_at": self.expires_at,
            "revoked_at": self.revoked_at,
            "status": self.status(now),
        }


def _sha256(key_id: str, secret: str) -> str:
    return hashlib.sha256(f"{key_id}.{secret}".encode()).hexdigest()


def parse_key(token: str) -> tuple[str, str] | None:
    """``gq-<key_id>.<secret>`` → ``(key_id, secret)``; anything else → ``None``."""
    match = _KEY.match(token)
    return (match.group(1), match.group(2)) if match else None


def generate_key() -> str:
    """A fresh key (nothing stored): ``gq-`` + 16 hex digits + ``.`` + 43 URL-safe characters."""
    return f"{KEY_PREFIX}{secrets.token_hex(8)}.{secrets.token_urlsafe(32)}"


def key_id_of(token: str) -> str | None:
    """The public id of a well-formed key (what a log or an error message may show of it)."""
    parsed = parse_key(token)
    return parsed[0] if parsed else None


# -- checking what a key is created with (the CLI's and the API's input) --------------------------------


def check_scopes(names: Iterable[str]) -> frozenset[Scope]:
    chosen = {n.strip() for n in names if n.strip()}
    unknown = sorted(chosen - set(SCOPES))
    if unknown or not chosen:
        raise InvalidRequest(
            f"Invalid value for 'scopes': {', '.join(unknown) or 'none given'}; "
            f"choose from {', '.join(SCOPES)}",
            param="scopes",
        )
    return frozenset(s for s in SCOPES if s in chosen)


def check_tenant(tenant: str) -> str:
    if not _TENANT.match(tenant):
        raise InvalidRequest(
            f"Invalid value for 'tenant': {tenant!r}; 1-64 characters of [A-Za-z0-9._-], not starting "
            "with a dot",
            param="tenant",
        )
    return tenant


def check_name(name: str) -> str:
    if not name.strip() or len(name) > 100 or not name.isprintable():
        raise InvalidRequest("Invalid value for 'name': 1-100 printable characters", param="name")
    return name


def parse_expiry(text: str, now: float) -> float:
    """``30d``, ``12h``, ``90m`` from ``now``, or a date or time (``2027-01-31``, ``2027-01-31T12:00Z``;
    UTC unless it says otherwise) → epoch seconds, which must lie in the future."""
    text = text.strip()
    if re.fullmatch(r"\d+(\.\d+)?\s*[smhd]", text):
        return now + parse_window(text, maximum=100 * 365 * 86400.0, param="expires")
    try:
        moment = dt.datetime.fromisoformat(text)
    except ValueError:
        raise InvalidRequest(
            f"Invalid value for 'expires': {text!r} is neither a duration (30d, 12h) nor a date "
            "(2027-01-31, 2027-01-31T12:00:00Z)",
            param="expires",
        ) from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=dt.UTC)
    at = moment.timestamp()
    if at <= now:
        raise InvalidRequest(f"Invalid value for 'expires': {text!r} is in the past", param="expires")
    return at


def _limit(name: str, value: int | None) -> int | None:
    if value is not None and value < 1:
        raise InvalidRequest(f"Invalid value for '{name}': at least 1 (or leave it out)", param=name)
    return value


def check_limits(limits: Limits) -> Limits:
    for name, value in vars(limits).items():
        _limit(name, value)
    return limits


# -- the store -------------------------------------------------------------------------------------------


class KeyStore:
    def __init__(self, url: str, *, timeout: float = 5.0) -> None:
        self._engine = database.make_engine(url, timeout=timeout)
        self._sqlite = database.is_sqlite(self._engine)
        self._migrated = False
        self._lock = threading.Lock()

    def _ready(self) -> None:
        with self._lock:
            if not self._migrated:
                database.migrate(self._engine, migrations_table, MIGRATIONS, _PG_MIGRATION_LOCK)
                self._migrated = True

    def create(
        self,
        name: str,
        *,
        now: float,
        tenant: str = DEFAULT_TENANT,
        scopes: Iterable[str] = ("chat", "embeddings"),
        models: Iterable[str] | None = None,
        limits: Limits | None = None,
        expires_at: float | None = None,
        key: str | None = None,
    ) -> tuple[KeyRecord, str]:
        """A new key: its record and the key itself (shown once; only its hash is kept). ``key``: a key
        made beforehand (``generate_key``) instead of a fresh one."""
        key = key or generate_key()
        parsed = parse_key(key)
        if parsed is None:
            raise InvalidRequest("A key reads gq-<16 hex digits>.<32-128 URL-safe characters>", param="key")
        key_id, secret = parsed
        record = KeyRecord(
            key_id=key_id,
            name=check_name(name),
            tenant=check_tenant(tenant),
            scopes=check_scopes(scopes),
            models=frozenset(models) if models is not None else None,
            limits=check_limits(limits or Limits()),
            created_at=now,
            expires_at=expires_at,
            revoked_at=None,
            secret_sha256=_sha256(key_id, secret),
        )
        self._ready()
        dialect = sqlite if self._sqlite else postgresql
        with self._engine.begin() as conn:
            inserted = conn.execute(
                dialect.insert(keys_table)
                .values(**_row(record))
                .on_conflict_do_nothing(index_elements=["key_id"])
            ).rowcount
        if not inserted:
            raise InvalidRequest(f"A key with the id {key_id} exists already", param="key")
        return record, key

    def get(self, key_id: str) -> KeyRecord | None:
        self._ready()
        with self._engine.connect() as conn:
            row = conn.execute(sa.select(keys_table).where(keys_table.c.key_id == key_id)).first()
        return _record(row._asdict()) if row is not None else None

    def list(self, tenant: str | None = None) -> list[KeyRecord]:
        """Every key (of ``tenant``), oldest first."""
        self._ready()
        statement = sa.select(keys_table).order_by(keys_table.c.created_at, keys_table.c.key_id)
        if tenant is not None:
            statement = statement.where(keys_table.c.tenant == tenant)
        with self._engine.connect() as conn:
            return [_record(row._asdict()) for row in conn.execute(statement)]

    def _existing(self, key_id: str) -> KeyRecord:
        record = self.get(key_id.removeprefix(KEY_PREFIX))
        if record is None:
            raise NotFound(f"There is no key {key_id!r}", param="key_id")
        return record

    def revoke(self, key_id: str, *, now: float) -> KeyRecord:
        """Revoke the key (for good; a revoked key stays listed). Revoking it again changes nothing."""
        record = self._existing(key_id)
        if record.revoked_at is None:
            with self._engine.begin() as conn:
                conn.execute(
                    keys_table.update().where(keys_table.c.key_id == record.key_id).values(revoked_at=now)
                )
        return self._existing(record.key_id)

    def rotate(self, key_id: str, *, now: float) -> tuple[KeyRecord, str]:
        """A new secret for the key (same id, name, tenant, scopes, models, limits, expiry); the old one
        stops working. Returns the new key, shown once."""
        record = self._existing(key_id)
        if record.revoked_at is not None:
            raise InvalidRequest(f"The key {record.key_id} is revoked: create a new one", param="key_id")
        secret = secrets.token_urlsafe(32)
        with self._engine.begin() as conn:
            conn.execute(
                keys_table.update()
                .where(keys_table.c.key_id == record.key_id)
                .values(secret_sha256=_sha256(record.key_id, secret), rotated_at=now)
            )
        return self._existing(record.key_id), f"{KEY_PREFIX}{record.key_id}.{secret}"

    def ensure(self, key: str, name: str, *, now: float) -> KeyRecord:
        """The bootstrap key: created with every scope in the default tenant if its id is new; given
        ``key``'s secret if it changed. A key revoked by hand stays revoked."""
        parsed = parse_key(key)
        if parsed is None:
            raise InvalidRequest(
                "The bootstrap admin key must read gq-<16 hex digits>.<32-128 URL-safe characters>: "
                "make one with `groupqwen keys generate`",
                param="auth.bootstrap_admin_key",
            )
        key_id, secret = parsed
        existing = self.get(key_id)
        if existing is None:
            try:
                return self.create(name, now=now, scopes=SCOPES, key=key)[0]
            except InvalidRequest:  # another replica created it meanwhile
                existing = self._existing(key_id)
        if not existing.opens_with(secret):
            with self._engine.begin() as conn:
                conn.execute(
                    keys_table.update()
                    .where(keys_table.c.key_id == key_id)
                    .values(secret_sha256=_sha256(key_id, secret), rotated_at=now)
                )
        return self._existing(key_id)

    def close(self) -> None:
        self._engine.dispose()


def _row(record: KeyRecord) -> dict[str, Any]:
    return {
        "key_id": record.key_id,
        "secret_sha256": record.secret_sha256,
        "name": record.name,
        "tenant": record.tenant,
        "scopes": ",".join(sorted(record.scopes)),
        "models": json.dumps(sorted(record.models)) if record.models is not None else None,
        "requests_per_minute": record.limits.requests_per_minute,
        "tokens_per_minute": record.limits.tokens_per_minute,
        "concurrent_requests": record.limits.concurrent_requests,
        "created_at": record.created_at,
        "expires_at": record.expires_at,
        "revoked_at": record.revoked_at,
    }


def _record(row: dict[str, Any]) -> KeyRecord:
    return KeyRecord(
        key_id=row["key_id"],
        name=row["name"],
        tenant=row["tenant"],
        scopes=frozenset(s for s in SCOPES if s in row["scopes"].split(",")),
        models=frozenset(json.loads(row["models"])) if row["models"] is not None else None,
        limits=Limits(row["requests_per_minute"], row["tokens_per_minute"], row["concurrent_requests"]),
        created_at=row["created_at"],
        expires_at=row["expires_at"],
        revoked_at=row["revoked_at"],
        secret_sha256=row["secret_sha256"],
    )
