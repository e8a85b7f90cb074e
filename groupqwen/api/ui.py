"""The web UI at ``/``: the Vite build's files, with the client routes falling back to ``index.html``.

The router's default app: it sees only what no route matched (a route with the wrong method is the
router's 405 before it), whenever a route is added. Paths under the API's prefixes (``/v1``, ``/health``,
``/metrics``, ``/docs``, ``/openapi.json``) keep the API's JSON 404. Hashed
assets (``/assets/…``) are cached for a year; ``index.html`` and the rest are revalidated on every load, so a
new build shows at once. Without a build, ``/`` is a page that says how to make one (503).
"""

from __future__ import annotations

from pathlib import Path, PurePosixPath

from starlette.exceptions import HTTPException
from starlette.responses import HTMLResponse, Response
from starlette.staticfiles import StaticFiles
from starlette.types import Receive, Scope, Send
from starlette.websockets import WebSocketClose

API_PREFIXES = ("v1", "health", "metrics", "docs", "redoc", "openapi.json")
IMMUTABLE = "public, max-age=31536000, immutable"
REVALIDATE = "no-cache"
NOT_BUILT = """<!doctype html><html lang="en"><head><meta charset="utf-8"><title>GroupQwen</title></head>
<body><h1>GroupQwen</h1><p>The web UI is not built. Run <code>make ui</code> (or <code>make run</code>) in
the source checkout, or point <code>ui.dist</code> at a build. The API is served under <code>/v1</code>
(<a href="/docs">/docs</a>).</p></body></html>"""


def is_api_path(path: str) -> bool:
    first = path.lstrip("/").split("/", 1)[0]
    return first in API_PREFIXES


class _Build(StaticFiles):
    """A Vite build: cache headers by kind of file, and ``index.html`` for client routes."""

    async def get_response(self, path: str, scope: Scope) -> Response:
        try:
            response = await super().get_response(path, scope)
        except HTTPException as exc:
            if exc.status_code != 404 or "." in PurePosixPath(path).name:  # a missing file stays a 404
                raise
            path = "index.html"
            response = await super().get_response(path, scope)
        immutable = path.startswith("assets/") and response.status_code == 200
        response.headers["cache-control"] = IMMUTABLE if immutable else REVALIDATE
        return response


class WebUI:
    """``app.router.default``: the build's files, else the router's own not-found answers."""

    def __init__(self, dist: Path) -> None:
        self.dist = dist
        self._files: _Build | None = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "websocket":  # no WebSocket route has this path
            await WebSocketClose()(scope, receive, send)
            return
        if scope["type"] != "http":
            return
        if is_api_path(scope["path"]):
            raise HTTPException(404, "Not Found")
        if not (self.dist / "index.html").is_file():
            if scope["method"] not in ("GET", "HEAD"):
                raise HTTPException(405, "Method Not Allowed")
            await HTMLResponse(NOT_BUILT, status_code=503, headers={"cache-control": REVALIDATE})(
                scope, receive, send
            )
            return
        if self._files is None:
            self._files = _Build(directory=self.dist)
        await self._files(scope, receive, send)
