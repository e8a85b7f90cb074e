"""Fine-tuning jobs and their files, kept in the gateway's database (``telemetry.database_url``: SQLite
under ``data_dir`` by default, or PostgreSQL; ``telemetry/database.py`` connects and migrates).

The gateway and the job's worker process both use this store: the gateway creates jobs, lists them and
asks for a cancel; the worker sets the status and appends events. Every method is synchronous and short
(callers in the event loop run it in a thread). Statuses follow OpenAI's: ``validating_files`` is skipped
(a file is checked when it is uploaded), ``queued`` → ``running`` → ``succeeded`` | ``failed`` |
``cancelled``; a job stopped by a gateway shutdown goes back to ``queued`` and resumes from its last
checkpoint.

Files and jobs belong to a tenant (``tenant``: the key's tenant, ``""`` for the gateway's own). The
lookups take the tenant that asks: ``None`` (the gateway's own keys) sees every row, a tenant only its own;
another tenant's file or job is "not found", as if it did not exist.
"""

from __future__ import annotations

import json
import secrets
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import sqlalchemy as sa

from groupqwen.config import Settings
from groupqwen.errors import InUse, NotFound
from groupqwen.telemetry import database

FINAL = ("succeeded", "failed", "cancelled")

metadata = sa.MetaData()
migrations_table = database.migrations_table("finetune_migrations", metadata)
files_table = sa.Table(
    "finetune_files",
    metadata,
    sa.Column("id", sa.String(40), primary_key=True),
    sa.Column("filename", sa.String(255), nullable=False),
    sa.Column("purpose", sa.String(32), nullable=False),
    sa.Column("bytes", sa.BigInteger, nullable=False),
    sa.Column("path", sa.String(1024), nullable=False),
    sa.Column("created_at", sa.Integer, nullable=False),
    sa.Column("tenant", sa.String(96), nullable=False, server_default="", index=True),
)
jobs_table = sa.Table(
    "finetune_jobs",
    metadata,
    sa.Column("id", sa.String(40), primary_key=True),
    sa.Column("model", sa.String(200), nullable=False),
    sa.Column("suffix", sa.String(64), nullable=False),
    sa.Column("training_file", sa.String(40), nullable=False),
    sa.Column("validation_file", sa.String(40)),
    sa.Column("hyperparameters", sa.Text, nullable=False),
    sa.Column("status", sa.String(24), nullable=False, index=True),
    sa.Column("cancel_requested", sa.Boolean, nullable=False, default=False),
    sa.Column("fine_tuned_model", sa.String(300)),
    sa.Column("error_code", sa.String(64)),
    sa.Column("error_message", sa.Text),
    sa.Column("trained_tokens", sa.Integer),
    sa.Column("created_at", sa.Integer, nullable=False),
    sa.Column("finished_at", sa.Integer),
    sa.Column("tenant", sa.String(96), nullable=False, server_default="", index=True),
)
events_table = sa.Table(
    "finetune_events",
    metadata,
    sa.Column("seq", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("job_id", sa.String(40), nullable=False, index=True),
    sa.Column("created_at", sa.Integer, nullable=False),
    sa.Column("level", sa.String(8), nullable=False),
    sa.Column("type", sa.String(16), nullable=False),
    sa.Column("message", sa.Text, nullable=False),
    sa.Column("data", sa.Text, nullable=False),
)


@dataclass(frozen=True)
class Job:
    id: str
    model: str
    suffix: str
    training_file: str
    validation_file: str | None
    hyperparameters: dict[str, Any]
    status: str
    cancel_requested: bool
    fine_tuned_model: str | None
    error_code: str | None
    error_message: str | None
    trained_tokens: int | None
    created_at: int
    finished_at: int | None
    tenant: str = ""


@dataclass(frozen=True)
class StoredFile:
    id: str
    filename: str
    purpose: str
    bytes: int
    path: Path
    created_at: int
    tenant: str = ""


def jobs_dir(settings: Settings) -> Path:
    """Where the jobs' run folders are."""
    return settings.data_dir / "finetune" / "jobs"


def job_dir(settings: Settings, job_id: str) -> Path:
    """A job's run folder: checkpoints, the adapter, the worker's output."""
    return jobs_dir(settings) / job_id


def new_id(prefix: str) -> str:
    return f"{prefix}-{secrets.token_hex(12)}"


def _v1(conn: sa.Connection) -> None:
    for table in (files_table, jobs_table, events_table):
        table.create(conn, checkfirst=True)  # a new database gets the later steps' columns here


def _v2(conn: sa.Connection) -> None:
    """``tenant`` on files and jobs; the rows before it were the gateway's own."""
    for table in (files_table, jobs_table):
        if "tenant" not in {column["name"] for column in sa.inspect(conn).get_columns(table.name)}:
            conn.execute(
                sa.text(f"ALTER TABLE {table.name} ADD COLUMN tenant VARCHAR(96) NOT NULL DEFAULT ''")
            )
            conn.execute(sa.text(f"CREATE INDEX ix_{table.name}_tenant ON {table.name} (tenant)"))


# Ordered, append-only: (version, step). A new column is a new step, never an edit.
MIGRATIONS: tuple[database.Migration, ...] = ((1, _v1), (2, _v2))
_PG_MIGRATION_LOCK = 0x67715F6674  # pg_advisory_xact_lock key: replicas migrate one at a time


class JobStore:
    """Synchronous (callers in the event loop run it in a thread); migrates its tables on first use, so a
    database that is down at start is simply retried."""

    def __init__(self, url: str, *, timeout: float = 10.0) -> None:
        self._engine = database.make_engine(url, timeout=timeout)
        self._migrated = False
        self._migrating = threading.Lock()  # the first calls come from several threads at once

    @property
    def engine(self) -> sa.Engine:
        if not self._migrated:
            with self._migrating:
                if not self._migrated:
                    database.migrate(self._engine, migrations_table, MIGRATIONS, _PG_MIGRATION_LOCK)
                    self._migrated = True
        return self._engine

    def close(self) -> None:
        self._engine.dispose()

    # -- files
    def add_file(self, stored: StoredFile) -> None:
        with self.engine.begin() as conn:
            conn.execute(files_table.insert().values(**{**stored.__dict__, "path": str(stored.path)}))

    def _row(self, table: sa.Table, row_id: str, tenant: str | None) -> sa.RowMapping | None:
        """The row ``row_id`` of ``table`` (only the tenant's when ``tenant`` is given)."""
        query = table.select().where(table.c.id == row_id)
        if tenant is not None:
            query = query.where(table.c.tenant == tenant)
        with self.engine.connect() as conn:
            return conn.execute(query).mappings().first()

    def file(self, file_id: str, tenant: str | None = None) -> StoredFile:
        row = self._row(files_table, file_id, tenant)
        if row is None:
            raise NotFound(f"No file {file_id!r}: upload it with POST /v1/files", param="file_id")
        return StoredFile(**{**row, "path": Path(row["path"])})

    def files(
        self,
        tenant: str | None = None,
        *,
        purpose: str | None = None,
        after: str | None = None,
        limit: int = 10_000,
        ascending: bool = False,
    ) -> list[StoredFile]:
        """Newest first (``ascending``: oldest first), ``purpose``'s only if given; ``after``: the files
        that come after that one in this order (a file the tenant cannot see is "not found")."""
        table = files_table
        keys = (table.c.created_at, table.c.id)
        query = table.select().order_by(*(k.asc() if ascending else k.desc() for k in keys))
        if tenant is not None:
            query = query.where(table.c.tenant == tenant)
        if purpose is not None:
            query = query.where(table.c.purpose == purpose)
        if after is not None:
            pivot = self.file(after, tenant)
            if ascending:
                later = sa.or_(
                    table.c.created_at > pivot.created_at,
                    sa.and_(table.c.created_at == pivot.created_at, table.c.id > pivot.id),
                )
            else:
                later = sa.or_(
                    table.c.created_at < pivot.created_at,
                    sa.and_(table.c.created_at == pivot.created_at, table.c.id < pivot.id),
                )
            query = query.where(later)
        with self.engine.connect() as conn:
            rows = conn.execute(query.limit(limit)).mappings().all()
        return [StoredFile(**{**row, "path": Path(row["path"])}) for row in rows]

    def delete_file(self, file_id: str, tenant: str | None = None) -> StoredFile:
        """Forget the file ``file_id`` (its bytes on disk are the caller's to remove), unless a queued or
        running job trains on it: then ``InUse`` naming the job, and nothing changes."""
        uses = sa.or_(jobs_table.c.training_file == file_id, jobs_table.c.validation_file == file_id)
        needed_by = (
            sa.select(jobs_table.c.id, jobs_table.c.status)
            .where(uses, jobs_table.c.status.not_in(FINAL))
            .order_by(jobs_table.c.created_at)
        )
        stored = self.file(file_id, tenant)
        with self.engine.begin() as conn:
            job = conn.execute(needed_by).first()
            if job is not None:
                raise InUse(
                    f"The file {file_id!r} is used by the fine-tuning job {job.id!r} ({job.status}): delete "
                    "it once the job has finished, or cancel the job first",
                    param="file_id",
                )
            conn.execute(files_table.delete().where(files_table.c.id == file_id))
        return stored

    # -- jobs
    def create(self, **values: Any) -> Job:
        values = {**values, "hyperparameters": json.dumps(values["hyperparameters"])}
        values.update(status="queued", cancel_requested=False, created_at=int(time.time()))
        with self.engine.begin() as conn:
            conn.execute(jobs_table.insert().values(**values))
        return self.job(values["id"])

    def job(self, job_id: str, tenant: str | None = None) -> Job:
        row = self._row(jobs_table, job_id, tenant)
        if row is None:
            raise NotFound(f"No fine-tuning job {job_id!r}", param="fine_tuning_job_id")
        return Job(**{**row, "hyperparameters": json.loads(row["hyperparameters"])})

    def jobs(self, after: str | None = None, limit: int = 20, tenant: str | None = None) -> list[Job]:
        """Newest first; ``after``: the jobs created before that one."""
        query = jobs_table.select().order_by(jobs_table.c.created_at.desc(), jobs_table.c.id.desc())
        if tenant is not None:
            query = query.where(jobs_table.c.tenant == tenant)
        if after is not None:
            pivot = self.job(after, tenant)
            query = query.where(
                sa.or_(
                    jobs_table.c.created_at < pivot.created_at,
                    sa.and_(jobs_table.c.created_at == pivot.created_at, jobs_table.c.id < pivot.id),
                )
            )
        with self.engine.connect() as conn:
            rows = conn.execute(query.limit(limit)).mappings().all()
        return [Job(**{**row, "hyperparameters": json.loads(row["hyperparameters"])}) for row in rows]

    def next_queued(self) -> Job | None:
        query = jobs_table.select().where(jobs_table.c.status == "queued").order_by(jobs_table.c.created_at)
        with self.engine.connect() as conn:
            row = conn.execute(query.limit(1)).mappings().first()
        return None if row is None else self.job(row["id"])

    def start(self, job_id: str) -> bool:
        """``queued`` → ``running``, unless the job was cancelled (or taken) since it was picked: its worker
        then does not train."""
        query = (
            jobs_table.update()
            .where(jobs_table.c.id == job_id, jobs_table.c.status == "queued", ~jobs_table.c.cancel_requested)
            .values(status="running")
        )
        with self.engine.begin() as conn:
            return conn.execute(query).rowcount == 1

    def update(self, job_id: str, **values: Any) -> None:
        if values.get("status") in FINAL:
            values.setdefault("finished_at", int(time.time()))
        with self.engine.begin() as conn:
            conn.execute(jobs_table.update().where(jobs_table.c.id == job_id).values(**values))

    def requeue_running(self) -> list[str]:
        """Jobs left ``running`` by a gateway that stopped: queued again (they resume from a checkpoint)."""
        with self.engine.begin() as conn:
            ids = [
                r[0] for r in conn.execute(sa.select(jobs_table.c.id).where(jobs_table.c.status == "running"))
            ]
            conn.execute(jobs_table.update().where(jobs_table.c.id.in_(ids)).values(status="queued"))
        return ids

    def queued(self) -> int:
        query = sa.select(sa.func.count()).select_from(jobs_table).where(jobs_table.c.status == "queued")
        with self.engine.connect() as conn:
            return int(conn.execute(query).scalar_one())

    # -- events
    def add_event(self, job_id: str, level: str, kind: str, message: str, data: dict[str, Any]) -> None:
        with self.engine.begin() as conn:
            conn.execute(
                events_table.insert().values(
                    job_id=job_id, created_at=int(time.time()), level=level, type=kind, message=message,
                    data=json.dumps(data),
                )
            )  # fmt: skip

    def events(self, job_id: str, after: int | None = None, limit: int = 20) -> list[dict[str, Any]]:
        """Newest first, as OpenAI lists them; ``after``: events older than that one (its ``seq``)."""
        query = events_table.select().where(events_table.c.job_id == job_id)
        if after is not None:
            query = query.where(events_table.c.seq < after)
        with self.engine.connect() as conn:
            rows = conn.execute(query.order_by(events_table.c.seq.desc()).limit(limit)).mappings().all()
        return [{**row, "data": json.loads(row["data"])} for row in rows]
