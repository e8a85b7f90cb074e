"""The jobs' store on SQLite and the suite's PostgreSQL: a database made before files and jobs had a
tenant gains the column, its rows become the gateway's own, and lookups by tenant see only that tenant's."""

from __future__ import annotations

from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import sqlalchemy as sa
from servers import PostgresServer

from groupqwen.errors import InUse, NotFound
from groupqwen.finetune import jobs
from groupqwen.finetune.jobs import JobStore, StoredFile
from groupqwen.telemetry import database
from groupqwen.telemetry.database import engine_url

HYPER = {"epochs": 1, "batch_size": 1, "seed": 0}


@pytest.fixture(params=["sqlite", "postgresql"])
def url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'gateway.db'}"
        return
    postgres: PostgresServer = request.getfixturevalue("postgres")
    if not postgres.is_running():
        postgres.start()
    engine = sa.create_engine(engine_url(postgres.url))
    tables = ", ".join(t.name for t in jobs.metadata.sorted_tables)
    with engine.begin() as conn:
        conn.execute(sa.text(f"DROP TABLE IF EXISTS {tables}"))
    engine.dispose()
    yield postgres.url


def _step_1_database(url: str) -> None:
    """The tables as migration step 1 made them (no ``tenant``), with a file and a job in them."""
    old = sa.MetaData()
    tables = {
        table.name: sa.Table(
            table.name,
            old,
            *(
                sa.Column(c.name, c.type, primary_key=c.primary_key, nullable=c.nullable)
                for c in table.columns
                if c.name != "tenant"
            ),
        )
        for table in (jobs.files_table, jobs.jobs_table, jobs.events_table)
    }
    migrations = database.migrations_table(jobs.migrations_table.name, old)
    engine = sa.create_engine(engine_url(url))
    with engine.begin() as conn:
        old.create_all(conn)
        conn.execute(migrations.insert().values(version=1, applied_at=0.0))
        conn.execute(
            tables["finetune_files"]
            .insert()
            .values(id="file-old", filename="t.jsonl", purpose="fine-tune", bytes=1, path="/x", created_at=1)
        )
        conn.execute(
            tables["finetune_jobs"].insert().values(
                id="ftjob-old", model="m", suffix="s", training_file="file-old", hyperparameters="{}",
                status="succeeded", cancel_requested=False, created_at=1,
            )
        )  # fmt: skip
    engine.dispose()


def test_a_database_from_before_tenants_gains_them(url: str, tmp_path: Path) -> None:
    _step_1_database(url)
    store = JobStore(url)
    try:
        assert store.job("ftjob-old").tenant == "" and store.file("file-old").tenant == ""
        store.add_file(StoredFile("file-acme", "a.jsonl", "fine-tune", 1, tmp_path / "a", 2, "acme"))
        store.create(
            id="ftjob-acme", model="m", suffix="s", training_file="file-acme", validation_file=None,
            hyperparameters=HYPER, tenant="acme",
        )  # fmt: skip
        assert [j.id for j in store.jobs()] == ["ftjob-acme", "ftjob-old"]  # the gateway's own: all
        assert [j.id for j in store.jobs(tenant="acme")] == ["ftjob-acme"]
        assert [j.id for j in store.jobs(tenant="")] == ["ftjob-old"]
        assert store.job("ftjob-acme", "acme").tenant == "acme"
        with pytest.raises(NotFound):
            store.job("ftjob-old", "acme")
        with pytest.raises(NotFound):
            store.file("file-acme", "rival")
        assert store.file("file-acme", "acme").path == tmp_path / "a"
    finally:
        store.close()


def test_first_calls_from_many_threads_migrate_once(tmp_path: Path) -> None:
    """The gateway's first requests and the runner's start reach a new store together: one migrates."""
    store = JobStore(f"sqlite:///{tmp_path / 'gateway.db'}")
    try:
        with ThreadPoolExecutor(8) as pool:
            counts = list(pool.map(lambda _: store.queued(), range(8)))
        assert counts == [0] * 8
    finally:
        store.close()


def test_a_job_cancelled_before_its_worker_starts_is_not_started(url: str) -> None:
    """The runner picks a queued job and starts its worker; a cancel in between marks it cancelled, and the
    worker must not then mark it running (it did, and trained a cancelled job)."""
    store = JobStore(url)
    for job_id in ("ftjob-go", "ftjob-stop"):
        store.create(id=job_id, model="m", suffix="s", training_file="file-x", hyperparameters=HYPER)
    store.update("ftjob-stop", cancel_requested=True)
    store.update("ftjob-stop", status="cancelled")
    assert store.start("ftjob-go") is True
    assert store.start("ftjob-go") is False  # already running: taken once
    assert store.start("ftjob-stop") is False
    assert (store.job("ftjob-go").status, store.job("ftjob-stop").status) == ("running", "cancelled")
    store.close()


def test_files_are_listed_in_order_and_kept_while_a_job_needs_them(url: str, tmp_path: Path) -> None:
    """Newest first or oldest first, with ties in creation time broken by id, ``after`` continuing either
    order, ``purpose`` and tenant filters; a file a queued or running job names (training or validation) is
    not deleted, and the refusal names the job."""
    store = JobStore(url)
    try:
        made = [
            ("file-a", 10, "acme"),
            ("file-c", 20, "acme"),
            ("file-b", 20, "acme"),
            ("file-r", 30, "rival"),
        ]
        for file_id, created, tenant in made:
            store.add_file(
                StoredFile(file_id, "t.jsonl", "fine-tune", 1, tmp_path / file_id, created, tenant)
            )

        def ids(**kw: object) -> list[str]:
            return [f.id for f in store.files(**kw)]  # type: ignore[arg-type]

        assert ids() == ["file-r", "file-c", "file-b", "file-a"]
        assert ids(ascending=True) == ["file-a", "file-b", "file-c", "file-r"]
        assert ids(tenant="acme", after="file-c") == ["file-b", "file-a"]
        assert ids(tenant="acme", after="file-b", ascending=True) == ["file-c"]
        assert ids(tenant="acme", limit=2) == ["file-c", "file-b"]
        assert ids(purpose="batch") == []
        with pytest.raises(NotFound):
            store.files("acme", after="file-r")  # another tenant's file is no place in a list

        store.create(
            id="ftjob-1", model="m", suffix="s", training_file="file-a", validation_file="file-b",
            hyperparameters=HYPER, tenant="acme",
        )  # fmt: skip
        store.update("ftjob-1", status="running")
        for file_id in ("file-a", "file-b"):
            with pytest.raises(InUse, match="'ftjob-1' \\(running\\)"):
                store.delete_file(file_id, "acme")
        with pytest.raises(NotFound):
            store.delete_file("file-c", "rival")
        assert store.delete_file("file-c", "acme").id == "file-c"
        store.update("ftjob-1", status="failed")
        assert store.delete_file("file-a").id == "file-a"  # the gateway's own keys: any tenant's
        assert ids() == ["file-r", "file-b"]
    finally:
        store.close()
