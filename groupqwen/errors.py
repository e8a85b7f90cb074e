"""The one exception tree of GroupQwen.

Every error a client may see is a ``GroupQwenError`` subclass that knows its HTTP status and its OpenAI
error ``type`` and ``code``; ``api/errors.py`` is the only place that turns them into JSON. Anything else
that escapes is a bug and becomes a logged 500.

::

    GroupQwenError                      500 api_error
    ├── InvalidRequest                  400 invalid_request_error       (param names the field)
    │   ├── UnsupportedParameter        400 invalid_request_error       unsupported_parameter
    │   ├── ContextLengthExceeded       400 invalid_request_error       context_length_exceeded
    │   ├── ImageRefused                400 invalid_request_error       image_refused     (which image, why)
    │   ├── PayloadTooLarge             413 invalid_request_error       payload_too_large
    │   └── RequestTimeout              408 invalid_request_error       request_timeout   (Connection: close)
    ├── ClientDisconnected              499 invalid_request_error       client_disconnected (never sent)
    ├── AuthenticationFailed            401 invalid_request_error       invalid_api_key   (WWW-Authenticate)
    ├── PermissionDenied                403 invalid_request_error       insufficient_permissions (a scope)
    │   └── ModelNotAllowed             403 invalid_request_error       model_not_allowed (the key's models)
    ├── ModelNotFound                   404 invalid_request_error       model_not_found
    ├── NotFound                        404 invalid_request_error       not_found         (a review dataset …)
    ├── ModelBusy                       409 invalid_request_error       model_busy
    ├── InUse                           409 invalid_request_error       in_use            (a job needs it)
    ├── ResumeExpired                   410 invalid_request_error       resume_expired    (WebSocket resume)
    ├── TooManyGenerations              429 rate_limit_error            too_many_generations (one WebSocket)
    ├── RateLimited                     429 requests | tokens           rate_limit_exceeded (Retry-After,
    │                                                                   x-ratelimit-* headers)
    ├── Overloaded                      503 server_error                overloaded        (Retry-After)
    ├── InsufficientMemory              503 server_error                insufficient_memory
    ├── InsufficientStorage             507 server_error                insufficient_storage (data_dir full)
    ├── LimitsUnavailable               503 server_error                limits_unavailable (Redis down,
    │                                                                   on_redis_down: closed)
    ├── CacheUnavailable                503 server_error                cache_unavailable (cache admin routes)
    │   ├── CacheSlow                   503 server_error                cache_slow        (a slow store)
    │   └── EmbedderUnavailable         503 server_error                embedder_unavailable (/v1/embeddings)
    ├── TelemetryUnavailable            503 server_error                telemetry_unavailable (metrics' store)
    ├── KeysUnavailable                 503 server_error                keys_unavailable  (the key store)
    ├── ResponsesUnavailable            503 server_error                responses_unavailable (their Redis)
    ├── BackendError                    502 api_error                   backend_error
    │   ├── ModelLoadError              502 api_error                   model_load_failed
    │   └── UpstreamError               the model server's status, type, code, param and message
    ├── ConfigError                     500 api_error                   config_error      (field names)
    ├── DownloadError                   500 api_error                   download_failed   (models pull)
    ├── TrainingUnavailable             503 server_error                training_unavailable (no torch/CUDA)
    └── FinetuneError                   400 invalid_request_error       finetune_error    (the data pipeline)
        ├── InvalidExport               400                             invalid_export    (not an export)
        ├── UnsafeArchive               400                             unsafe_archive    (zip-slip, bombs)
        └── InvalidRecords              400                             invalid_records   (a JSONL stage file)
"""

from __future__ import annotations

import math
from typing import ClassVar


class GroupQwenError(Exception):
    """Base class: an error with an HTTP status and OpenAI's ``type``/``code``."""

    status_code: int = 500
    error_type: str = "api_error"
    code: str | None = None
    passed_through: ClassVar[bool] = False  # status, type and code are another server's, set per instance

    def __init__(self, message: str, *, param: str | None = None, code: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.param = param
        if code is not None:
            self.code = code

    def headers(self) -> dict[str, str]:
        """Extra HTTP headers the response must carry."""
        return {}


class InvalidRequest(GroupQwenError):
    """The request is malformed or has a bad field; ``param`` names the field."""

    status_code = 400
    error_type = "invalid_request_error"
    code = "invalid_request"


class UnsupportedParameter(InvalidRequest):
    """A field whose meaning we cannot honour (``n>1``, ``tools`` …): refusing beats silently ignoring."""

    code = "unsupported_parameter"


class ContextLengthExceeded(InvalidRequest):
    """The prompt (plus ``max_tokens``) does not fit the model's context window."""

    code = "context_length_exceeded"


class ImageRefused(InvalidRequest):
    """An image the gateway would not fetch or could not read (its address, size, type, pixels …); the
    message names the image (``messages[i].content[j]``) and the reason."""

    code = "image_refused"


class PayloadTooLarge(InvalidRequest):
    status_code = 413
    code = "payload_too_large"


class RequestTimeout(InvalidRequest):
    """The client stopped sending its request body (``server.body_timeout_s``); the connection is closed."""

    status_code = 408
    code = "request_timeout"

    def headers(self) -> dict[str, str]:
        return {"connection": "close"}


class ClientDisconnected(GroupQwenError):
    """The client went away before its answer; the work was cancelled. Logged, never delivered."""

    status_code = 499
    error_type = "invalid_request_error"
    code = "client_disconnected"


class AuthenticationFailed(GroupQwenError):
    """No API key, or one that is unknown, wrong, revoked or expired (``auth: keys``). The message names
    the key by its public id at most, never its secret."""

    status_code = 401
    error_type = "invalid_request_error"
    code = "invalid_api_key"

    def headers(self) -> dict[str, str]:
        return {"WWW-Authenticate": 'Bearer realm="groupqwen"'}


class PermissionDenied(GroupQwenError):
    """A valid key without the scope the route needs (``chat``, ``embeddings``, ``admin``, ``finetune``)."""

    status_code = 403
    error_type = "invalid_request_error"
    code = "insufficient_permissions"


class ModelNotAllowed(PermissionDenied):
    """The key's model allow-list does not name the requested model or route."""

    code = "model_not_allowed"


class NotFound(GroupQwenError):
    """Something the path names does not exist (a review dataset, a conversation in it)."""

    status_code = 404
    error_type = "invalid_request_error"
    code = "not_found"


class ModelNotFound(GroupQwenError):
    """The requested model is not in the catalog. Never silently substituted."""

    status_code = 404
    error_type = "invalid_request_error"
    code = "model_not_found"


class ResumeExpired(GroupQwenError):
    """A WebSocket ``resume`` named a generation that is gone: its resume window passed, its buffer filled
    while nobody read it, or its frames after the client's ``after_seq`` are no longer kept. Ask again."""

    status_code = 410
    error_type = "invalid_request_error"
    code = "resume_expired"


class TooManyGenerations(GroupQwenError):
    """A WebSocket asked for more generations at once than ``ws.max_generations``; the others go on."""

    status_code = 429
    error_type = "rate_limit_error"
    code = "too_many_generations"


class Overloaded(GroupQwenError):
    """Too many requests are queued for a model; the client should retry after ``retry_after`` seconds."""

    status_code = 503
    error_type = "server_error"
    code = "overloaded"

    def __init__(self, message: str, *, retry_after: int = 1, param: str | None = None) -> None:
        super().__init__(message, param=param)
        self.retry_after = retry_after

    def headers(self) -> dict[str, str]:
        return {"Retry-After": str(self.retry_after)}


class RateLimited(GroupQwenError):
    """A key's or tenant's rate limit is reached (``limits:``). ``error_type`` says which kind, as OpenAI's
    does (``requests``: requests per minute or concurrent requests; ``tokens``: tokens per minute);
    ``limit_headers`` are the ``x-ratelimit-*`` headers, sent with ``Retry-After`` (seconds, rounded up)
    and ``retry-after-ms`` (which the ``openai`` SDK reads first)."""

    status_code = 429
    error_type = "requests"
    code = "rate_limit_exceeded"

    def __init__(
        self, message: str, *, kind: str, retry_after_s: float, limit_headers: dict[str, str]
    ) -> None:
        super().__init__(message)
        self.error_type = kind
        self.retry_after_s = retry_after_s
        self.limit_headers = limit_headers

    def headers(self) -> dict[str, str]:
        return {
            **self.limit_headers,
            "retry-after": str(max(1, math.ceil(self.retry_after_s))),
            "retry-after-ms": str(max(1, math.ceil(self.retry_after_s * 1000))),
        }


class LimitsUnavailable(GroupQwenError):
    """The rate limits' Redis is down and ``limits.on_redis_down`` is ``closed``: limited requests wait."""

    status_code = 503
    error_type = "server_error"
    code = "limits_unavailable"

    def __init__(self, message: str, *, retry_after_s: float) -> None:
        super().__init__(message)
        self.retry_after_s = retry_after_s

    def headers(self) -> dict[str, str]:
        return {"retry-after": str(max(1, math.ceil(self.retry_after_s)))}


class BackendError(GroupQwenError):
    """The model backend failed while serving a request."""

    status_code = 502
    error_type = "api_error"
    code: str | None = "backend_error"


class ModelLoadError(BackendError):
    """A model could not be loaded (missing file, corrupt GGUF, …)."""

    code = "model_load_failed"


class UpstreamError(BackendError):
    """A model's server (``backend: openai_http``) refused the request: its HTTP status and error passed
    through as it sent them (a 400 for a bad parameter; a 429 or 5xx when no replica could answer),
    ``Retry-After`` included. Not for its 401, 403 or 404, which say the gateway's configuration is wrong
    (a ``BackendError``, 502)."""

    code: str | None = None  # the server's, set per instance
    passed_through = True

    def __init__(
        self,
        message: str,
        *,
        status: int,
        error_type: str | None,
        code: str | None,
        param: str | None = None,
        retry_after: int | None = None,
    ) -> None:
        super().__init__(message, param=param)
        self.status_code = status
        self.error_type = error_type or ("invalid_request_error" if status < 500 else "api_error")
        self.code = code  # the server's (``backend_error`` would name ours)
        self.retry_after = retry_after

    def headers(self) -> dict[str, str]:
        return {} if self.retry_after is None else {"Retry-After": str(self.retry_after)}


class ConfigError(GroupQwenError):
    """The configuration is invalid; ``errors`` holds ``(field, message)`` pairs."""

    code = "config_error"

    def __init__(self, errors: list[tuple[str, str]]) -> None:
        self.errors = errors
        super().__init__("; ".join(f"{field}: {msg}" for field, msg in errors))


class InsufficientMemory(GroupQwenError):
    """A model does not fit the memory budget even after evicting every idle model."""

    status_code = 503
    error_type = "server_error"
    code = "insufficient_memory"


class InsufficientStorage(GroupQwenError):
    """The disk that holds ``data_dir`` is full (or over quota): what a request would have written was not,
    and what was there before is intact."""

    status_code = 507
    error_type = "server_error"
    code = "insufficient_storage"


class CacheUnavailable(GroupQwenError):
    """The cache's store or embedder did not answer in time or at all. A chat request then bypasses the
    cache (it never fails because of it); the cache's own routes (stats, invalidate, clear) answer 503."""

    status_code = 503
    error_type = "server_error"
    code = "cache_unavailable"


class CacheSlow(CacheUnavailable):
    """The cache's store is alive but did not answer within its timeout (a busy host, a slow command):
    that request bypasses the cache, and the store is not taken for down unless the slowness persists."""

    code = "cache_slow"


class EmbedderUnavailable(CacheUnavailable):
    """A remote embedder failed (unreachable, slow, an error status, a malformed answer): the cache is
    bypassed, and ``/v1/embeddings`` answers 503."""

    code = "embedder_unavailable"


class TelemetryUnavailable(GroupQwenError):
    """The telemetry database cannot be read (down, unreachable, too slow): ``/v1/metrics?source=store``
    answers 503. Requests are not affected (their records wait in the writer's buffer), and the summary
    from memory (``source=memory``) still answers."""

    status_code = 503
    error_type = "server_error"
    code = "telemetry_unavailable"


class KeysUnavailable(GroupQwenError):
    """``auth: keys`` and the database that holds the keys cannot be read: a key not seen recently cannot be
    checked (keys seen within ``auth.key_stale_s`` keep working)."""

    status_code = 503
    error_type = "server_error"
    code = "keys_unavailable"

    def headers(self) -> dict[str, str]:
        return {"Retry-After": "5"}


class ResponsesUnavailable(GroupQwenError):
    """``responses.redis_url`` is set and that Redis cannot be reached: a stored response cannot be read
    (``previous_response_id``, ``GET /v1/responses/{id}``). New answers are still given; one that could not
    be stored says so in the log."""

    status_code = 503
    error_type = "server_error"
    code = "responses_unavailable"

    def headers(self) -> dict[str, str]:
        return {"Retry-After": "5"}


class DownloadError(GroupQwenError):
    """Model weights could not be fetched (unreachable host, bad status, size or checksum mismatch)."""

    code = "download_failed"


class TrainingUnavailable(GroupQwenError):
    """Training cannot run here: the ``train`` extra (torch, transformers, peft) or, for the GPU path,
    CUDA and Unsloth are missing; the message says what to install."""

    status_code = 503
    error_type = "server_error"
    code = "training_unavailable"


class ModelBusy(GroupQwenError):
    """An admin action needs the model idle, and it is serving requests."""

    status_code = 409
    error_type = "invalid_request_error"
    code = "model_busy"


class InUse(GroupQwenError):
    """What a request would delete is still needed (a file a queued or running job trains on, a fine-tuned
    model the configuration names); the message says by what."""

    status_code = 409
    error_type = "invalid_request_error"
    code = "in_use"


class FinetuneError(GroupQwenError):
    """Base class of the data pipeline's errors: the input is at fault, hence a 400."""

    status_code = 400
    error_type = "invalid_request_error"
    code = "finetune_error"


class InvalidExport(FinetuneError):
    """A file is not a readable chat export (wrong format, not JSON, truncated before any conversation)."""

    code = "invalid_export"


class UnsafeArchive(FinetuneError):
    """A ZIP archive is refused: a path escapes the work folder, or it is too big or has too many files."""

    code = "unsafe_archive"


class InvalidRecords(FinetuneError):
    """A stage file (conversations JSONL, decisions JSONL) has a bad line; the message names the line."""

    code = "invalid_records"
