"""``ws:``: the WebSocket endpoint ``GET /v1/ws`` — resuming generations after a dropped connection (on
any replica, with ``redis_url``), its limits, heartbeats and allowed browser origins (docs/api.md,
"WebSocket"; docs/DEPLOYMENT.md, "Several replicas")."""

from __future__ import annotations

from typing import Literal
from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict, Field, field_validator

from groupqwen.config.fields import RedisUrl


class WsConfig(BaseModel):
    """Sessions, resume, limits and heartbeats of ``/v1/ws``."""

    model_config = ConfigDict(extra="forbid")

    resume_window_s: float = Field(
        30.0,
        gt=0,
        description="Seconds the generations of a dropped connection keep running (and a finished one's "
        "frames are kept) for a client to resume them; then they are cancelled",
    )
    buffer_frames: int = Field(
        1024,
        ge=8,
        description="Frames kept per generation for a resume; a parked generation that fills it is "
        "cancelled (a later resume gets resume_expired)",
    )
    max_generations: int = Field(
        8, ge=1, description="Generations running at once on one connection; over it: error 429 for that id"
    )
    max_frame_bytes: int = Field(
        1_000_000,
        ge=1024,
        description="Largest client frame (bytes): up to 4 times this gets an error frame, beyond that "
        "the socket is closed (1009)",
    )
    heartbeat_s: float = Field(
        15.0,
        gt=0,
        description="Seconds between the server's pings; a peer silent for 2 of them, or a reader that "
        "takes no frame for 2 of them, is dropped (its generations are parked)",
    )
    send_queue_frames: int = Field(
        256,
        ge=1,
        description="Frames queued for one connection before its generations pause (backpressure)",
    )
    max_violations: int = Field(
        10,
        ge=1,
        description="Protocol violations in a row (not JSON, unknown type, oversized …) before the "
        "socket is closed (1008); a valid frame resets the count",
    )
    allowed_origins: list[str] = Field(
        default_factory=list,
        description="Browser origins (scheme://host[:port]) allowed besides the gateway's own; '*': any. "
        "Clients that send no Origin (not browsers) are always allowed",
        examples=[["https://chat.example.com"]],
    )
    implementation: Literal["websockets", "websockets-sansio", "wsproto"] = Field(
        "websockets-sansio",
        description="uvicorn's WebSocket implementation for groupqwen serve (docs/benchmarks.md)",
    )
    redis_url: RedisUrl | None = Field(
        None,
        description="Record which replica holds each session in Redis (redis://host:6379/0), so that a "
        "resume reaching any replica is relayed to it; none: a session is resumed on its own replica only "
        "(docs/DEPLOYMENT.md, Several replicas)",
    )
    redis_prefix: str = Field("groupqwen:ws:", min_length=1, description="Prefix of the Redis keys")
    redis_timeout_s: float = Field(
        0.5,
        gt=0,
        le=10,
        description="Seconds a Redis call may take; slower or down: a resume is answered as without "
        "redis_url (logged)",
    )
    advertise_url: str | None = Field(
        None,
        description="With redis_url: the base URL other replicas reach this one at "
        "(http://10.0.0.5:8000); null: http://<host>:<port>, a listen-everywhere host replaced by the "
        "address this machine's hostname resolves to",
    )
    relay_timeout_s: float = Field(
        5.0,
        gt=0,
        description="With redis_url: seconds a replica waits for the one holding a session to take a resume "
        "it relays; then, or when that replica is gone, the resume is answered resume_expired",
    )

    @field_validator("advertise_url")
    @classmethod
    def _base_url(cls, value: str | None) -> str | None:
        if value is None:
            return None
        parts = urlsplit(value)
        if parts.scheme not in ("http", "https") or not parts.hostname or parts.path not in ("", "/"):
            raise ValueError("must be a base URL such as http://10.0.0.5:8000 (http or https, no path)")
        return value.rstrip("/")
