"""``server:``: how the HTTP server treats its connections — slow clients, idle and concurrent connections
(docs/api.md, "Slow clients and connection limits") — and which web origins may call it (CORS)."""

from __future__ import annotations

import re

from pydantic import BaseModel, ConfigDict, Field, field_validator

_ORIGIN = re.compile(r"https?://[^/\s:]+(:[0-9]{1,5})?")


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
    workers: int = Field(
        1,
        ge=1,
        le=64,
        description="Processes serving requests (groupqwen serve --workers); above 1 the models must be on "
        "servers (backend openai_http) and the cache and rate limits shared (cache: redis or off, "
        "limits.redis_url): README, Models and memory",
    )
    cors_origins: list[str] = Field(
        default_factory=list,
        description="Web origins (scheme://host[:port]) whose pages may call the API from a browser, e.g. "
        "the web UI's when served elsewhere; * for any; empty: no CORS headers (browsers refuse cross-origin "
        "calls)",
        examples=[["http://localhost:5173", "https://chat.example.com"]],
    )

    @field_validator("cors_origins")
    @classmethod
    def _origins(cls, origins: list[str]) -> list[str]:
        for origin in origins:
            if origin != "*" and not _ORIGIN.fullmatch(origin):
                raise ValueError(
                    f"{origin!r} is not an origin: write scheme://host[:port], without a path or a trailing /"
                )
        return origins
