"""``Principal``: who a request acts for, as the gateway settles it before any work (the API key's record,
or ``ANONYMOUS`` when ``auth: off``). Routes read it with ``api.auth.principal_of``; the rate limiter, the
cache's tenant, metrics and datasets are scoped by it."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

Scope = Literal["chat", "embeddings", "admin", "finetune"]
SCOPES: tuple[Scope, ...] = ("chat", "embeddings", "admin", "finetune")


@dataclass(frozen=True)
class Limits:
    """A key's (or tenant's) limits; ``None``: the configured default for that limit."""

    requests_per_minute: int | None = None
    tokens_per_minute: int | None = None
    concurrent_requests: int | None = None


@dataclass(frozen=True)
class Principal:
    """``key_id`` is the key's public id (never the key); ``None`` when auth is off. ``models``: the
    model ids and routes the key may use (``None``: every one)."""

    key_id: str | None
    name: str
    tenant: str
    scopes: frozenset[Scope]
    models: frozenset[str] | None = None
    limits: Limits = field(default_factory=Limits)

    def allows(self, scope: Scope) -> bool:
        return scope in self.scopes

    def may_use(self, model: str) -> bool:
        return self.models is None or model in self.models


# ``auth: off`` (the embedded default on 127.0.0.1): one person's own machine, every scope
ANONYMOUS = Principal(key_id=None, name="anonymous", tenant="", scopes=frozenset(SCOPES))

# ``auth: keys``, a public route (health probes): no key was asked for, and no scope is held
NOBODY = Principal(key_id=None, name="nobody", tenant="", scopes=frozenset())
