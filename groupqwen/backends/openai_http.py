"""A model served by OpenAI-compatible servers (vLLM, llama-server, Ollama, llama-cpp-python's server).

One pooled HTTP/1.1 client (``backends/http1.py``: asyncio and llhttp) reaches all of ``spec.urls`` (the
replicas): less CPU per request than aiohttp, itself a seventh of httpx's (bench/proxy.py). A request goes to
the healthy replica with the fewest outstanding requests (ties: round robin). A replica is unhealthy while the
active check (``GET {url}/models`` every ``health_interval``) fails, and for ``eject_seconds`` after a connect
error, a timeout, a 502, 503 or 504, or a 500 that another replica then answered the same request without
(passive health); when none is healthy, all are tried.

A request the client streams is streamed from the server; one it reads whole (JSON) is asked for whole
(``stream: false``: the server's own usage, one read of one JSON body, within ``models.<id>.
answer_timeout_s``), and read as a stream of one chunk (a server that streams all the same is read as a
stream).

A failure before the first token (connect error, 5xx, 429, no token within ``first_token_timeout``, a
stream that ends empty) is retried on another replica, each at most once; when all fail, the last answer
a server gave (``UpstreamError``: its status, type, code, message and ``Retry-After``, a 429 or 503
included, as a client of that server would get it) if any answered, else ``BackendError`` naming each
replica and its reason. A 429 does not eject its replica (the server is up, and limits its load; ejecting
it would move its load to the others); a 502, 503 or 504 does. A 500 is the server's answer to this
request: it ejects its replica only once another replica has answered the same request (the fault was the
server's); a 500 from every replica tried is the request's (llama-cpp-python answers a bad
``json_schema`` so), and ejects none: one bad request must not take the replicas out in turn. After the
first token a failure (connection lost, nothing for ``idle_timeout``) raises ``BackendError``. A 400 that
says the context is exceeded raises ``ContextLengthExceeded``; other 4xx pass through as
``UpstreamError``, never retried, except 401, 403 and 404: the gateway's key, URL or model name is wrong,
a ``BackendError`` (502) that says so. Closing the stream early closes the HTTP response: the server
stops generating.

Logprobs are asked for when the client or the cascade (to score an answer) wants them (llama-cpp-python's
server needs ``--logits_all true``). ``delta.reasoning_content`` (vLLM's reasoning parser) is re-wrapped as
``<think>…</think>`` text, split by the pipeline like a model's own tags. Usage is the whole answer's, or a
stream's ``include_usage`` chunk; without one (llama-cpp-python) ``completion_tokens`` counts the logprob
entries (or text deltas) and ``prompt_tokens`` is 0. Images (``image_url`` parts) are forwarded as the
client sent them, in order with the text parts; the server fetches or decodes them (vLLM serving
Qwen3-VL). Which URLs get this far is the API's decision (``images:`` in the settings,
``api/schemas/images.py``). Tools, tool choice, calls and results go to the server as the client sent
them, and its calls (``delta.tool_calls``) come back as they stream; the server parses its model's calls
(vLLM's tool parser, llama-server ``--jinja``).
"""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import AsyncGenerator, Mapping
from contextlib import aclosing, suppress
from typing import Any

import orjson

from groupqwen import log
from groupqwen.backends.base import map_backend_errors
from groupqwen.backends.http1 import ConnectError, HTTPClient, HTTPClientError, InvalidURL, Response
from groupqwen.backends.openai_request import request_body
from groupqwen.backends.openai_sse import (
    MAX_MESSAGE,
    SseSplitter,
    StreamIncomplete,
    StreamParser,
    message_of,
)
from groupqwen.catalog import ModelSpec
from groupqwen.errors import (
    BackendError,
    ContextLengthExceeded,
    GroupQwenError,
    ModelLoadError,
    UpstreamError,
)
from groupqwen.messages import Chunk, GenerationRequest, ReplicaState

_log = log.get(__name__)

KEEP_ALIVE_S = 4.0
_CONTEXT_EXCEEDED = re.compile(r"context[ _-]?(length|size|window)|maximum context|exceed_context", re.I)


class _Replica:
    def __init__(self, index: int, url: str) -> None:
        self.index, self.url = index, url.rstrip("/")
        self.outstanding = self.served = self.failures = 0
        self.down = False  # the active check failed and has not passed since
        self.ejected_until = 0.0  # monotonic: passive ejection
        self.last_error: str | None = None

    def healthy(self, now: float) -> bool:
        return not self.down and now >= self.ejected_until

    def state(self, now: float) -> ReplicaState:
        left = round(max(0.0, self.ejected_until - now), 3)
        counts = (self.outstanding, self.served, self.failures)
        return ReplicaState(self.url, self.healthy(now), *counts, self.last_error, left)


class _Retry(BackendError):
    """An attempt failed before its first token: try another replica. It never leaves ``stream``; being a
    ``BackendError`` lets it through ``map_backend_errors``."""

    def __init__(self, reason: str, *, upstream: UpstreamError | None = None) -> None:
        super().__init__(reason)
        self.reason, self.upstream = reason, upstream  # the server's own error, when it answered one


class OpenAIHTTPBackend:
    """``spec.urls`` (base URLs ending in ``/v1``) serving ``spec.remote_model or spec.id``."""

    def __init__(
        self,
        spec: ModelSpec,
        *,
        connect_timeout: float = 5.0,
        first_token_timeout: float = 60.0,
        idle_timeout: float = 30.0,
        eject_seconds: float = 10.0,
        health_interval: float = 5.0,
        health_timeout: float = 2.0,
    ) -> None:
        if not spec.urls:
            raise ModelLoadError(f"model {spec.id!r}: backend 'openai_http' needs at least one URL")
        self.model_id, self.spec, self.remote_model = spec.id, spec, spec.remote_model or spec.id
        self.connect_timeout, self.first_token_timeout = connect_timeout, first_token_timeout
        self.idle_timeout, self.eject_seconds = idle_timeout, eject_seconds
        self.health_interval, self.health_timeout = health_interval, health_timeout
        self.answer_timeout = spec.answer_timeout_s
        self._replicas = [_Replica(i, url) for i, url in enumerate(spec.urls)]
        self._rr = 0
        self._client: HTTPClient | None = None
        self._health: asyncio.Task[None] | None = None

    async def load(self) -> None:
        """Check every replica once, then every ``health_interval``; ``ModelLoadError`` if none answers."""
        if self._health is not None:
            return
        with map_backend_errors(self.model_id, ModelLoadError):
            if self._client is None or self._client.closed:
                self._client = self._new_client()
            await self._check_all()
        if all(r.down for r in self._replicas):
            reasons = "; ".join(f"{r.url}: {r.last_error}" for r in self._replicas)
            await self.close()
            raise ModelLoadError(f"model {self.model_id!r}: no replica answers ({reasons})")
        self._health = asyncio.get_running_loop().create_task(self._health_loop())
        healthy = sum(not r.down for r in self._replicas)
        _log.info("http backend ready", model=self.model_id, healthy=healthy, replicas=len(self._replicas))

    async def close(self) -> None:
        """Stop the health checks and close the connections (idempotent)."""
        task, self._health = self._health, None
        if task is not None:
            task.cancel()
            with suppress(asyncio.CancelledError):
                await task
        if self._client is not None:
            await self._client.close()

    def replicas(self) -> tuple[ReplicaState, ...]:
        """Each replica's health and counters, in ``spec.urls`` order."""
        return tuple(r.state(time.monotonic()) for r in self._replicas)

    def _new_client(self) -> HTTPClient:
        """The client enforces the TCP connect's timeout; ``_attempt`` the wait for a free connection and
        the first-token and whole-answer deadlines, ``_events`` the idle one, ``_check`` the health
        check's."""
        connections = self.spec.max_parallel + len(self._replicas)  # the requests + a health check each
        headers = {"User-Agent": "groupqwen"}
        if self.spec.api_key:
            headers["Authorization"] = f"Bearer {self.spec.api_key}"
        # idle connections closed before servers close theirs (uvicorn's default: 5 s, as vLLM serves)
        return HTTPClient(
            limit=connections, keepalive=KEEP_ALIVE_S, connect_timeout=self.connect_timeout, headers=headers
        )

    # -- health --------------------------------------------------------------------------------------------

    async def _health_loop(self) -> None:
        while True:
            await asyncio.sleep(self.health_interval)
            await self._check_all()

    async def _check_all(self) -> None:
        await asyncio.gather(*(self._check(r) for r in self._replicas))

    async def _check(self, replica: _Replica) -> None:
        assert self._client is not None
        try:
            async with asyncio.timeout(self.health_timeout):
                response = await self._client.request("GET", f"{replica.url}/models")
                try:
                    await response.read()
                finally:
                    response.release()
            if response.status >= 400:
                raise HTTPClientError(f"HTTP {response.status} {response.reason}".rstrip())
        except InvalidURL:
            raise  # a URL no request can use: not a replica that is down
        except (HTTPClientError, TimeoutError) as exc:
            if isinstance(exc, TimeoutError) and any(r.outstanding for r in self._replicas):
                # not down: llama-cpp-python's server answers /models only between generations, and the
                # connections may all be busy with requests
                return
            if not replica.down:
                _log.warning("replica down", model=self.model_id, url=replica.url, error=_describe(exc))
            replica.down, replica.last_error = True, _describe(exc)
            return
        if replica.down:
            _log.info("replica back", model=self.model_id, url=replica.url)
        replica.down = False

    def _eject(self, replica: _Replica, reason: str) -> None:
        replica.ejected_until = time.monotonic() + self.eject_seconds
        _log.warning("replica ejected", model=self.model_id, url=replica.url, error=reason)

    def _pick(self, tried: set[int], panic: bool) -> _Replica | None:
        now = time.monotonic()
        free = [r for r in self._replicas if r.index not in tried and (panic or r.healthy(now))]
        if not free:
            return None
        count = len(self._replicas)
        best = min(free, key=lambda r: (r.outstanding, (r.index - self._rr) % count))
        self._rr = (best.index + 1) % count
        return best

    # -- streaming -----------------------------------------------------------------------------------------

    async def stream(self, request: GenerationRequest) -> AsyncGenerator[Chunk, None]:
        client = self._client
        if client is None or client.closed or self._health is None:
            raise BackendError(f"model {self.model_id!r} is not loaded")
        body = request_body(request, self.remote_model)
        streamed = bool(body["stream"])
        loop = asyncio.get_running_loop()
        tried: set[int] = set()
        failures: list[tuple[_Replica, _Retry]] = []
        faulted: list[_Replica] = []  # answered this request with a 500: ejected once another one serves it
        panic = not any(r.healthy(time.monotonic()) for r in self._replicas)
        while (replica := self._pick(tried, panic)) is not None:
            tried.add(replica.index)
            replica.outstanding += 1
            parser = StreamParser(request.top_logprobs)
            deadline = loop.time() + (self.first_token_timeout if streamed else self.answer_timeout)
            try:
                answer = await self._attempt(client, replica, body, deadline, parser)
                if isinstance(answer, list):  # a whole answer: its chunks at once, no reader of its own
                    for chunk in answer:
                        self._serving(replica, faulted, chunk)
                        yield chunk
                    return
                async with aclosing(self._events(answer, parser, replica, deadline, streamed)) as chunks:
                    async for chunk in chunks:
                        self._serving(replica, faulted, chunk)
                        yield chunk
                return
            except BackendError as exc:
                replica.failures += 1
                replica.last_error = exc.message[:MAX_MESSAGE]
                if not isinstance(exc, _Retry):
                    raise
                failures.append((replica, exc))
                if exc.upstream is not None and exc.upstream.status_code == 500:
                    faulted.append(replica)
                _log.info("retrying on another replica", model=self.model_id, url=replica.url, error=exc)
            finally:
                replica.outstanding -= 1
        raise self._all_failed(failures)

    def _serving(self, replica: _Replica, faulted: list[_Replica], chunk: Chunk) -> None:
        """``replica`` serves this request (``chunk`` about to be yielded)."""
        while faulted:  # this request can be served: their 500s were their own fault
            self._eject(faulted.pop(), "HTTP 500 to a request another replica answered")
        if chunk.finish_reason is not None:  # counted before the consumer may stop reading
            replica.served += 1
            replica.down = False  # it just served a request

    def _all_failed(self, failures: list[tuple[_Replica, _Retry]]) -> GroupQwenError:
        reasons = "; ".join(f"{replica.url}: {exc.reason}" for replica, exc in failures)
        answers = [exc.upstream for _, exc in failures if exc.upstream is not None]
        if answers:
            _log.warning("no replica could serve the request", model=self.model_id, errors=reasons)
            return answers[-1]  # as the server said it
        return BackendError(f"model {self.model_id!r}: no replica could serve the request ({reasons})")

    async def _attempt(
        self,
        client: HTTPClient,
        replica: _Replica,
        body: dict[str, Any],
        deadline: float,
        parser: StreamParser,
    ) -> Response | list[Chunk]:
        """One request to one replica, before ``deadline``: a whole answer's chunks (``stream: false``; a
        coroutine, not an async generator: nothing streams), or the response whose events ``_events``
        reads (a server that streams whatever it is asked is read as a stream). A failure raises
        ``_Retry``."""
        streamed = bool(body["stream"])
        url = f"{replica.url}/completions" if "prompt" in body else f"{replica.url}/chat/completions"
        headers = _STREAM_HEADERS if streamed else _JSON_HEADERS
        with map_backend_errors(self.model_id):
            try:
                async with asyncio.timeout_at(deadline):
                    response = await client.request("POST", url, body=orjson.dumps(body), headers=headers)
                    if response.status < 400 and (streamed or response.content_type == "text/event-stream"):
                        return response  # released by ``_events``
                    try:
                        whole = await response.read()
                    finally:
                        response.release()
                if response.status >= 400:
                    raise self._http_error(replica, response, whole)
                return parser.answer(whole)
            except StreamIncomplete as exc:
                raise _Retry(str(exc)) from exc
            except (HTTPClientError, TimeoutError) as exc:
                raise self._lost(replica, exc, False, streamed) from exc

    async def _events(
        self, response: Response, parser: StreamParser, replica: _Replica, deadline: float, streamed: bool
    ) -> AsyncGenerator[Chunk, None]:
        """A streamed answer's chunks, its first before ``deadline``, then none more than ``idle_timeout``
        apart; a failure before the first raises ``_Retry``. The response released, or closed if not read
        to its end, however this ends."""
        loop = asyncio.get_running_loop()
        splitter, piece, held, started = SseSplitter(), b"-", list[Chunk](), False
        with map_backend_errors(self.model_id):
            try:
                while piece:  # to the end of the body, so that the connection can be reused
                    try:  # what has arrived (a burst, the body's end) is taken without a timer
                        piece = response.read_nowait()
                        if not piece and not response.at_eof():
                            when = loop.time() + self.idle_timeout if started else deadline
                            async with asyncio.timeout_at(when):  # one timer per wait, not per event
                                piece = await response.readany()
                    except (TimeoutError, HTTPClientError):
                        if parser.done:
                            break
                        raise
                    chunks = parser.read(splitter.feed(piece) if piece else splitter.end())
                    if parser.done:  # [DONE] read: what came with it goes out with the end
                        held += chunks
                        continue
                    for chunk in chunks:
                        started = True
                        yield chunk
                last = held.pop() if held else None
                for chunk in (*held, *parser.finish(last)):
                    yield chunk
            except StreamIncomplete as exc:
                if started:
                    raise BackendError(f"model {self.model_id!r}: {replica.url}: {exc}") from exc
                raise _Retry(str(exc)) from exc
            except (HTTPClientError, TimeoutError) as exc:
                raise self._lost(replica, exc, started, streamed) from exc
            finally:
                response.release()

    def _lost(self, replica: _Replica, exc: BaseException, started: bool, streamed: bool) -> BackendError:
        """A connection lost or a deadline passed: the replica is ejected, and before the first token
        another one is tried (``_Retry``)."""
        reason = _describe(exc, started, self.first_token_timeout, self.idle_timeout)
        if not streamed and isinstance(exc, TimeoutError):
            reason = f"no answer within {self.answer_timeout:g} s"
        self._eject(replica, reason)
        if started:
            return BackendError(f"model {self.model_id!r}: {replica.url}: {reason}")
        return _Retry(reason)

    def _http_error(self, replica: _Replica, response: Response, body: bytes) -> GroupQwenError:
        """The server's error as the client should see it: passed through (``UpstreamError``; 429 and 5xx
        tried on another replica first), a 400 for a prompt that does not fit ``ContextLengthExceeded``,
        and 401, 403 and 404 the gateway's configuration's fault (a 502)."""
        status, text = response.status, body.decode(errors="replace")
        try:
            parsed = orjson.loads(body)
            message = message_of(parsed)
        except orjson.JSONDecodeError:
            parsed, message = None, text[:MAX_MESSAGE] or response.reason or f"HTTP {status}"
        error = parsed.get("error") if isinstance(parsed, dict) else None
        fields = error if isinstance(error, dict) else parsed if isinstance(parsed, dict) else {}
        if status in (401, 403, 404):
            setting = "api_key" if status != 404 else "urls and remote_model"
            return BackendError(
                f"model {self.model_id!r}: {replica.url} answered HTTP {status} ({message[:MAX_MESSAGE]}): "
                f"the gateway's configuration is wrong; check models.{self.model_id}.{setting}"
            )
        upstream = UpstreamError(
            message,
            status=status,
            error_type=_text(fields.get("type")),
            code=_text(fields.get("code")),
            param=_text(fields.get("param")),
            retry_after=_retry_after(response.headers),
        )
        if status == 429 or status >= 500:
            if status > 500:  # a 500 is decided by the other replicas' answers (``stream``)
                self._eject(replica, f"HTTP {status}")
            return _Retry(f"HTTP {status}: {message[:MAX_MESSAGE]}", upstream=upstream)
        if status == 400 and _CONTEXT_EXCEEDED.search(text[:2000]):
            return ContextLengthExceeded(message, param="messages")
        return upstream


_STREAM_HEADERS = {"Content-Type": "application/json", "Accept": "text/event-stream"}
_JSON_HEADERS = {"Content-Type": "application/json", "Accept": "application/json"}


def _text(value: Any) -> str | None:
    return value if isinstance(value, str) and value else None


def _retry_after(headers: Mapping[str, str]) -> int | None:
    value = headers.get("retry-after", "")
    return max(1, int(value)) if value.isdigit() else None


def _describe(exc: BaseException, started: bool = False, first: float = 0.0, idle: float = 0.0) -> str:
    if isinstance(exc, TimeoutError):
        return f"no data for {idle:g} s" if started else f"no first token within {first:g} s"
    if isinstance(exc, ConnectError):
        return f"connection failed: {exc}" if str(exc) else "connection failed"
    return f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
