"""The hot routes served ahead of FastAPI's router: ``HOT`` (the chat and text completions) go from the
middleware straight to their endpoint.

They stay FastAPI's routes: the same endpoint functions, listed in the OpenAPI schema and ``/docs``, taken
from the app's own routes. The middleware around the router (CORS, ``RequestContextMiddleware``: the
request id, the body's limits and timeout, the logged 500) is around this layer too, and this layer does
what the router's part did, with the same functions: the key is settled by ``auth.settle`` under the
route's rule (FastAPI's app-wide dependency, ``auth.authorize``, does the same), and a ``GroupQwenError``
becomes its answer through ``errors.failed`` (FastAPI's exception handler calls it too). What is left out
is FastAPI's machinery per request: matching the path against every route, solving the dependencies, its
exception and exit-stack layers (about a fifth of a proxied request's CPU, docs/benchmarks.md). A request
that is not exactly a hot route's method and path (another method, a trailing slash, a ``root_path``)
goes on to FastAPI as before.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass

from fastapi import FastAPI
from fastapi.routing import APIRoute
from starlette.requests import Request
from starlette.responses import Response
from starlette.types import ASGIApp, Receive, Scope, Send

from groupqwen.api import auth
from groupqwen.api.errors import failed
from groupqwen.errors import GroupQwenError

HOT = (("POST", "/v1/chat/completions"), ("POST", "/v1/completions"))

Endpoint = Callable[[Request], Awaitable[Response]]


@dataclass(frozen=True)
class Route:
    """A hot route: its endpoint (FastAPI's route's own), what it needs (``auth.RULES``) and its name in
    the audit log."""

    endpoint: Endpoint
    rule: auth.Rule
    action: str


def hot_routes(app: FastAPI, wanted: tuple[tuple[str, str], ...] = HOT) -> dict[tuple[str, str], Route]:
    """The ``wanted`` (method, path) routes of ``app``, as its router would serve them."""
    found = {
        (method, path): Route(route.endpoint, auth.RULES[(method, path)], f"{method} {path}")
        for method, path, route in auth.api_routes(app.routes)
        if (method, path) in wanted and isinstance(route, APIRoute)
    }
    missing = [f"{method} {path}" for method, path in wanted if (method, path) not in found]
    if missing:
        raise RuntimeError(f"api/fast.py: the app has no route {', '.join(missing)}")
    return found


class FastRoutes:
    """ASGI middleware, the innermost: serves ``routes`` itself, passes everything else to ``app``."""

    def __init__(self, app: ASGIApp, routes: Mapping[tuple[str, str], Route]) -> None:
        self.app = app
        self.routes = routes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and not scope.get("root_path"):
            route = self.routes.get((scope["method"], scope["path"]))
            if route is not None:
                await self._serve(route, scope, receive, send)
                return
        await self.app(scope, receive, send)

    @staticmethod
    async def _serve(route: Route, scope: Scope, receive: Receive, send: Send) -> None:
        request = Request(scope, receive, send)
        try:
            await auth.settle(request, route.rule, route.action)
            response = await route.endpoint(request)
        except GroupQwenError as exc:
            response = failed(exc)
        await response(scope, receive, send)
