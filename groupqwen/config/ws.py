"""``ws:``: the WebSocket endpoint ``GET /v1/ws`` — resuming generations after a dropped connection, its
limits, heartbeats and allowed browser origins (docs/api.md, "WebSocket")."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field


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
