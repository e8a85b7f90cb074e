"""``limits:``: rate limits per API key and per tenant — requests and tokens per minute, concurrent
requests — kept in memory or, for several replicas, in Redis (docs/security.md, "Rate limits")."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field


class RatesConfig(BaseModel):
    """One set of limits; ``null``: no limit of that kind."""

    model_config = ConfigDict(extra="forbid")

    requests_per_minute: int | None = Field(
        None, ge=1, description="Requests a minute (a token bucket: bursts up to this, refilled evenly)"
    )
    tokens_per_minute: int | None = Field(
        None,
        ge=1,
        description="Prompt plus completion tokens a minute: an estimate is reserved when a request "
        "starts (its prompt, plus max_tokens when sent), settled with the real usage when it ends",
    )
    concurrent_requests: int | None = Field(None, ge=1, description="Requests in progress at once")


class LimitsConfig(BaseModel):
    """Who is limited, by how much, and where the counts live."""

    model_config = ConfigDict(extra="forbid")

    key: RatesConfig = Field(
        default_factory=RatesConfig,  # type: ignore[arg-type]
        description="Each API key's limits, unless the key sets its own (groupqwen keys create)",
        examples=[{"requests_per_minute": 600, "tokens_per_minute": 200000, "concurrent_requests": 16}],
    )
    tenant: RatesConfig = Field(
        default_factory=RatesConfig,  # type: ignore[arg-type]
        description="Each tenant's limits: all of its keys together",
    )
    tenants: dict[str, RatesConfig] = Field(
        default_factory=dict,
        description="Limits of particular tenants, by name, instead of tenant:",
        examples=[{"acme": {"requests_per_minute": 3000, "tokens_per_minute": 1000000}}],
    )
    anonymous: bool = Field(
        False,
        description="Apply key: limits to requests without a key too (auth: off), all of them counted as "
        "one key; off: requests without a key are not limited (one person's own machine)",
    )
    redis_url: str | None = Field(
        None,
        description="Keep the counts in Redis, shared by every gateway replica (redis://host:6379/0); "
        "null: in this process's memory",
    )
    redis_prefix: str = Field("groupqwen:limits:", min_length=1, description="Prefix of the Redis keys")
    redis_timeout_s: float = Field(
        0.25, gt=0, le=10, description="Seconds a Redis call may take before Redis is taken for down"
    )
    redis_retry_after_s: float = Field(
        1.0, gt=0, description="Seconds Redis is left alone after it failed, before it is tried again"
    )
    on_redis_down: Literal["open", "closed"] = Field(
        "open",
        description="While Redis is down: open (requests pass unlimited, health degraded) | closed "
        "(limited requests get a 503 limits_unavailable with Retry-After)",
    )
    lease_ttl_s: float = Field(
        600,
        gt=0,
        description="A concurrent request's slot is freed after this many seconds even if its gateway "
        "never said it ended (a replica that died mid-request)",
    )
