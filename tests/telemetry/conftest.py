"""Fixtures for telemetry tests: the suite's real PostgreSQL emptied of telemetry tables, a real
Redis-protocol server (valkey), and apps on the fake backend."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from servers import PostgresServer, ValkeyServer


@pytest.fixture
def pg_url(postgres: PostgresServer) -> Iterator[str]:
    """The test database, emptied of telemetry tables before each test (and the server running)."""
    if not postgres.is_running():
        postgres.start()
    import sqlalchemy as sa

    from groupqwen.telemetry.database import engine_url

    engine = sa.create_engine(engine_url(postgres.url))
    with engine.begin() as conn:
        conn.execute(sa.text("DROP TABLE IF EXISTS request_records, groupqwen_migrations"))
    engine.dispose()
    yield postgres.url


@pytest.fixture
def redis_server(tmp_path: Path) -> Iterator[ValkeyServer]:
    server = ValkeyServer(tmp_path)
    server.start()
    try:
        yield server
    finally:
        server.stop()


def wait_until(condition: Any, within: float = 10.0, what: str = "condition") -> None:
    deadline = time.monotonic() + within
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.02)


def gateway(
    tmp_path: Path, backends: dict[str, Any], *, persist: bool = True, clock: Any = None, **settings: Any
) -> Any:
    """Services with one fake model per entry of ``backends`` (``FakeBackend`` objects), persisting to
    ``telemetry.database_url`` (default: SQLite in ``tmp_path``) with fast writer timings; ``clock``: the
    pool's."""
    from groupqwen.telemetry.service import Telemetry
    from groupqwen.testing import fake_services, fake_settings

    settings["telemetry"] = {"health_timeout_s": 1.0, **settings.get("telemetry", {})}
    config = fake_settings(tmp_path, list(backends), max_queue=8, **settings)
    telemetry = (
        Telemetry.from_settings(config, flush_interval=0.05, max_backoff=0.2) if persist else Telemetry()
    )
    return fake_services(config, backends, telemetry=telemetry, **({"clock": clock} if clock else {}))


@pytest.fixture(params=["sqlite", "postgresql"])
def store_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A telemetry database of each kind: SQLite in a folder that does not exist yet, and the suite's
    PostgreSQL."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'sub' / 'telemetry.db'}"
    url: str = request.getfixturevalue("pg_url")
    return url
