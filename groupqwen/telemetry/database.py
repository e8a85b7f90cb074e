"""The gateway's database (``telemetry.database_url``: SQLite under ``data_dir`` by default, or PostgreSQL):
how to connect to it and how a component migrates its tables there. Request records
(``telemetry/store.py``) and API keys (``access/keys.py``) live in it, so replicas pointed at one
PostgreSQL share both."""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine

from groupqwen.config import Settings

Migration = tuple[int, Callable[[Connection], None]]


def database_url(settings: Settings) -> str:
    return settings.telemetry.database_url or f"sqlite:///{settings.data_dir / 'telemetry.db'}"


def engine_url(url: str) -> str:
    """``postgresql://`` and ``postgres://`` use psycopg 3; anything else is passed through."""
    for prefix in ("postgresql://", "postgres://"):
        if url.startswith(prefix):
            return "postgresql+psycopg://" + url.removeprefix(prefix)
    return url


def is_sqlite(engine: Engine) -> bool:
    return engine.dialect.name == "sqlite"


def make_engine(url: str, *, timeout: float = 5.0) -> Engine:
    """An engine whose every wait (connecting, a statement, a lock, a pooled connection) ends after about
    ``timeout`` seconds; a SQLite file's folder is created."""
    url = engine_url(url)
    kwargs: dict[str, Any]
    if url.startswith("sqlite"):
        database = sa.engine.make_url(url).database
        if database and database != ":memory:":
            Path(database).expanduser().parent.mkdir(parents=True, exist_ok=True)
        kwargs = {"connect_args": {"timeout": timeout, "check_same_thread": False}}
    else:
        statement_ms = int(timeout * 1000)
        kwargs = {
            "connect_args": {
                "connect_timeout": max(1, int(timeout)),
                "options": f"-c statement_timeout={statement_ms} -c lock_timeout={statement_ms}",
            },
            "pool_pre_ping": True,
            "pool_size": 2,
            "max_overflow": 2,
            "pool_timeout": timeout,
        }
    return sa.create_engine(url, **kwargs)


def migrations_table(name: str, metadata: sa.MetaData) -> sa.Table:
    """A component's table of applied migrations (one per component: each migrates on its own)."""
    return sa.Table(
        name,
        metadata,
        sa.Column("version", sa.Integer, primary_key=True),
        sa.Column("applied_at", sa.Float, nullable=False),
    )


def migrate(engine: Engine, table: sa.Table, steps: Sequence[Migration], lock_key: int) -> int:
    """Apply the ``steps`` (ordered, append-only ``(version, step)``) that ``table`` does not list yet, in
    one transaction, so that processes starting together (replicas, ``serve --workers``) migrate one at a
    time: on PostgreSQL under the advisory lock ``lock_key``; on SQLite under the file's write lock, taken
    first (``BEGIN IMMEDIATE``: Python's sqlite3 would run the DDL outside any transaction, and a second
    process then found a table created by the first before its version was recorded). Returns the schema
    version."""
    with engine.begin() as conn:
        if is_sqlite(engine):
            conn.exec_driver_sql("BEGIN IMMEDIATE")
        else:
            conn.execute(sa.text("SELECT pg_advisory_xact_lock(:key)"), {"key": lock_key})
        table.create(conn, checkfirst=True)
        done: int = conn.execute(sa.select(sa.func.max(table.c.version))).scalar() or 0
        for version, step in steps:
            if version > done:
                step(conn)
                conn.execute(table.insert().values(version=version, applied_at=time.time()))
                done = version
    return done
