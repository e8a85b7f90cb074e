"""A record the database cannot take never holds back the others: text that cannot be encoded is written
escaped, anything else the store refuses is dropped and counted, and writes that keep failing while the
database answers its ping show in health. Real SQLite and the suite's real PostgreSQL."""

from __future__ import annotations

from pathlib import Path

import sqlalchemy as sa
from waiting import until

from groupqwen.telemetry.database import engine_url
from groupqwen.telemetry.service import Telemetry
from groupqwen.telemetry.store import SqlStore, records_table
from groupqwen.telemetry.writer import BufferedWriter
from groupqwen.testing import fake_settings

from .test_persistence import record


def _stored(url: str) -> dict[str, str]:
    fresh = SqlStore(url)
    try:
        return {r.id: r.tenant for r in fresh.query(0, 2e9)}
    finally:
        fresh.close()


async def test_unencodable_text_is_written_escaped_and_blocks_nothing(store_url: str) -> None:
    writer = BufferedWriter(SqlStore(store_url), batch_size=10, flush_interval=0.01, max_backoff=0.05)
    odd = {
        1: "user:\ud800lone",  # a lone surrogate: not encodable as UTF-8
        2: "user:nul\x00byte",  # PostgreSQL text cannot hold NUL
        3: "user:" + "x" * 300,  # longer than the column
        5: "user:José 日本",  # not ASCII, yet storable as it is
    }
    for i in range(6):
        writer.submit(record(i, tenant=odd.get(i, "user:alice")))
    assert await writer.flush(30), (writer.counters(), writer.last_error)
    assert (writer.written, writer.dropped, writer.pending) == (6, 0, 0)
    for i in range(6, 9):  # later records are not queued behind anything
        writer.submit(record(i))
    assert await writer.flush(30)
    await writer.close()
    stored = _stored(store_url)
    assert len(stored) == 9
    assert stored["r0001"] == "user:\\ud800lone"
    assert stored["r0002"] == "user:nul\\x00byte"
    assert stored["r0003"] == ("user:" + "x" * 300)[: records_table.c.tenant.type.length]
    assert stored["r0005"] == "user:José 日本"
    assert stored["r0000"] == stored["r0004"] == "user:alice"


async def test_a_record_the_store_refuses_is_dropped_and_counted(store_url: str) -> None:
    writer = BufferedWriter(SqlStore(store_url), batch_size=10, flush_interval=0.01, max_backoff=0.05)
    for i in range(5):
        writer.submit(record(i, prompt_tokens=2**70 if i == 2 else i))  # no INTEGER column takes it
    assert await writer.flush(30), (writer.counters(), writer.last_error)
    assert (writer.written, writer.dropped, writer.rejected, writer.pending) == (4, 1, 1, 0)
    assert writer.submitted == writer.written + writer.pending + writer.dropped
    assert writer.last_rejected is not None and writer.last_error is None
    writer.submit(record(7))
    assert await writer.flush(30)
    await writer.close()
    assert sorted(_stored(store_url)) == ["r0000", "r0001", "r0003", "r0004", "r0007"]


async def test_writes_failing_while_the_database_answers_show_in_health(
    store_url: str, tmp_path: Path
) -> None:
    settings = fake_settings(tmp_path, telemetry={"database_url": store_url, "health_timeout_s": 5})
    telemetry = Telemetry.from_settings(settings, flush_interval=0.01, max_backoff=0.05)
    writer = telemetry.writer
    assert writer is not None
    writer.submit(record(0))
    assert await writer.flush(30)
    engine = sa.create_engine(engine_url(store_url))
    try:
        records_table.drop(engine)  # the database answers SELECT 1, but no insert can succeed
        writer.submit(record(1))
        await until(lambda: writer.last_error is not None, within_s=30)
        report = await telemetry.health.run()
        database = report["checks"]["database"]
        assert report["status"] == "degraded" and database["status"] == "degraded", report
        assert "writes failing" in database["reason"] and "request_records" in database["reason"]
        assert database["pending"] == 1 and database["dropped"] == 0  # kept, not dropped: it may recover

        records_table.create(engine)
        assert await writer.flush(30)
        report = await telemetry.health.run()
        assert report["checks"]["database"]["status"] == "ok", report
    finally:
        engine.dispose()
        await telemetry.close()
