"""Where request records persist: SQLite (the default) or PostgreSQL, through SQLAlchemy Core.

``SqlStore`` is synchronous (the writer calls it from a worker thread) and migrates its schema on first
use, so a database that is down at start-up is simply retried. Inserts are idempotent on the record's
``id``: a batch retried after a timeout never duplicates rows. ``MemoryStore`` is the shipped fake.

Text is made storable on the way in (a lone surrogate or a NUL escaped as ``\\ud800`` / ``\\x00``, cut to
its column's length), so odd text from any path is written, not refused. What the database still refuses
for the records' own sake (a number out of range, a constraint) is raised as ``RecordRejected``, distinct
from the database being unreachable or broken, so the writer can set those records aside and go on.
"""

from __future__ import annotations

import operator
import sys
import threading
from collections.abc import Sequence
from typing import Any, Protocol

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Connection, Engine

from groupqwen.errors import TelemetryUnavailable
from groupqwen.telemetry import database
from groupqwen.telemetry.records import RequestRecord


class RecordRejected(Exception):
    """The records themselves cannot be stored (their values, not the database, are at fault): retrying
    the same records can never succeed."""


class RecordStore(Protocol):
    """The persistence seam: every method may block (callers run it in a thread) and may raise."""

    name: str

    def write(self, records: Sequence[RequestRecord]) -> None:
        """Insert ``records`` (idempotent on ``id``); ``RecordRejected`` when their values are at fault."""
        ...

    def query(self, since: float, until: float, limit: int = 100_000) -> list[RequestRecord]:
        """Records that started in ``[since, until]``, oldest first; ``TelemetryUnavailable`` when the
        database cannot be read (a client asked for them: this is what it sees)."""
        ...

    def prune(self, before: float) -> int: ...

    def ping(self) -> None: ...

    def close(self) -> None: ...


metadata = sa.MetaData()
migrations_table = database.migrations_table("groupqwen_migrations", metadata)
records_table = sa.Table(
    "request_records",
    metadata,
    sa.Column("id", sa.String(32), primary_key=True),
    sa.Column("request_id", sa.String(128), nullable=False),
    sa.Column("started_at", sa.Float, nullable=False, index=True),
    sa.Column("tenant", sa.String(96), nullable=False),
    sa.Column("model", sa.String(200), nullable=False),
    sa.Column("route", sa.String(64), nullable=False),
    sa.Column("stream", sa.Boolean, nullable=False),
    sa.Column("escalations", sa.Integer, nullable=False),
    sa.Column("cache", sa.String(16), nullable=False),
    sa.Column("status", sa.Integer, nullable=False),
    sa.Column("error", sa.String(64)),
    sa.Column("queue_wait_s", sa.Float),
    sa.Column("ttft_s", sa.Float),
    sa.Column("latency_s", sa.Float, nullable=False),
    sa.Column("prompt_tokens", sa.Integer, nullable=False),
    sa.Column("completion_tokens", sa.Integer, nullable=False),
    sa.Column("tokens_per_s", sa.Float),
    sa.Column("transport", sa.String(8), nullable=False, server_default="http"),
)


def _v1(conn: Connection) -> None:
    records_table.create(conn, checkfirst=True)  # a new database gets the later steps' columns here


def _v2(conn: Connection) -> None:
    """``transport``: http or ws (a WebSocket generation); the records before it were all http."""
    if "transport" not in {column["name"] for column in sa.inspect(conn).get_columns(records_table.name)}:
        conn.execute(
            sa.text("ALTER TABLE request_records ADD COLUMN transport VARCHAR(8) NOT NULL DEFAULT 'http'")
        )


# Ordered, append-only: (version, step). A new column is a new step (``ALTER TABLE …``), never an edit.
MIGRATIONS: tuple[database.Migration, ...] = ((1, _v1), (2, _v2))
_PG_MIGRATION_LOCK = 0x67715F7465  # pg_advisory_xact_lock key: replicas migrate one at a time


class SqlStore:
    def __init__(self, url: str, *, timeout: float = 5.0) -> None:
        self._engine: Engine = database.make_engine(url, timeout=timeout)
        self._sqlite = database.is_sqlite(self._engine)
        self.name = "sqlite" if self._sqlite else "postgresql"
        self._migrated = False
        self._lock = threading.Lock()
        # the insert compiled once, run through the driver: SQLAlchemy's ``execute`` compiles and processes
        # every row's parameters again (16 µs a record on SQLite, against 9 µs: docs/benchmarks.md)
        dialect = sqlite if self._sqlite else postgresql
        statement = dialect.insert(records_table).on_conflict_do_nothing(index_elements=["id"])
        compiled = statement.compile(dialect=self._engine.dialect)
        self._insert = str(compiled)
        self._positional = compiled.positiontup is not None
        if self._positional and tuple(compiled.positiontup or ()) != _NAMES:
            raise RuntimeError("telemetry/store.py: the insert's parameters are not in the columns' order")

    def migrate(self) -> int:
        """Apply the migrations this database lacks; return the schema version."""
        with self._lock:
            done = database.migrate(self._engine, migrations_table, MIGRATIONS, _PG_MIGRATION_LOCK)
            self._migrated = True
            return done

    def _ready(self) -> None:
        if not self._migrated:
            try:
                self.migrate()
            except sa.exc.DBAPIError:
                self._dispose_on_error()
                raise

    def _dispose_on_error(self) -> None:
        # a restarted server leaves dead pooled connections: start over with fresh ones
        self._engine.dispose()

    def write(self, records: Sequence[RequestRecord]) -> None:
        if not records:
            return
        self._ready()
        rows = [_row(r) for r in records]
        params = rows if self._positional else [dict(zip(_NAMES, row, strict=True)) for row in rows]
        try:
            with self._engine.begin() as conn:
                conn.exec_driver_sql(self._insert, params)
        except (sa.exc.DataError, sa.exc.IntegrityError) as exc:  # the values, as the database judged them
            raise RecordRejected(_first_line(exc)) from exc
        except sa.exc.DBAPIError:
            self._dispose_on_error()
            raise
        except sa.exc.StatementError as exc:  # a value the driver could not bind (not a DBAPI error)
            raise RecordRejected(_first_line(exc)) from exc
        except (ValueError, TypeError, ArithmeticError) as exc:  # sqlite3 binds in the driver: an int too big
            raise RecordRejected(_first_line(exc)) from exc

    def query(self, since: float, until: float, limit: int = 100_000) -> list[RequestRecord]:
        """Records that started in ``[since, until]``, oldest first; ``TelemetryUnavailable`` when the
        database is down, unreachable or too slow."""
        t = records_table
        statement = (
            sa.select(t).where(t.c.started_at >= since, t.c.started_at <= until).order_by(t.c.started_at)
        ).limit(limit)
        try:
            self._ready()
            with self._engine.connect() as conn:
                return [RequestRecord(**row._asdict()) for row in conn.execute(statement)]
        except sa.exc.DBAPIError as exc:
            self._dispose_on_error()
            raise self._unavailable(exc) from None
        except sa.exc.TimeoutError as exc:  # no pooled connection came free in time
            raise self._unavailable(exc) from None

    def _unavailable(self, exc: Exception) -> TelemetryUnavailable:
        # an expected outage, not a bug: the reason in the message, no traceback in the logs
        reason = (str(getattr(exc, "orig", None) or exc).strip().splitlines() or [type(exc).__name__])[0]
        return TelemetryUnavailable(
            f"The telemetry database ({self.name}) cannot be read: {reason[:300]}; "
            "the summary from memory (source=memory) still answers"
        )

    def prune(self, before: float) -> int:
        """Delete records that started before ``before``; return how many."""
        self._ready()
        with self._engine.begin() as conn:
            return conn.execute(records_table.delete().where(records_table.c.started_at < before)).rowcount

    def ping(self) -> None:
        try:
            with self._engine.connect() as conn:
                conn.execute(sa.text("SELECT 1"))
        except sa.exc.DBAPIError:
            self._dispose_on_error()
            raise

    def close(self) -> None:
        self._engine.dispose()


def _first_line(exc: BaseException) -> str:
    return (f"{type(exc).__name__}: {exc}".splitlines() or [type(exc).__name__])[0][:300]


def storable_text(value: str, length: int | None = None) -> str:
    """``value`` as any database takes it: what UTF-8 cannot encode (a lone surrogate) and NUL (which
    PostgreSQL's text refuses) escaped with backslashes, and cut to ``length`` characters."""
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        value = value.encode("utf-8", "backslashreplace").decode("utf-8")
    if "\x00" in value:
        value = value.replace("\x00", "\\x00")
    return value if length is None else value[:length]


_NAMES = tuple(c.name for c in records_table.columns)
_VALUES = operator.attrgetter(*_NAMES)
# the text columns: their place in a row and their length (any: ``sys.maxsize``)
_TEXT = tuple(
    (i, c.type.length or sys.maxsize)
    for i, c in enumerate(records_table.columns)
    if isinstance(c.type, sa.String)
)


def _row(record: RequestRecord) -> tuple[Any, ...]:
    """``record``'s values in the columns' order, its text made storable: as it is when every text is ASCII
    without a NUL and fits its column (nearly every record: checked in C, without a call a column)."""
    row = _VALUES(record)
    for i, length in _TEXT:
        text = row[i]
        if text is not None and not (text.isascii() and "\x00" not in text and len(text) <= length):
            return _storable(row)
    return row


def _storable(row: tuple[Any, ...]) -> tuple[Any, ...]:
    out = list(row)
    for i, length in _TEXT:
        if isinstance(out[i], str):
            out[i] = storable_text(out[i], length)
    return tuple(out)


class MemoryStore:
    """The shipped fake: a list, with ``down`` to simulate an unreachable database."""

    name = "memory"

    def __init__(self) -> None:
        self.records: dict[str, RequestRecord] = {}
        self.down = False

    def _check(self) -> None:
        if self.down:
            raise ConnectionError("memory store is down")

    def write(self, records: Sequence[RequestRecord]) -> None:
        self._check()
        for r in records:
            self.records.setdefault(r.id, r)

    def query(self, since: float, until: float, limit: int = 100_000) -> list[RequestRecord]:
        if self.down:
            raise TelemetryUnavailable("The telemetry database (memory) cannot be read: it is down")
        found = sorted(
            (r for r in self.records.values() if since <= r.started_at <= until), key=lambda r: r.started_at
        )
        return found[:limit]

    def prune(self, before: float) -> int:
        self._check()
        old = [k for k, r in self.records.items() if r.started_at < before]
        for k in old:
            del self.records[k]
        return len(old)

    def ping(self) -> None:
        self._check()

    def close(self) -> None:
        return None
