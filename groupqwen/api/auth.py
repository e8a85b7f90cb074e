"""Who may call which route: the principal is settled once per request (``authorize``, a dependency of the
whole app) and kept in the request's scope (``principal_of`` reads it); ``RULES`` names what each route needs.

``RULES`` maps every route (method, or ``WEBSOCKET`` for a WebSocket route, and path as FastAPI writes it)
to ``"public"`` (no key: health probes), ``"key"`` (any valid key: listing models), a scope, or
``"operator"``: the ``admin`` scope on a key of the ``default`` tenant, for what acts on the whole gateway
(models, the cache, gateway-wide counters). An admin key of another tenant reads its own tenant's metrics.
``check_rules`` refuses to build an app with a route it does not name, and tests/access/test_matrix.py asks
every route of the app with every kind of key.

Denials and admin actions go to the ``groupqwen.audit`` log with the request id, the key's public id and
the action, never the key itself.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Literal

from fastapi import FastAPI
from fastapi.routing import APIRoute, APIWebSocketRoute
from starlette.exceptions import WebSocketException
from starlette.requests import HTTPConnection
from starlette.routing import BaseRoute
from starlette.status import WS_1008_POLICY_VIOLATION
from starlette.types import Scope as ASGIScope

from groupqwen import log
from groupqwen.access.authenticate import Authenticator
from groupqwen.access.keys import DEFAULT_TENANT, key_id_of
from groupqwen.access.principal import NOBODY, Principal, Scope
from groupqwen.errors import GroupQwenError, ModelNotAllowed, PermissionDenied
from groupqwen.orchestrator.answer import cache_tenant
from groupqwen.orchestrator.pipeline import model_not_found
from groupqwen.telemetry import timing

Rule = Scope | Literal["public", "key", "operator"]
_HEADERS = "groupqwen.headers"  # the scope's key for ``headers``
_PRINCIPAL = "groupqwen.principal"  # the scope's key for the settled principal (``principal_of``)
_DENIAL = "websocket.http.response"  # ASGI's extension: an HTTP answer to a refused WebSocket upgrade
WEBSOCKET = "WEBSOCKET"  # RULES' method for a WebSocket route: ("WEBSOCKET", "/v1/ws")
_audit = log.get("groupqwen.audit")

RULES: dict[tuple[str, str], Rule] = {
    ("GET", "/health"): "public",
    ("GET", "/v1/health"): "public",
    ("POST", "/v1/chat/completions"): "chat",
    ("POST", "/v1/completions"): "chat",
    ("POST", "/v1/responses"): "chat",
    ("GET", "/v1/responses/{response_id}"): "chat",
    ("DELETE", "/v1/responses/{response_id}"): "chat",
    ("GET", "/v1/responses/{response_id}/input_items"): "chat",
    ("POST", "/v1/embeddings"): "embeddings",
    ("GET", "/v1/models"): "key",
    ("GET", "/v1/models/{model_id:path}"): "key",
    ("POST", "/v1/models/{model_id:path}/load"): "operator",
    ("POST", "/v1/models/{model_id:path}/unload"): "operator",
    ("DELETE", "/v1/models/{model_id:path}"): "finetune",  # a tenant's own ft: models (api/admin.py)
    ("GET", "/v1/metrics"): "admin",
    ("GET", "/metrics"): "operator",
    ("GET", "/v1/metrics/stream"): "admin",
    ("POST", "/v1/cache/feedback"): "chat",  # the client that got the hit; its id is unguessable
    ("GET", "/v1/cache/stats"): "operator",
    ("POST", "/v1/cache/invalidate"): "operator",
    ("DELETE", "/v1/cache"): "operator",
    (WEBSOCKET, "/v1/ws"): "chat",  # each chat.create is checked against the key's models, as HTTP
    ("POST", "/v1/review/{name:path}"): "finetune",
    ("GET", "/v1/review/{name:path}"): "finetune",
    ("POST", "/v1/review/{name:path}/decisions"): "finetune",
    ("GET", "/v1/review/{name:path}/export"): "finetune",
    ("POST", "/v1/review/{name:path}/import"): "finetune",
    ("GET", "/v1/review/{name:path}/build"): "finetune",
    ("POST", "/v1/review/{name:path}/files"): "finetune",
    ("POST", "/v1/files"): "finetune",
    ("GET", "/v1/files"): "finetune",
    ("GET", "/v1/files/{file_id}"): "finetune",
    ("GET", "/v1/files/{file_id}/content"): "finetune",
    ("DELETE", "/v1/files/{file_id}"): "finetune",
    ("POST", "/v1/fine_tuning/jobs"): "finetune",
    ("POST", "/v1/finetune/start"): "finetune",
    ("GET", "/v1/fine_tuning/jobs"): "finetune",
    ("GET", "/v1/fine_tuning/jobs/{job_id}"): "finetune",
    ("POST", "/v1/fine_tuning/jobs/{job_id}/cancel"): "finetune",
    ("GET", "/v1/fine_tuning/jobs/{job_id}/events"): "finetune",
    ("GET", "/v1/fine_tuning/jobs/{job_id}/checkpoints"): "finetune",
}


def routes(app: FastAPI) -> list[tuple[str, str]]:
    """Every (method, path) the app serves through its API routes, those of included routers too."""
    return [(method, path) for method, path, _ in api_routes(app.routes)]


def api_routes(candidates: Sequence[BaseRoute]) -> Iterator[tuple[str, str, APIRoute | APIWebSocketRoute]]:
    """(method, path, route) of every API route among ``candidates`` and the routers they include."""
    for route in candidates:
        if isinstance(route, APIRoute):
            yield from ((method, route.path, route) for method in sorted(route.methods or ()))
        elif isinstance(route, APIWebSocketRoute):
            yield WEBSOCKET, route.path, route
        included = getattr(route, "original_router", None)  # FastAPI ≥ 0.16x keeps included routers whole
        if included is not None:
            yield from api_routes(included.routes)


def check_rules(app: FastAPI) -> None:
    """A route without a rule is a bug caught when the app is built, never a route left open."""
    missing = [f"{method} {path}" for method, path in routes(app) if (method, path) not in RULES]
    if missing:
        raise RuntimeError(f"api/auth.py RULES names no rule for: {', '.join(missing)}")


def _authenticator(connection: HTTPConnection) -> Authenticator:
    authenticator: Authenticator = connection.app.state.services.access
    return authenticator


def _who(principal: Principal) -> dict[str, str]:
    return {"key_id": principal.key_id or "-", "tenant": principal.tenant or "-"}


def deny(
    error: GroupQwenError, action: str, principal: Principal | None = None, key_id: str | None = None
) -> GroupQwenError:
    """``error``, once it is in the audit log (``key_id``: the public id a refused key claimed)."""
    who = _who(principal) if principal is not None else {"key_id": key_id or "-", "tenant": "-"}
    _audit.warning("denied", action=action, status=error.status_code, code=error.code, **who)
    return error


def audit(event: str, action: str, principal: Principal, **fields: str | bool) -> None:
    """``event`` (something a key removed or changed for good) in the audit log, with who did it."""
    _audit.info(event, action=action, **_who(principal), **fields)


async def settle(connection: HTTPConnection, rule: Rule, action: str, *, again: bool = False) -> Principal:
    """The principal of an HTTP request or a WebSocket upgrade (the same headers), allowed ``rule``; kept in
    its scope for ``principal_of``. Raises (and audits) ``AuthenticationFailed`` or ``PermissionDenied``;
    ``again``: a check of a connection already let in (``recheck``), whose admin action is logged once."""
    authenticator = _authenticator(connection)
    if rule == "public" and authenticator.enabled:
        connection.scope[_PRINCIPAL] = NOBODY
        return NOBODY
    header = headers(connection).get("authorization")
    try:
        principal = await authenticator.principal(header)
    except GroupQwenError as exc:
        if exc.status_code == 401:
            raise deny(exc, action, key_id=key_id_of((header or "").partition(" ")[2].strip())) from None
        raise
    connection.scope[_PRINCIPAL] = principal
    scope = _scope_of(rule)
    if scope is not None and not principal.allows(scope):
        raise deny(
            PermissionDenied(
                f"You have insufficient permissions for this operation. Missing scope: {scope} "
                f"(this key has: {', '.join(sorted(principal.scopes)) or 'none'})."
            ),
            action,
            principal,
        )
    if rule == "operator" and not is_operator(principal):
        raise deny(
            PermissionDenied(
                "This operation acts on the whole gateway: it needs an admin key of the 'default' tenant "
                f"(this key belongs to {principal.tenant!r})."
            ),
            action,
            principal,
        )
    if scope == "admin" and principal.key_id is not None and not again:
        audit("admin action", action, principal)
    return principal


def _scope_of(rule: Rule) -> Scope | None:
    if rule == "operator":
        return "admin"
    if rule == "public" or rule == "key":
        return None
    return rule


def is_operator(principal: Principal) -> bool:
    """The gateway's own: ``auth: off``, or a key of the ``default`` tenant."""
    return principal.tenant in ("", DEFAULT_TENANT)


async def authorize(connection: HTTPConnection) -> None:
    """The app's dependency: every route, HTTP or WebSocket, runs after it. A WebSocket upgrade that fails
    is answered as the same request over HTTP would be: the error's status, headers and JSON (the ASGI
    denial response, which uvicorn's implementations all support). A server without that extension can
    only refuse it: then it is closed before it is accepted with 1008 (policy violation) and the error's
    message as the reason, which such a server turns into a bare 403."""
    path = connection.scope["route"].path
    if connection.scope["type"] != "websocket":
        method = connection.scope["method"]
        await settle(connection, RULES[(method, path)], f"{method} {connection.url.path}")
        return
    try:
        await settle(connection, RULES[(WEBSOCKET, path)], f"{WEBSOCKET} {connection.url.path}")
    except GroupQwenError as exc:
        if _DENIAL in connection.scope.get("extensions", {}):
            raise  # the app's handler answers it (api/errors.py): Starlette sends it as a denial response
        reason = exc.message.encode()[:120].decode(errors="ignore")  # a close reason holds 123 bytes
        raise WebSocketException(WS_1008_POLICY_VIOLATION, reason) from None


async def recheck(connection: HTTPConnection, action: str) -> Principal:
    """A long-lived connection's key looked up again (through the key cache) before it acts again: a
    WebSocket settled at its upgrade, or a stream of events, stays open, and a key revoked, rotated or
    expired since then must stop working on it within ``auth.key_cache_s``, as it does on HTTP."""
    path = connection.scope["route"].path
    method = WEBSOCKET if connection.scope["type"] == "websocket" else connection.scope["method"]
    action = f"{method} {connection.url.path} {action}"
    return await settle(connection, RULES[(method, path)], action, again=True)


def principal_of(connection: HTTPConnection) -> Principal:
    """The principal ``settle`` found (in the scope itself: Starlette's ``request.state`` is a property
    and an object's ``__getattr__`` in Python, five reads a request)."""
    principal: Principal = connection.scope[_PRINCIPAL]
    return principal


def check_model(connection: HTTPConnection, model: str) -> None:
    """A 403 naming ``model`` unless the key's allow-list has it. The list names models and routes: a
    route (``auto``, ``auto:fast``, ``auto:<name>``) is allowed when named, and then reaches every model
    behind it. Another tenant's fine-tuned model is a 404, as a model that does not exist."""
    principal = principal_of(connection)
    if not may_see(connection, connection.app.state.services.pipeline.owner(model)):
        raise model_not_found(model)
    if not principal.may_use(model):
        allowed = ", ".join(sorted(principal.models or ()))
        raise deny(
            ModelNotAllowed(
                f"This API key may not use the model {model!r}; it may use: {allowed or 'none'}.",
                param="model",
            ),
            f"use model {model}",
            principal,
        )


def may_see(connection: HTTPConnection, owner: str) -> bool:
    """Whether the key may see and use a model made from tenant ``owner``'s data (``ModelSpec.owner``;
    ``""``: anyone's): that tenant's keys and the gateway's own."""
    principal = principal_of(connection)
    return not owner or is_operator(principal) or principal.tenant == owner


def headers(connection: HTTPConnection) -> dict[str, str]:
    """``connection``'s headers as one dict (``scope_headers``)."""
    return scope_headers(connection.scope)


def scope_headers(scope: ASGIScope) -> dict[str, str]:
    """The request's headers as one dict (the first of a repeated name, as Starlette's ``Headers``), made
    once a request and kept in its scope (``RequestContextMiddleware`` reads them first): ``Headers.get``
    scans the list each time, and a header a request lacks (most of the six read a request) is found
    missing by a ``KeyError`` raised and caught."""
    found: dict[str, str] | None = scope.get(_HEADERS)
    if found is None:
        found = {k.decode("latin-1"): v.decode("latin-1") for k, v in reversed(scope["headers"])}
        scope[_HEADERS] = found
    return found


def owner(connection: HTTPConnection) -> str:
    """Who owns what a request stores (cached answers, stored responses): the key's tenant, or with
    ``auth: off`` the whole ``Authorization`` header (keyless calls share)."""
    principal = principal_of(connection)
    if principal.key_id is not None:
        return f"tenant:{principal.tenant}"
    return headers(connection).get("authorization") or ""


def cache_owner(connection: HTTPConnection, user: str | None) -> str:
    """Whose cached answers a request reads and writes: its ``owner`` narrowed by ``user`` (``user`` only
    splits a tenant, never reaches into another)."""
    return cache_tenant(owner(connection), user)


def trace_tenant(connection: HTTPConnection, user: str | None) -> str:
    """Who asked, as the request's telemetry record says: the key's tenant, or with ``auth: off`` the
    ``user`` or a hash of the key sent."""
    principal = principal_of(connection)
    if principal.key_id is not None:
        return _record_tenant(principal)
    return timing.tenant(user, headers(connection).get("authorization"))


def dataset_tenant(connection: HTTPConnection) -> str | None:
    """The tenant whose review datasets and fine-tuning files and jobs a request sees; ``None``: the
    gateway's own (``auth: off``, or the default tenant), which sees every tenant's files and jobs."""
    principal = principal_of(connection)
    return None if is_operator(principal) else principal.tenant


def metrics_tenant(connection: HTTPConnection) -> str | None:
    """Whose request records a metrics summary covers: the key's tenant's (as ``trace_tenant`` writes
    it), or ``None`` (every record) for the gateway's own keys."""
    principal = principal_of(connection)
    return None if is_operator(principal) else _record_tenant(principal)


def _record_tenant(principal: Principal) -> str:
    return f"tenant:{principal.tenant}"
