"""``server:``: how the HTTP server treats its connections — slow clients, idle and concurrent connections
(docs/api.md, "Slow clients and connection limits")."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field


class ServerConfig(BaseModel):
    """Timeouts and limits of ``groupqwen serve`` (uvicorn); the body timeout holds for any ASGI server."""

    model_config = ConfigDict(extra="forbid")

    header_timeout_s: float = Field(
        30.0,
        gt=0,
        description="Seconds a connection may take to send a request line and headers (from its first "
        "byte, or from the connection when it sends none); then it is closed",
    )
    body_timeout_s: float = Field(
        30.0,
        gt=0,
        description="Seconds the request body may go without new bytes; then a 408 and the connection closed",
    )
    keep_alive_timeout_s: int = Field(
        5, ge=1, description="Seconds an idle kept-alive connection stays open after a response"
    )
    limit_concurrency: int | None = Field(
        1000,
        ge=1,
        description="Most open connections (or requests in progress) before new requests get a 503; "
        "null: no limit (the process's open-file limit is the only one)",
    )
    max_header_bytes: int = Field(
        16384,
        ge=1024,
        description="Largest request line plus headers (bytes); above: a 400, connection closed",
    )
