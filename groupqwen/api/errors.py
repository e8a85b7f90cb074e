"""The one place that turns exceptions into OpenAI's error JSON."""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import ValidationError
from starlette.exceptions import HTTPException

from groupqwen import log
from groupqwen.errors import GroupQwenError, InvalidRequest

_log = log.get(__name__)


def error_body(exc: GroupQwenError) -> dict[str, Any]:
    return {"error": {"message": exc.message, "type": exc.error_type, "param": exc.param, "code": exc.code}}


def error_response(exc: GroupQwenError) -> JSONResponse:
    return JSONResponse(error_body(exc), status_code=exc.status_code, headers=exc.headers())


@contextmanager
def fields_named(names: Mapping[str, str]) -> Iterator[None]:
    """For a surface whose fields chat's request path names otherwise (``prompt``, ``input``,
    ``max_output_tokens``): a request error raised inside names the surface's own field in ``param``."""
    try:
        yield
    except InvalidRequest as exc:
        if exc.param is not None and exc.param in names:
            exc.param = names[exc.param]
        raise


def param_path(loc: tuple[int | str, ...]) -> str:
    """``("messages", 0, "content")`` → ``"messages[0].content"`` (OpenAI's way of naming a field)."""
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += f".{part}" if out else str(part)
    return out


# pydantic names the union member it tried in an error's location ("stop.str", "content.list[…]");
# a client only wants the field.
_UNION_MEMBER = re.compile(r"^(str|int|float|bool|none|dict\[.*\]|list\[.*\]|[A-Z]\w*)$")


def from_validation_error(exc: ValidationError | RequestValidationError) -> InvalidRequest:
    first = exc.errors()[0]
    loc = tuple(
        p
        for p in first["loc"]
        if p not in ("body", "query") and not (isinstance(p, str) and _UNION_MEMBER.match(p))
    )
    param = param_path(loc) or None
    message = first["msg"]
    if param:
        message = f"Invalid value for '{param}': {message}"
    more = len(exc.errors()) - 1
    if more:
        message += f" (and {more} more error{'s' if more > 1 else ''})"
    return InvalidRequest(message, param=param)


def failed(exc: GroupQwenError) -> JSONResponse:
    """A route's ``GroupQwenError`` as its answer, once it is logged: what FastAPI's routes and the hot
    routes served ahead of them (``api/fast.py``) both answer."""
    fields = {"status": exc.status_code, "code": exc.code, "error": exc.message}
    if exc.status_code < 500:
        _log.info("request failed", **fields)
    elif exc.__cause__ is not None:  # a foreign error translated at a boundary: its traceback, once
        _log.exception("request failed", **fields)
    else:
        _log.error("request failed", **fields)
    return error_response(exc)


def install(app: FastAPI) -> None:
    async def on_groupqwen_error(request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, GroupQwenError)
        return failed(exc)

    async def on_request_validation_error(request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, RequestValidationError)
        return error_response(from_validation_error(exc))

    async def on_http_error(request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, HTTPException)
        error = GroupQwenError(str(exc.detail))
        error.status_code = exc.status_code
        error.error_type = "invalid_request_error" if exc.status_code < 500 else "api_error"
        error.code = {404: "not_found", 405: "method_not_allowed"}.get(exc.status_code)
        return JSONResponse(error_body(error), status_code=exc.status_code, headers=exc.headers)

    app.add_exception_handler(GroupQwenError, on_groupqwen_error)
    # FastAPI's own validation of a route's parameters is the client's fault; any other pydantic
    # ValidationError is a bug (a wire model's is converted by its adapter) and becomes a logged 500
    app.add_exception_handler(RequestValidationError, on_request_validation_error)
    app.add_exception_handler(HTTPException, on_http_error)
