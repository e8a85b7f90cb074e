"""Fixtures for the access tests: the key store on each kind of database (SQLite in a folder not made yet,
and the suite's real PostgreSQL), and gateways with ``auth: keys``."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from servers import PostgresServer

from groupqwen.access.keys import KeyStore
from groupqwen.api.services import Services
from groupqwen.testing import fake_services, fake_settings


@pytest.fixture
def pg_keys_url(postgres: PostgresServer) -> str:
    """The suite's PostgreSQL (running), emptied of the access tables."""
    if not postgres.is_running():
        postgres.start()
    import sqlalchemy as sa

    from groupqwen.telemetry.database import engine_url

    engine = sa.create_engine(engine_url(postgres.url))
    with engine.begin() as conn:
        conn.execute(sa.text("DROP TABLE IF EXISTS api_keys, groupqwen_access_migrations"))
    engine.dispose()
    return postgres.url


@pytest.fixture(params=["sqlite", "postgresql"])
def keys_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'sub' / 'gateway.db'}"
    url: str = request.getfixturevalue("pg_keys_url")
    return url


@pytest.fixture
def store(keys_url: str) -> Iterator[KeyStore]:
    store = KeyStore(keys_url)
    yield store
    store.close()


def keyed_services(tmp_path: Path, fakes: Any = ("fake",), **settings: Any) -> Services:
    """Fake models behind ``auth: keys``; keys and records in ``telemetry.database_url`` (default: SQLite
    under ``tmp_path``)."""
    settings["auth"] = {"mode": "keys", **settings.get("auth", {})}
    return fake_services(fake_settings(tmp_path, fakes, **settings))


def key_store(services: Services) -> KeyStore:
    store = services.access.store
    assert store is not None
    return store
