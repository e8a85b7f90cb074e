"""``create_app``: the gateway's ASGI application. The lifespan builds and closes the object graph."""

from __future__ import annotations

import asyncio
import json
import re
import secrets
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass

from fastapi import Depends, FastAPI
from starlette.middleware.cors import CORSMiddleware
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from groupqwen import __version__, log
from groupqwen.api import (
    admin,
    auth,
    completions,
    errors,
    fast,
    files,
    finetune,
    openai,
    openapi,
    responses,
    review,
    review_files,
    ui,
    ws,
)
from groupqwen.api.errors import error_body
from groupqwen.api.schemas.chat import ChatCompletionRequest
from groupqwen.api.schemas.completions import CompletionRequest
from groupqwen.api.schemas.embeddings import EmbeddingRequest
from groupqwen.api.schemas.responses import ResponsesRequest
from groupqwen.api.services import Services, build_services
from groupqwen.config import Settings
from groupqwen.errors import GroupQwenError, PayloadTooLarge, RequestTimeout

_log = log.get(__name__)
# what a page may send (the openai JS SDK sends its x-stainless-* headers too) and read of an answer
CORS_REQUEST_HEADERS = [
    "authorization",
    "content-type",
    "cache-control",
    "x-request-id",
    "x-groupqwen-cache-ttl",
]
CORS_EXPOSED_HEADERS = [
    "x-request-id",
    "x-groupqwen-model",
    "x-groupqwen-route",
    "x-groupqwen-cache",
    "x-groupqwen-cache-similarity",
    "x-groupqwen-escalations",
    "x-groupqwen-abandoned-tokens",
    "retry-after",
    "retry-after-ms",
    *(
        f"x-ratelimit-{what}-{kind}"
        for what in ("limit", "remaining", "reset")
        for kind in ("requests", "tokens")
    ),
]
_CLIENT_REQUEST_ID = re.compile(r"^[A-Za-z0-9._:\-]{1,128}$")


@dataclass(frozen=True)
class Upload:
    """A route whose body may exceed ``max_body_bytes``: a file upload (``setting`` names its limit)."""

    path: re.Pattern[str]
    max_bytes: int
    setting: str


class RequestContextMiddleware:
    """Gives every request an ``x-request-id`` (the client's, if it sent a sane one), caps the request
    body at ``max_body_bytes`` (413; the upload routes ``uploads`` names at their own limits), answers a
    body that stops arriving for ``body_timeout_s`` with a 408 that closes the connection, and turns
    anything unexpected into a logged OpenAI-shaped 500.

    The body timeout bounds each wait for the next piece of the body, until its last piece: once the body
    is complete, a ``receive`` (a route watching for the client's disconnect) waits as long as it likes.
    """

    def __init__(
        self,
        app: ASGIApp,
        max_body_bytes: int,
        body_timeout_s: float = 30.0,
        uploads: Sequence[Upload] = (),
    ) -> None:
        self.app = app
        self.max_body_bytes = max_body_bytes
        self.uploads = uploads
        self.body_timeout_s = body_timeout_s

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = auth.scope_headers(scope)
        given = headers.get("x-request-id", "")
        request_id = given if _CLIENT_REQUEST_ID.match(given) else secrets.token_hex(16)
        upload = next((u for u in self.uploads if u.path.fullmatch(scope["path"])), None)
        limit = max(upload.max_bytes, self.max_body_bytes) if upload else self.max_body_bytes
        token = log.request_id.set(request_id)
        started = False
        received = 0
        body_done = False

        async def send_with_id(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
                message["headers"] = [*message.get("headers", []), (b"x-request-id", request_id.encode())]
            await send(message)

        async def limited_receive() -> Message:
            nonlocal received, body_done
            if body_done:
                return await receive()
            try:
                async with asyncio.timeout(self.body_timeout_s):
                    message = await receive()
            except TimeoutError:
                raise RequestTimeout(
                    f"The request body stopped arriving: no bytes for {self.body_timeout_s:g} s "
                    "(server.body_timeout_s)"
                ) from None
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit:
                    raise too_large()
                body_done = not message.get("more_body", False)
            else:
                body_done = True
            return message

        async def fail(error: GroupQwenError) -> None:
            body = json.dumps(error_body(error)).encode()
            await send_with_id(
                {
                    "type": "http.response.start",
                    "status": error.status_code,
                    "headers": [
                        (b"content-type", b"application/json"),
                        (b"content-length", str(len(body)).encode()),
                        *((k.encode(), v.encode()) for k, v in error.headers().items()),
                    ],
                }
            )
            await send_with_id({"type": "http.response.body", "body": body})

        def too_large() -> PayloadTooLarge:
            setting = upload.setting if upload else "max_body_bytes"
            return PayloadTooLarge(f"The request body is larger than {limit} bytes ({setting})")

        try:
            length = headers.get("content-length")
            # isdecimal: of latin-1's characters only 0-9 (isdigit would take "²", which int refuses)
            if length is not None and length.isdecimal() and int(length) > limit:
                await fail(too_large())
                return
            await self.app(scope, limited_receive, send_with_id)
        except (PayloadTooLarge, RequestTimeout) as exc:  # outside a route's handlers (they answer it)
            _log.info("request failed", status=exc.status_code, code=exc.code, error=exc.message)
            if not started:
                await fail(exc)
        except Exception as exc:
            _log.exception("unexpected error", error=type(exc).__name__)
            if not started:
                await fail(GroupQwenError("The server had an internal error; the request id identifies it."))
        finally:
            log.request_id.reset(token)


def create_app(settings: Settings, services: Services | None = None) -> FastAPI:
    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        built = services or build_services(settings)
        app.state.services = built
        await built.start()
        try:
            yield
        finally:
            await built.close()

    app = FastAPI(
        title="GroupQwen",
        version=__version__,
        lifespan=lifespan,
        dependencies=[Depends(auth.authorize)],
        # FastAPI's own OpenTelemetry instrumentation: unused (the gateway's telemetry is its own), and its
        # per-request check for a configured provider (environment lookups) cost 11 µs a request
        telemetry={"tracing": False, "metrics": False, "logs": False},
    )
    if services is not None:
        app.state.services = services
    errors.install(app)
    bodies = (ChatCompletionRequest, CompletionRequest, ResponsesRequest, EmbeddingRequest)
    admin_bodies = (admin.CacheInvalidation, admin.CacheFeedback, review.DecisionBody)
    openapi.install(app, (*bodies, *admin_bodies))
    app.include_router(openai.router)
    app.include_router(completions.router)
    app.include_router(responses.router)
    app.include_router(admin.router)
    app.include_router(review_files.router)  # before review.router: its {name:path} would take these
    app.include_router(review.router)
    app.include_router(ws.router)
    app.include_router(files.router)
    app.include_router(finetune.router)
    auth.check_rules(app)
    app.router.default = ui.WebUI(settings.ui.dist_dir())  # what no route matches: the web UI (api/ui.py)
    app.add_middleware(fast.FastRoutes, routes=fast.hot_routes(app))  # innermost: the router's part only
    app.add_middleware(
        RequestContextMiddleware,
        max_body_bytes=settings.max_body_bytes,
        body_timeout_s=settings.server.body_timeout_s,
        uploads=(
            Upload(review_files.UPLOAD_PATH, settings.ui.max_upload_mb * 2**20, "ui.max_upload_mb"),
            Upload(
                re.compile(r"/v1/files"), settings.finetune.max_upload_mb * 2**20, "finetune.max_upload_mb"
            ),
        ),
    )
    if settings.server.cors_origins:  # outermost: its headers go on every answer, errors included
        app.add_middleware(
            CORSMiddleware,
            allow_origins=settings.server.cors_origins,
            allow_methods=["GET", "POST", "DELETE"],
            allow_headers=["*"],
            expose_headers=CORS_EXPOSED_HEADERS,
            max_age=600,
        )
    return app
