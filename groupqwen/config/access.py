"""``auth:``: who may use the gateway — ``off`` (one person's own machine, the default on 127.0.0.1) or
``keys`` (API keys with scopes and tenants, kept hashed in the gateway's database; docs/security.md)."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr, model_validator


class AuthConfig(BaseModel):
    """``auth: off`` and ``auth: keys`` are short for ``auth: {mode: off}`` and ``auth: {mode: keys}``."""

    model_config = ConfigDict(extra="forbid")

    mode: Literal["off", "keys"] = Field(
        "off",
        description="off: every request is served with every scope (a machine of your own; refused on a "
        "non-loopback host unless allow_unauthenticated_network) | keys: an API key is required "
        "(groupqwen keys create)",
    )
    key_cache_s: float = Field(
        10.0,
        ge=0,
        le=300,
        description="Seconds a replica trusts a key it looked up: a revoked or rotated key stops working "
        "on every replica within this time (0: look the key up on every request)",
    )
    key_stale_s: float = Field(
        600.0,
        ge=0,
        description="While the database cannot be read, keys looked up within this many seconds keep "
        "working (as they were then); others get a 503",
    )
    allow_unauthenticated_network: bool = Field(
        False,
        description="Serve with mode off on a non-loopback host anyway: anyone who reaches the port may "
        "chat, unload models and clear the cache",
    )
    bootstrap_admin_key: SecretStr | None = Field(
        None,
        description="A key (gq-<id>.<secret>, from groupqwen keys generate) ensured with every scope at "
        "start, for containers; set it in the environment (GROUPQWEN_AUTH__BOOTSTRAP_ADMIN_KEY), not in "
        "a file",
    )

    @model_validator(mode="before")
    @classmethod
    def _shorthand(cls, value: Any) -> Any:
        # YAML 1.1 reads an unquoted `off` as false
        if value is False or value == "off":
            return {"mode": "off"}
        if value == "keys":
            return {"mode": "keys"}
        return value
