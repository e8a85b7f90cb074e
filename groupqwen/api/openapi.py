"""The OpenAPI document (``/openapi.json``, the Swagger UI at ``/docs``) made true to the routes.

The routes parse their bodies by hand (``api/body.py``: one parse, errors that name the field), so FastAPI
sees no body to describe, and it lists a 422 that never comes (validation errors are 400s). Here:

- ``body(model)`` (or ``body(media_type=…)``) as a route's ``openapi_extra``: the request body it reads,
  described by the wire model's own JSON schema;
- ``errors(*statuses)``: the error answers a route gives, each in OpenAI's error shape; every route may
  also answer 500, a route with parameters or a body 400 (and, reading a body, 408 and 413), a route with
  path parameters 404;
- response models for the OpenAI surfaces' answers, which the routes build as plain dicts.

``install(app)`` puts it together when the document is first asked for.
"""

from __future__ import annotations

from typing import Any, Literal

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi
from pydantic import BaseModel, ConfigDict

from groupqwen.api.auth import RULES

_REF = "#/components/schemas/{model}"


class ErrorObject(BaseModel):
    message: str
    type: str
    param: str | None
    code: str | None


class ErrorResponse(BaseModel):
    """Every error answer, as OpenAI writes it."""

    error: ErrorObject


_WHY = {
    400: "The request is invalid; param names the field",
    401: "No API key, or one that is wrong, revoked or expired (auth: keys)",
    403: "The API key lacks the scope, or may not use the model",
    404: "Not found (a model, a dataset)",
    408: "The request body stopped arriving",
    409: "The model is busy, or what is to be deleted is still in use",
    413: "The request body is too large",
    429: "A rate limit is reached; Retry-After and x-ratelimit-* say when to retry",
    500: "An internal error; the request id identifies it in the logs",
    502: "The model's backend failed",
    503: "Overloaded, out of memory, or a store unavailable; Retry-After when it helps",
    507: "The data directory's disk is full; nothing was written",
}


def errors(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """``responses=`` for a route: these error statuses, in OpenAI's error shape."""
    return {status: {"model": ErrorResponse, "description": _WHY[status]} for status in statuses}


def body(model: type[BaseModel] | None = None, *, media_type: str = "application/json") -> dict[str, Any]:
    """``openapi_extra=`` for a route that reads its body by hand: ``model``'s JSON schema (``install``
    must be given the model), or any text of ``media_type``."""
    schema: dict[str, Any] = {"type": "string"}
    if model is not None:
        schema = {"$ref": _REF.format(model=model.__name__)}
    return {"requestBody": {"required": True, "content": {media_type: {"schema": schema}}}}


class _Open(BaseModel):
    model_config = ConfigDict(extra="allow")


class Usage(_Open):
    prompt_tokens: int
    completion_tokens: int = 0
    total_tokens: int


class ChatMessageOut(_Open):
    role: Literal["assistant"]
    content: str | None
    reasoning_content: str | None = None


class ChatChoice(_Open):
    index: int
    message: ChatMessageOut
    logprobs: dict[str, Any] | None
    finish_reason: str | None


class ChatCompletion(_Open):
    """A chat completion (``stream: true``: ``chat.completion.chunk`` events instead, then ``[DONE]``)."""

    id: str
    object: Literal["chat.completion"]
    created: int
    model: str
    choices: list[ChatChoice]
    usage: Usage
    groupqwen: dict[str, Any]


class Embedding(_Open):
    object: Literal["embedding"]
    index: int
    embedding: list[float] | str  # base64 of little-endian float32 with encoding_format: base64


class EmbeddingList(_Open):
    object: Literal["list"]
    data: list[Embedding]
    model: str
    usage: Usage


class Model(_Open):
    id: str
    object: Literal["model"]
    created: int
    owned_by: str
    groupqwen: dict[str, Any]


class ModelList(_Open):
    object: Literal["list"]
    data: list[Model]
    groupqwen: dict[str, Any]


SSE_EVENT = {  # one server-sent event, as a client parses it
    "type": "object",
    "properties": {"event": {"type": "string"}, "data": {"type": "string"}, "id": {"type": "string"}},
    "required": ["data"],
}
SSE = {"text/event-stream": {"schema": SSE_EVENT}}


def install(app: FastAPI, bodies: tuple[type[BaseModel], ...]) -> None:
    """``app.openapi`` builds the document once: FastAPI's, with the JSON schemas of ``bodies`` (the models
    the routes' ``body`` names), the error answers every route may give, and no 422 (FastAPI's, never
    sent: a validation error is a 400)."""

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            app.openapi_schema = _document(app, bodies)
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]


def _document(app: FastAPI, bodies: tuple[type[BaseModel], ...]) -> dict[str, Any]:
    document = get_openapi(title=app.title, version=app.version, routes=app.routes)
    components = document.setdefault("components", {}).setdefault("schemas", {})
    models: list[type[BaseModel]] = [*bodies, ErrorResponse]
    for model in models:
        schema = model.model_json_schema(ref_template=_REF)
        components.update(schema.pop("$defs", {}))
        components[model.__name__] = schema
    document["components"]["securitySchemes"] = {"bearer": {"type": "http", "scheme": "bearer"}}
    for path, operations in document["paths"].items():
        for method, operation in operations.items():
            responses = operation["responses"]
            responses.pop("422", None)
            statuses = [500]
            if RULES.get((method.upper(), path)) != "public":  # with auth: keys, a key is checked first
                operation["security"] = [{"bearer": []}]
                statuses += [401, 403, 503]
            parameters = operation.get("parameters", [])
            if parameters:
                statuses.append(400)
            if any(p["in"] == "path" for p in parameters):
                statuses.append(404)  # a value the route's path cannot hold (a newline) matches no route
            if "requestBody" in operation:
                statuses += [400, 408, 413]
                for media in operation["requestBody"]["content"].values():
                    ref = media["schema"].get("$ref", "")
                    if ref and ref.rsplit("/", 1)[-1] not in components:
                        raise RuntimeError(f"{method.upper()} {path}: {ref} is not among install's bodies")
            for status in sorted(set(statuses)):
                responses.setdefault(str(status), _error(status))
    components.pop("HTTPValidationError", None)
    components.pop("ValidationError", None)
    return document


def _error(status: int) -> dict[str, Any]:
    return {
        "description": _WHY[status],
        "content": {"application/json": {"schema": {"$ref": _REF.format(model="ErrorResponse")}}},
    }
