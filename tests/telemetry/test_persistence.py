"""Records persist on SQLite and on a real PostgreSQL server; a database that stops loses nothing that fits
the buffer, the dropped counter is exact, and health follows the database down and back up."""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from fastapi.testclient import TestClient

from groupqwen.api.app import create_app
from groupqwen.backends.fake import FakeBackend
from groupqwen.telemetry import database
from groupqwen.telemetry.records import RequestRecord
from groupqwen.telemetry.store import MIGRATIONS, SqlStore, migrations_table, records_table

from .conftest import PostgresServer, gateway, wait_until

URL = "/v1/chat/completions"
CHAT = {"model": "fake", "messages": [{"role": "user", "content": "hello there"}]}


def record(i: int, **changes: Any) -> RequestRecord:
    base: dict[str, Any] = dict(
        id=f"r{i:04d}",
        request_id=f"req-{i}",
        started_at=1_790_000_000.0 + i,
        tenant="user:alice",
        model="fake",
        route="explicit",
        stream=bool(i % 2),
        escalations=0,
        cache="bypass",
        status=200,
        error=None,
        queue_wait_s=0.001 * i,
        ttft_s=0.01 * i,
        latency_s=0.1 * i,
        prompt_tokens=i,
        completion_tokens=2 * i,
        tokens_per_s=None if i == 0 else 10.0 * i,
    )
    base.update(changes)
    return RequestRecord(**base)


def test_records_round_trip(store_url: str) -> None:
    store = SqlStore(store_url)
    try:
        assert store.migrate() == MIGRATIONS[-1][0]
        assert store.migrate() == MIGRATIONS[-1][0]  # idempotent
        records = [record(i) for i in range(5)] + [record(5, status=502, error="backend_error", ttft_s=None)]
        store.write(records)
        store.write(records[:3])  # a retried batch: no duplicates
        assert store.query(0, 2e9) == records
        assert store.query(records[2].started_at, records[3].started_at) == records[2:4]
        assert store.prune(records[2].started_at) == 2
        assert store.query(0, 2e9) == records[2:]
        store.ping()
    finally:
        store.close()


def test_a_database_from_before_transport_gains_it(store_url: str) -> None:
    """A database migrated by step 1 only (no ``transport`` column) with a record in it: step 2 adds the
    column, the old record reads as ``http``, and a WebSocket generation's record is stored as ``ws``."""
    engine = sa.create_engine(database.engine_url(store_url))
    if store_url.startswith("sqlite"):
        Path(sa.engine.make_url(store_url).database or "").parent.mkdir(parents=True, exist_ok=True)
    old = sa.Table(
        records_table.name,
        sa.MetaData(),
        *(
            sa.Column(c.name, c.type, primary_key=c.primary_key, nullable=c.nullable)
            for c in records_table.columns
            if c.name != "transport"
        ),
    )
    before = record(1)
    with engine.begin() as conn:
        old.create(conn)
        migrations_table.create(conn)
        conn.execute(migrations_table.insert().values(version=1, applied_at=0.0))
        row = {c.name: getattr(before, c.name) for c in old.columns}
        conn.execute(old.insert().values(**row))
    engine.dispose()
    store = SqlStore(store_url)
    try:
        assert store.migrate() == 2
        after = record(2, transport="ws")
        store.write([after])
        assert store.query(0, 2e9) == [before, after] and before.transport == "http"
    finally:
        store.close()


def test_stored_summary_equals_the_live_one(pg_url: str, tmp_path: Path) -> None:
    services = gateway(tmp_path, {"fake": FakeBackend()}, telemetry={"database_url": pg_url})
    with TestClient(create_app(services.settings, services)) as http:
        for i in range(6):
            http.post(URL, json={**CHAT, "stream": i % 2 == 0})
        http.post(URL, json={**CHAT, "model": "missing"})
        wait_until(lambda: services.telemetry.writer.written == 7, what="7 records written")
        live = http.get("/v1/metrics?window=1h").json()
        stored = http.get("/v1/metrics?window=1h&source=store").json()
    assert stored["source"] == "postgresql" and live["source"] == "memory"
    for key in ("requests", "errors", "status", "tokens", "cache", "by_model", "by_route", "latency_seconds"):
        assert stored[key] == live[key], key  # doubles round-trip exactly


def _status(http: TestClient) -> tuple[str, dict[str, Any]]:
    report = http.get("/v1/health").json()
    return report["status"], report["checks"]["database"]


def test_postgres_stopped_mid_run_loses_nothing_and_health_follows_it(
    postgres: PostgresServer, pg_url: str, tmp_path: Path
) -> None:
    services = gateway(tmp_path, {"fake": FakeBackend()}, telemetry={"database_url": pg_url})
    writer = services.telemetry.writer
    with TestClient(create_app(services.settings, services)) as http:
        for _ in range(4):
            assert http.post(URL, json=CHAT).status_code == 200
        wait_until(lambda: writer.written == 4, what="4 records written")
        assert _status(http)[0] == "ok", http.get("/v1/health").json()

        postgres.stop()
        for i in range(6):  # requests do not notice the database is down: their records wait in the buffer
            assert http.post(URL, json={**CHAT, "stream": i % 2 == 0}).status_code == 200
        status, database = _status(http)
        assert status == "degraded" and database["status"] == "down"
        assert "postgresql unreachable" in database["reason"]
        wait_until(lambda: writer.last_error is not None, what="a failed write")
        assert writer.pending == 6 and writer.dropped == 0

        postgres.start()
        wait_until(lambda: writer.pending == 0, what="the backlog written after the restart")
        status, database = _status(http)
        assert status == "ok" and database["written"] == 10 and database["last_error"] is None
    rows = services.telemetry.writer.store  # closed with the app; a fresh store reads the database
    fresh = SqlStore(pg_url)
    try:
        assert len(fresh.query(0, 2e9)) == 10
    finally:
        fresh.close()
    assert rows.name == "postgresql"


def test_stored_metrics_while_postgres_is_down_are_a_clear_503_not_a_crash(
    postgres: PostgresServer, pg_url: str, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    services = gateway(tmp_path, {"fake": FakeBackend()}, telemetry={"database_url": pg_url})
    with TestClient(create_app(services.settings, services)) as http:
        assert http.post(URL, json=CHAT).status_code == 200
        wait_until(lambda: services.telemetry.writer.written == 1, what="1 record written")
        assert http.get("/v1/metrics?window=1h&source=store").status_code == 200
        postgres.stop()
        try:
            assert _status(http)[0] == "degraded"
            caplog.clear()
            response = http.get("/v1/metrics?window=1h&source=store")
            assert response.status_code == 503, response.text
            error = response.json()["error"]
            assert error["type"] == "server_error" and error["code"] == "telemetry_unavailable"
            assert error["message"].startswith("The telemetry database (postgresql) cannot be read: ")
            assert "source=memory" in error["message"]
            # an outage, not a crash: no traceback logged
            assert not [r for r in caplog.records if r.exc_info], [r.getMessage() for r in caplog.records]
            assert http.get("/v1/metrics?window=1h").status_code == 200  # memory still answers
        finally:
            postgres.start()
        assert http.get("/v1/metrics?window=1h&source=store").status_code == 200  # and back


def test_dropped_counter_is_exact_when_the_buffer_overflows(
    postgres: PostgresServer, pg_url: str, tmp_path: Path
) -> None:
    services = gateway(
        tmp_path, {"fake": FakeBackend()}, telemetry={"database_url": pg_url, "buffer_records": 5}
    )
    writer = services.telemetry.writer
    with TestClient(create_app(services.settings, services)) as http:
        for _ in range(3):
            http.post(URL, json=CHAT)
        wait_until(lambda: writer.written == 3, what="3 records written")
        postgres.stop()
        for _ in range(12):
            assert http.post(URL, json=CHAT).status_code == 200
        assert (writer.pending, writer.dropped) == (5, 7)
        metrics = http.get("/metrics").text
        assert "groupqwen_telemetry_records_dropped_total 7.0" in metrics
        assert "groupqwen_telemetry_records_pending 5.0" in metrics
        assert http.get("/v1/metrics?window=1h").json()["telemetry"]["dropped"] == 7
        postgres.start()
        wait_until(lambda: writer.pending == 0, what="the buffer written after the restart")
        assert writer.submitted == writer.written + writer.dropped == 15
    fresh = SqlStore(pg_url)
    try:
        assert len(fresh.query(0, 2e9)) == 8  # 3 before + the 5 the buffer held
    finally:
        fresh.close()


def test_two_processes_migrating_one_sqlite_file_take_turns(tmp_path: Path) -> None:
    """Workers started together: while one is inside a migration step, another's migration waits for the
    file's write lock (here: gives up after its short timeout) instead of finding the step's table half
    made; once the first is done, the second finds everything applied."""
    url = f"sqlite:///{tmp_path / 'shared.db'}"
    made = sa.Table("made", sa.MetaData(), sa.Column("id", sa.Integer, primary_key=True))
    log = database.migrations_table("shared_migrations", sa.MetaData())
    second = database.make_engine(url, timeout=0.2)
    seen: list[str] = []

    def other() -> None:
        try:
            seen.append(f"migrated to {database.migrate(second, log, steps, 0)}")
        except sa.exc.OperationalError as exc:
            seen.append(str(exc.orig))

    def step(conn: sa.Connection) -> None:
        made.create(conn)
        waiting = threading.Thread(target=other)
        waiting.start()
        waiting.join()

    steps = [(1, step)]
    first = database.make_engine(url)
    try:
        assert database.migrate(first, log, steps, 0) == 1
        assert seen == ["database is locked"]
        assert (
            database.migrate(second, log, [(1, lambda conn: made.create(conn))], 0) == 1
        )  # applied: not rerun
        with first.connect() as conn:
            assert conn.execute(sa.select(log.c.version)).scalars().all() == [1]
    finally:
        first.dispose()
        second.dispose()
