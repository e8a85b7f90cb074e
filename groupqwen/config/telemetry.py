"""``telemetry:``: where request records are kept, for how long, and the health checks (docs/telemetry.md)."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field, field_validator


class TelemetryConfig(BaseModel):
    """Persistence of request records and the health checks (docs/telemetry.md)."""

    model_config = ConfigDict(extra="forbid")

    database_url: str | None = Field(
        None,
        description="Telemetry database: sqlite:///<path> or postgresql://…; default: SQLite in data_dir",
    )
    retention_days: float = Field(
        30, gt=0, description="Request records older than this many days are deleted (hourly)"
    )
    buffer_records: int = Field(
        10_000, ge=1, description="Records held while the database is slow or down; beyond: dropped, counted"
    )
    recent_max_mb: float = Field(
        32,
        gt=0,
        description="Memory (MiB) for the recent request records /v1/metrics reads (the last 24 h); "
        "beyond: the oldest go",
    )
    health_timeout_s: float = Field(2.0, gt=0, le=60, description="Seconds each health check may take")
    health_min_free_disk_mb: int = Field(1024, ge=0, description="Less free disk than this: degraded")

    @field_validator("database_url")
    @classmethod
    def _database_url_scheme(cls, value: str | None) -> str | None:
        schemes = ("sqlite:///", "postgresql://", "postgres://", "postgresql+psycopg://")
        if value is not None and not value.startswith(schemes):
            raise ValueError("must start with sqlite:/// or postgresql://")
        return value
