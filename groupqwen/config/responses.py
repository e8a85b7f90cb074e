"""``responses:``: what the Responses API keeps for ``previous_response_id`` and ``GET /v1/responses/{id}``
(docs/api.md, "Responses"). The store itself is ``api/stored_responses.py``."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field


class ResponsesConfig(BaseModel):
    """Stored responses live in the gateway's memory (bounded, oldest dropped first), or in Redis, shared by
    every replica."""

    model_config = ConfigDict(extra="forbid")

    max_stored: int = Field(
        1000, ge=0, description="Most responses kept (0: none; store: true is then refused)"
    )
    max_bytes: int = Field(
        64_000_000,
        ge=0,
        description="Most bytes of conversation text and image URLs the stored responses may hold together",
    )
    ttl_s: float = Field(86400.0, gt=0, description="Seconds a stored response is kept")
    redis_url: str | None = Field(
        None,
        description="Keep stored responses in Redis, so that every gateway replica reads them "
        "(redis://host:6379/0); none: in this process's memory (docs/DEPLOYMENT.md, Several replicas)",
    )
    redis_prefix: str = Field("groupqwen:responses:", min_length=1, description="Prefix of the Redis keys")
    redis_timeout_s: float = Field(
        2.0, gt=0, description="Seconds a Redis call may take before the store counts as unavailable"
    )
