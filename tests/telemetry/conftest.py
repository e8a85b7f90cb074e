"""Fixtures for telemetry tests: a real PostgreSQL server (a throwaway cluster on loopback, started here and
stopped at the end), a real Redis-protocol server (valkey), and apps on the fake backend."""

from __future__ import annotations

import glob
import os
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from servers import ValkeyServer, free_port

PG_BIN_GLOB = "/usr/lib/postgresql/*/bin/initdb"


def _pg_bin() -> Path:
    found = sorted(glob.glob(PG_BIN_GLOB))
    if found:
        return Path(found[-1]).parent
    initdb = shutil.which("initdb")
    assert initdb, "PostgreSQL is not installed: run `make setup` (it installs Debian's postgresql)"
    return Path(initdb).parent


class PostgresServer:
    """A throwaway cluster owned by the ``postgres`` user when we are root (the server refuses root)."""

    def __init__(self, root: Path, port: int) -> None:
        self.bin = _pg_bin()
        self.root = root
        self.data = root / "data"
        self.port = port
        self.user = "postgres" if os.geteuid() == 0 else None
        self.url = f"postgresql://postgres@127.0.0.1:{port}/groupqwen_test"

    def _run(self, *args: str, timeout: float = 60) -> None:
        subprocess.run(
            [str(self.bin / args[0]), *args[1:]],
            check=True,
            capture_output=True,
            timeout=timeout,
            user=self.user,
            cwd=self.root,
        )

    def init(self) -> None:
        self._run("initdb", "-D", str(self.data), "-U", "postgres", "--auth=trust", "-E", "UTF8", "--no-sync")
        self.start()
        self._run("createdb", "-h", "127.0.0.1", "-p", str(self.port), "-U", "postgres", "groupqwen_test")

    def start(self) -> None:
        options = f"-p {self.port} -k {self.root} -c listen_addresses=127.0.0.1 -c fsync=off"
        self._run("pg_ctl", "-D", str(self.data), "-o", options, "-l", str(self.root / "log"), "-w", "start")

    def stop(self) -> None:
        self._run("pg_ctl", "-D", str(self.data), "-m", "fast", "-w", "stop")

    def is_running(self) -> bool:
        result = subprocess.run(
            [str(self.bin / "pg_ctl"), "-D", str(self.data), "status"], capture_output=True, user=self.user
        )
        return result.returncode == 0


@pytest.fixture(scope="session")
def postgres() -> Iterator[PostgresServer]:
    root = Path(tempfile.mkdtemp(prefix="groupqwen-pg-"))
    server = PostgresServer(root, free_port())
    if server.user is not None:
        shutil.chown(root, server.user)
    server.init()
    try:
        yield server
    finally:
        if server.is_running():
            server.stop()
        shutil.rmtree(root, ignore_errors=True)


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
