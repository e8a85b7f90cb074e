"""The ``openai_http`` backend against real servers.

Two replicas of llama-cpp-python's own OpenAI-compatible server (SmolLM2-135M, one thread each) serve the
normal paths; failures come from small raw-socket servers on loopback that misbehave on purpose (hang,
drop the connection after one chunk, answer 4xx/5xx, stream ``reasoning_content``).
"""

from __future__ import annotations

import asyncio
import json
import threading
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import aclosing, asynccontextmanager
from dataclasses import dataclass, field, replace
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi.testclient import TestClient
from servers import ALIAS, LlamaServer, free_port

from groupqwen.api.app import create_app
from groupqwen.backends.base import Backend
from groupqwen.backends.http1 import InvalidURL
from groupqwen.backends.openai_http import OpenAIHTTPBackend
from groupqwen.catalog import ModelSpec, builtin_catalog
from groupqwen.config import Settings, load_settings
from groupqwen.errors import BackendError, ContextLengthExceeded, ModelLoadError, UpstreamError
from groupqwen.messages import Chunk, GenerationRequest, ImagePart, Message, ResponseFormat, Sampling, Usage
from groupqwen.orchestrator.thinking import ThinkSplitter

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def servers() -> Iterator[list[LlamaServer]]:
    from groupqwen.pool.bundled import ensure_bundled

    model = ensure_bundled(builtin_catalog()["smollm2-135m"], Settings().models_dir)
    with LlamaServer(model).serving() as one, LlamaServer(model).serving() as two:
        yield [one, two]


def spec_for(*urls: str, max_parallel: int = 4, api_key: str | None = None) -> ModelSpec:
    return replace(
        builtin_catalog()["smollm2-135m"],
        backend="openai_http",
        urls=urls,
        remote_model=ALIAS,
        max_parallel=max_parallel,
        api_key=api_key,
    )


@asynccontextmanager
async def loaded(*urls: str, **options: float) -> AsyncIterator[OpenAIHTTPBackend]:
    backend = OpenAIHTTPBackend(spec_for(*urls), **options)
    await backend.load()
    try:
        yield backend
    finally:
        await backend.close()


def ask(
    text: str = "Say hi", max_tokens: int = 4, top_logprobs: int = 0, seed: int | None = None, **kw: object
) -> GenerationRequest:
    return GenerationRequest(
        messages=(Message("user", text),),
        sampling=Sampling(temperature=0.0, max_tokens=max_tokens, seed=seed),
        top_logprobs=top_logprobs,
        **kw,  # type: ignore[arg-type]
    )


def warm(server: LlamaServer, text: str = "Say hi") -> None:
    """``text`` answered once, asked directly: llama-cpp-python keeps the KV cache of the last prompt it
    evaluated, and a prompt not in it (a fresh server's first one too) costs a one-thread server 1 to 20 s
    on a busy machine, against 0.1 to 0.3 s for one that is."""
    request = {"model": ALIAS, "messages": [{"role": "user", "content": text}], "max_tokens": 1}
    httpx.post(f"{server.url}/chat/completions", json=request, timeout=300).raise_for_status()


async def collect(backend: Backend, request: GenerationRequest) -> list[Chunk]:
    async with aclosing(backend.stream(request)) as chunks:
        return [chunk async for chunk in chunks]


# ---------------------------------------------------------------------------------------------------------
# A raw HTTP/1.1 server that misbehaves on purpose. GET …/models answers 200 (so it passes health checks);
# POST …/chat/completions runs ``handler``.

Handler = Callable[["Exchange"], Awaitable[None]]


@dataclass
class Exchange:
    headers: dict[str, str]
    body: dict[str, object]
    reader: asyncio.StreamReader
    writer: asyncio.StreamWriter

    async def send_head(self, status: int = 200) -> None:
        self.writer.write(
            f"HTTP/1.1 {status} X\r\ncontent-type: text/event-stream\r\ntransfer-encoding: chunked\r\n"
            "connection: close\r\n\r\n".encode()
        )
        await self.writer.drain()

    async def send_event(self, payload: object) -> None:
        await self.send_events([payload])

    async def send_events(self, payloads: list[object], *, last: bool = False) -> None:
        """``payloads`` as events in one chunk, one write (``last``: the body's end in it too)."""
        data = b"".join(
            ("data: " + (p if isinstance(p, str) else json.dumps(p)) + "\n\n").encode() for p in payloads
        )
        self.writer.write(f"{len(data):x}\r\n".encode() + data + b"\r\n" + (b"0\r\n\r\n" if last else b""))
        await self.writer.drain()

    async def end(self) -> None:
        self.writer.write(b"0\r\n\r\n")
        await self.writer.drain()

    async def send_json(self, status: int, body: object, extra: str = "") -> None:
        data = json.dumps(body).encode()
        self.writer.write(
            f"HTTP/1.1 {status} X\r\ncontent-type: application/json\r\ncontent-length: {len(data)}\r\n"
            f"connection: close\r\n{extra}\r\n".encode()
            + data
        )
        await self.writer.drain()


@dataclass
class RawServer:
    """Answers each POST with ``handler`` and then closes the connection."""

    handler: Handler
    requests: list[Exchange] = field(default_factory=list)
    disconnected: asyncio.Event = field(default_factory=asyncio.Event)
    port: int = 0
    server: asyncio.Server | None = None
    tasks: set[asyncio.Task[None]] = field(default_factory=set)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    async def start(self, port: int = 0) -> RawServer:
        self.server = await asyncio.start_server(self._serve, "127.0.0.1", port)
        self.port = self.server.sockets[0].getsockname()[1]
        return self

    async def stop(self) -> None:
        assert self.server is not None
        self.server.close()
        for task in self.tasks:
            task.cancel()
        await asyncio.gather(*self.tasks, return_exceptions=True)
        await self.server.wait_closed()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self.tasks.add(task)
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                lines = head.decode().split("\r\n")
                method = lines[0].split(" ", 1)[0]
                headers = {k.lower(): v.strip() for k, _, v in (x.partition(":") for x in lines[1:] if x)}
                raw = await reader.readexactly(int(headers.get("content-length", "0")))
                if method == "GET":
                    data = b'{"object":"list","data":[{"id":"smollm2","object":"model"}]}'
                    writer.write(b"HTTP/1.1 200 OK\r\ncontent-length: %d\r\n\r\n%s" % (len(data), data))
                    await writer.drain()
                    continue
                exchange = Exchange(headers, json.loads(raw), reader, writer)
                self.requests.append(exchange)
                await self.handler(exchange)
                return
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            self.tasks.discard(task)
            writer.close()
            self.disconnected.set()


@asynccontextmanager
async def raw_server(handler: Handler, port: int = 0) -> AsyncIterator[RawServer]:
    server = await RawServer(handler).start(port)
    try:
        yield server
    finally:
        await server.stop()


def token_event(text: str, logprob: float = -0.5) -> dict[str, object]:
    entry = {"token": text, "logprob": logprob, "bytes": list(text.encode()), "top_logprobs": []}
    return {"choices": [{"index": 0, "delta": {"content": text}, "logprobs": {"content": [entry]}}]}


async def hang(exchange: Exchange) -> None:
    await asyncio.sleep(3600)


async def one_chunk_then_drop(exchange: Exchange) -> None:
    await exchange.send_head()
    await exchange.send_event(token_event("Hel"))
    exchange.writer.transport.abort()


async def one_chunk_then_hold(exchange: Exchange) -> None:
    await exchange.send_head()
    await exchange.send_event(token_event("Hel"))
    await exchange.reader.read()  # nothing more until the client goes away


# ---------------------------------------------------------------------------------------------------------
# Against the real llama.cpp servers


async def test_streams_with_logprobs_and_usage(servers: list[LlamaServer]) -> None:
    async with loaded(servers[0].url) as backend:
        assert isinstance(backend, Backend)
        chunks = await collect(backend, ask(max_tokens=5, top_logprobs=2))
    *tokens, last = chunks
    assert tokens and all(c.text for c in tokens)
    logprobs = [lp for c in tokens for lp in c.logprobs]
    assert len(logprobs) == 5  # one per generated token
    assert all(lp.logprob <= 0 and lp.bytes == tuple(lp.token.encode()) for lp in logprobs)
    assert all(len(lp.top) == 2 and lp.top[0].logprob >= lp.top[1].logprob for lp in logprobs)
    assert "".join(lp.token for lp in logprobs) == "".join(c.text for c in tokens)
    # llama-cpp-python sends no usage chunk: tokens are counted from the logprob entries, prompt as 0
    assert last.finish_reason == "length" and last.usage == Usage(0, 5)
    assert not last.text and not last.logprobs


async def test_a_raw_prompt_is_a_text_completion_upstream(servers: list[LlamaServer]) -> None:
    """``raw_prompt``: the server's ``/completions`` continues the text as written, with legacy logprobs."""
    async with loaded(servers[0].url) as backend:
        chunks = await collect(
            backend, ask("The capital of France is", max_tokens=4, top_logprobs=2, raw_prompt=True)
        )
        chat = await collect(backend, ask("The capital of France is", max_tokens=4))
    *tokens, last = chunks
    text = "".join(c.text for c in tokens)
    logprobs = [lp for c in tokens for lp in c.logprobs]
    assert text and "".join(lp.token for lp in logprobs) == text
    assert len(logprobs) == 4 and all(lp.logprob <= 0 and len(lp.top) == 2 for lp in logprobs)
    assert last.finish_reason == "length"
    assert text != "".join(c.text for c in chat)  # the chat template would make it an assistant's answer


async def test_non_streaming_answer_is_the_joined_stream(servers: list[LlamaServer]) -> None:
    """What ``Pipeline.complete`` builds: the same text as the stream, with usage; logprobs without
    top alternatives unless asked for."""
    async with loaded(servers[1].url) as backend:
        chunks = await collect(backend, ask("What is 2+2?", max_tokens=6))
        again = await collect(backend, ask("What is 2+2?", max_tokens=6))
    text = "".join(c.text for c in chunks)
    assert text and text == "".join(c.text for c in again)  # temperature 0: deterministic
    assert chunks[-1].usage is not None and chunks[-1].usage.completion_tokens == 6
    assert all(lp.top == () for c in chunks for lp in c.logprobs)


async def test_balances_concurrent_requests_over_both_replicas(servers: list[LlamaServer]) -> None:
    async with loaded(servers[0].url, servers[1].url) as backend:
        results = await asyncio.gather(*(collect(backend, ask(max_tokens=2)) for _ in range(4)))
        states = backend.replicas()
    assert all(r[-1].finish_reason is not None for r in results)
    assert [s.served for s in states] == [2, 2]
    assert all(s.healthy and s.outstanding == 0 and s.failures == 0 for s in states)


async def until_finished(backend: Backend, request: GenerationRequest) -> list[Chunk]:
    """Read as the pipeline does: stop at the chunk with ``finish_reason`` and close the stream."""
    got: list[Chunk] = []
    async with aclosing(backend.stream(request)) as chunks:
        async for chunk in chunks:
            got.append(chunk)
            if chunk.finish_reason is not None:
                break
    return got


async def test_served_counts_answers_read_only_to_their_last_chunk(servers: list[LlamaServer]) -> None:
    """``served`` counted after the generator's end, which a reader that stops at ``finish_reason``
    never reaches: it read 0 after a thousand answers through the gateway."""
    async with loaded(servers[0].url, servers[1].url) as backend:
        for _ in range(4):
            assert (await until_finished(backend, ask(max_tokens=2)))[-1].finish_reason == "length"
        states = backend.replicas()
    assert [s.served for s in states] == [2, 2]
    assert all(s.outstanding == 0 and s.failures == 0 for s in states)


def gateway_settings(urls: list[str], tmp_path: Path) -> Settings:
    """A gateway whose one model ``smol`` is served by the OpenAI-compatible servers at ``urls``."""
    remote = {"backend": "openai_http", "urls": urls, "remote_model": ALIAS}
    return load_settings(
        models={"smol": remote},
        models_dir=tmp_path,
        data_dir=tmp_path,
        default_model="smol",
        cache={"backend": "off"},
    )


def test_gateway_models_list_counts_each_replicas_answers(servers: list[LlamaServer], tmp_path: Path) -> None:
    settings = gateway_settings([s.url for s in servers], tmp_path)
    body = {"model": "smol", "messages": [{"role": "user", "content": "Say hi"}], "max_tokens": 2}
    with TestClient(create_app(settings)) as http:
        for stream in (False, False, True, True):
            response = http.post("/v1/chat/completions", json={**body, "stream": stream})
            assert response.status_code == 200, response.text
        (model,) = [m for m in http.get("/v1/models").json()["data"] if m["id"] == "smol"]
    replicas = model["groupqwen"]["replicas"]
    assert [r["url"] for r in replicas] == [s.url for s in servers]
    assert sum(r["served"] for r in replicas) == 4 and all(r["served"] for r in replicas)
    assert all(r["outstanding"] == 0 and r["failures"] == 0 for r in replicas)


async def test_dead_replica_is_ejected_and_requests_still_succeed(servers: list[LlamaServer]) -> None:
    dead = f"http://127.0.0.1:{free_port()}/v1"
    async with loaded(servers[0].url, servers[1].url, dead) as backend:
        assert not backend.replicas()[2].healthy
        for _ in range(3):
            chunks = await collect(backend, ask(max_tokens=2))
            assert chunks[-1].finish_reason == "length"
        states = backend.replicas()
    assert states[2].served == 0 and states[2].failures == 0  # never tried: the health check ejected it
    assert "connection failed" in (states[2].last_error or "")
    assert states[0].served + states[1].served == 3


async def test_closing_the_stream_stops_the_server(servers: list[LlamaServer]) -> None:
    """A client that goes away closes the upstream response: the one-thread server is free again at
    once instead of generating 300 more tokens (≈ 40 s here)."""
    async with loaded(servers[0].url, first_token_timeout=15.0) as backend:
        async with aclosing(backend.stream(ask("Write a long story.", max_tokens=300))) as chunks:
            first = await anext(chunks)
            assert first.text
        assert backend.replicas()[0].outstanding == 0
        after = await collect(backend, ask(max_tokens=2))  # would time out if the server were still busy
    assert after[-1].finish_reason == "length"


async def test_killing_a_replica_during_a_load_run(servers: list[LlamaServer]) -> None:
    """30 requests, 4 at a time (so each one-slot server has one generating and one waiting); one replica
    is killed after 8: every request that had not started streaming succeeds (retried on the other
    replica); only the one cut mid-stream may fail. Both replicas have just answered the run's prompt, so
    that its requests cost them the same: a replica still evaluating a prompt it had not seen (seconds)
    while the other served the first 8 from its KV cache (0.1 s each) was killed having served none."""
    victim = servers[0]
    await asyncio.gather(*(asyncio.to_thread(warm, server) for server in servers))
    outcomes: list[tuple[bool, BaseException | None]] = []  # (had started streaming, error)
    eighth = asyncio.Event()

    async def one(backend: OpenAIHTTPBackend) -> None:
        started = False
        try:
            async with aclosing(backend.stream(ask(max_tokens=2))) as chunks:
                async for chunk in chunks:
                    started = started or bool(chunk.text)
            outcomes.append((started, None))
        except BackendError as exc:
            outcomes.append((started, exc))
        if len(outcomes) == 8:
            eighth.set()

    try:
        async with loaded(victim.url, servers[1].url, health_interval=0.5) as backend:
            todo = list(range(30))

            async def worker() -> None:
                while todo:
                    todo.pop()
                    await one(backend)

            async def killer() -> None:
                await eighth.wait()
                assert backend.replicas()[0].outstanding > 0
                await asyncio.to_thread(victim.kill)

            await asyncio.gather(killer(), *(worker() for _ in range(4)))
            states = backend.replicas()
    finally:
        victim.start()
        victim.wait_ready()
        warm(victim)  # not cold for the next test
    failed = [(started, e) for started, e in outcomes if e is not None]
    assert len(outcomes) == 30
    assert [e for started, e in failed if not started] == []
    assert len(failed) <= 1
    assert states[0].failures > len(failed)  # some request failed there before its first token: retried
    assert not states[0].healthy and states[0].served >= 2 and states[1].served >= 20


def test_a_replica_killed_mid_stream_ends_the_gateways_stream_with_an_error_event(
    servers: list[LlamaServer], tmp_path: Path, live_server: Any
) -> None:
    """Through a real gateway (uvicorn, real sockets): the replica serving a stream is killed (SIGKILL)
    after its first tokens. The client's stream ends cleanly, with an error event then ``[DONE]``, not a
    cut connection; the next request is answered by the other replica."""
    settings = gateway_settings([s.url for s in servers], tmp_path)
    question = "Count from 1 to 500, one number per line."
    body = {"model": "smol", "messages": [{"role": "user", "content": question}], "max_tokens": 600}
    victim: LlamaServer | None = None
    try:
        with live_server(create_app(settings)) as url, httpx.Client(base_url=url, timeout=120) as client:
            with client.stream("POST", "/v1/chat/completions", json={**body, "stream": True}) as response:
                assert response.status_code == 200
                lines = (line for line in response.iter_lines() if line.startswith("data: "))
                first = next(lines)
                assert '"role":"assistant"' in first
                replicas = client.get("/v1/models/smol").json()["groupqwen"]["replicas"]
                (victim,) = [s for s, r in zip(servers, replicas, strict=True) if r["outstanding"] > 0]
                victim.kill()
                rest = list(lines)
            assert rest[-1] == "data: [DONE]"
            error = json.loads(rest[-2].removeprefix("data: "))["error"]
            assert error["code"] == "backend_error" and error["type"] == "api_error", error
            assert all('"error"' not in line for line in rest[:-2])  # the tokens before it were tokens
            again = client.post("/v1/chat/completions", json={**body, "max_tokens": 4})
            assert again.status_code == 200, again.text
    finally:
        if victim is not None:
            victim.start()
            victim.wait_ready()
            warm(victim)  # not cold for the next test


async def test_context_exceeded_on_llama_cpp_python_server(servers: list[LlamaServer]) -> None:
    """llama-cpp-python's server answers a too-long streamed prompt with an empty 200 stream (it cannot
    say 400 once streaming began): every replica is tried, then a ``BackendError`` says so."""
    async with loaded(servers[0].url, servers[1].url) as backend:
        with pytest.raises(BackendError, match="without a finish reason") as info:
            await collect(backend, ask("hello " * 1500))
        assert all(s.healthy for s in backend.replicas())  # not the replicas' fault: none ejected
    assert servers[0].url in str(info.value) and servers[1].url in str(info.value)


# ---------------------------------------------------------------------------------------------------------
# Failures, from servers that misbehave on purpose (with a real llama.cpp replica beside them)


async def answer_at_once(exchange: Exchange) -> None:
    """A replica that answers two tokens as soon as it is asked (no model: nothing a busy machine slows
    past a first-token deadline)."""
    await exchange.send_head()
    for text in ("Hel", "lo"):
        await exchange.send_event(token_event(text))
    await exchange.send_event({"choices": [{"index": 0, "delta": {}, "finish_reason": "length"}]})
    await exchange.send_event("[DONE]")
    await exchange.end()


async def test_first_token_timeout_is_retried_on_another_replica() -> None:
    async with (
        raw_server(hang) as silent,
        raw_server(answer_at_once) as ready,
        loaded(silent.url, ready.url, first_token_timeout=1.0) as backend,
    ):
        chunks = await collect(backend, ask(max_tokens=2))  # round robin starts with the silent one
        states = backend.replicas()
    assert len(silent.requests) == 1 and len(ready.requests) == 1
    assert "".join(c.text for c in chunks) == "Hello" and chunks[-1].finish_reason == "length"
    assert states[0].failures == 1 and not states[0].healthy and states[0].ejected_for > 0
    assert "no first token within 1 s" in (states[0].last_error or "")
    assert states[1].served == 1


async def test_first_token_timeout_everywhere_is_a_backend_error() -> None:
    async with (
        raw_server(hang) as a,
        raw_server(hang) as b,
        loaded(a.url, b.url, first_token_timeout=0.5) as backend,
    ):
        started = time.monotonic()
        with pytest.raises(BackendError) as info:
            await collect(backend, ask())
        elapsed = time.monotonic() - started
    assert a.url in str(info.value) and b.url in str(info.value) and "no first token" in str(info.value)
    assert elapsed < 5


async def test_failure_after_the_first_token_is_a_backend_error(servers: list[LlamaServer]) -> None:
    async with raw_server(one_chunk_then_drop) as dropper, loaded(dropper.url, servers[1].url) as backend:
        received: list[Chunk] = []
        with pytest.raises(BackendError, match=dropper.url):
            async with aclosing(backend.stream(ask())) as chunks:
                async for chunk in chunks:
                    received.append(chunk)
        states = backend.replicas()
    assert [c.text for c in received] == ["Hel"]  # streamed, then failed: not retried
    assert states[1].served == 0 and states[0].failures == 1


async def test_idle_timeout_after_the_first_token() -> None:
    async with raw_server(one_chunk_then_hold) as holder, loaded(holder.url, idle_timeout=0.5) as backend:
        with pytest.raises(BackendError, match=r"no data for 0\.5 s"):
            await collect(backend, ask())


async def test_closing_the_generator_closes_the_upstream_connection() -> None:
    async with raw_server(one_chunk_then_hold) as holder, loaded(holder.url) as backend:
        async with aclosing(backend.stream(ask())) as chunks:
            assert (await anext(chunks)).text == "Hel"
        await asyncio.wait_for(holder.disconnected.wait(), 60.0)  # the close is what counts, not when
        assert backend.replicas()[0].outstanding == 0


async def test_server_errors_are_retried_and_4xx_are_not(servers: list[LlamaServer]) -> None:
    async def unavailable(exchange: Exchange) -> None:
        await exchange.send_json(503, {"error": {"message": "warming up"}})

    # ejected for an hour: the check below must not depend on how long the real server takes to answer
    async with raw_server(unavailable) as bad, loaded(bad.url, servers[1].url, eject_seconds=3600) as backend:
        chunks = await collect(backend, ask(max_tokens=2))
        states = backend.replicas()
    assert chunks[-1].finish_reason == "length"
    assert states[0].ejected_for > 0 and "HTTP 503: warming up" in (states[0].last_error or "")

    async def broken(exchange: Exchange) -> None:
        await exchange.send_json(500, {"error": {"message": "kaput"}})

    # a 500 to a request that another replica then answers: the server's fault, ejected
    async with raw_server(broken) as bad, loaded(bad.url, servers[1].url, eject_seconds=3600) as backend:
        chunks = await collect(backend, ask(max_tokens=2))
        states = backend.replicas()
    assert chunks[-1].finish_reason == "length" and len(bad.requests) == 1
    assert states[0].ejected_for > 0 and "HTTP 500: kaput" in (states[0].last_error or "")

    async def bad_request(exchange: Exchange) -> None:
        await exchange.send_json(400, {"object": "error", "message": "temperature must be >= 0"})

    async with (
        raw_server(bad_request) as a,
        raw_server(bad_request) as b,
        loaded(a.url, b.url) as backend,
    ):
        with pytest.raises(UpstreamError, match=r"^temperature must be >= 0$") as info:
            await collect(backend, ask())
        assert all(s.healthy for s in backend.replicas())
    assert len(a.requests) + len(b.requests) == 1  # not retried
    assert (info.value.status_code, info.value.error_type) == (400, "invalid_request_error")


async def test_the_servers_errors_pass_through_and_its_401_403_404_are_the_gateways(
    servers: list[LlamaServer],
) -> None:
    """A 4xx keeps the server's status, type, code and param; a 500 from every replica is the last one's
    (and ejects none: the request was at fault);
    a 401, 403 or 404 says the gateway's own settings are wrong (502), never retried."""
    error = {"message": "no such tool", "type": "invalid_request_error", "param": "tools", "code": "bad_tool"}

    async def unprocessable(exchange: Exchange) -> None:
        await exchange.send_json(422, {"error": error})

    async with raw_server(unprocessable) as a, loaded(a.url) as backend:
        with pytest.raises(UpstreamError) as info:
            await collect(backend, ask())
    assert (info.value.status_code, info.value.message, info.value.code, info.value.param) == (
        422, "no such tool", "bad_tool", "tools"
    )  # fmt: skip

    async def broken(exchange: Exchange) -> None:
        await exchange.send_json(500, {"error": {"message": "kaput", "type": "internal_server_error"}})

    async with raw_server(broken) as a, raw_server(broken) as b, loaded(a.url, b.url) as backend:
        with pytest.raises(UpstreamError) as info:
            await collect(backend, ask())
        assert all(s.healthy for s in backend.replicas())  # 500 from each: the request's fault, none ejected
    assert (info.value.status_code, info.value.message, info.value.error_type) == (
        500, "kaput", "internal_server_error"
    )  # fmt: skip
    assert len(a.requests) == 1 and len(b.requests) == 1  # tried on each
    for status, setting in ((401, "api_key"), (403, "api_key"), (404, "urls and remote_model")):

        async def refused(exchange: Exchange, status: int = status) -> None:
            await exchange.send_json(status, {"error": {"message": "nope"}})

        async with raw_server(refused) as a, raw_server(refused) as b, loaded(a.url, b.url) as backend:
            with pytest.raises(BackendError) as refusal:
                await collect(backend, ask())
        assert not isinstance(refusal.value, UpstreamError) and refusal.value.status_code == 502
        assert f"HTTP {status} (nope)" in refusal.value.message and setting in refusal.value.message
        assert len(a.requests) + len(b.requests) == 1


async def test_context_length_exceeded_400() -> None:
    """vLLM's and llama-server's answers to a prompt that does not fit."""
    bodies = [
        {"error": {"message": "This model's maximum context length is 2048 tokens. However, you requested "
                   "4000 tokens", "type": "BadRequestError", "code": 400}},
        {"error": {"code": 400, "message": "the request exceeds the available context size, try increasing "
                   "it", "type": "exceed_context_size_error"}},
    ]  # fmt: skip
    for body in bodies:

        async def too_long(exchange: Exchange, body: object = body) -> None:
            await exchange.send_json(400, body)

        async with (
            raw_server(too_long) as a,
            raw_server(too_long) as b,
            loaded(a.url, b.url) as backend,
        ):
            with pytest.raises(ContextLengthExceeded) as info:
                await collect(backend, ask())
        assert info.value.status_code == 400 and info.value.param == "messages"
        assert len(a.requests) + len(b.requests) == 1


async def test_a_429_from_every_replica_reaches_the_client_as_the_server_sent_it() -> None:
    """One replica or two, each answering 429: the client gets the (last) server's own status, type,
    code, message and ``Retry-After``, not the gateway's 503; each replica is asked once, none ejected."""
    error = {"message": "slow down", "type": "rate_limit_error", "code": "rate_limit_exceeded"}

    async def busy(exchange: Exchange) -> None:
        await exchange.send_json(429, {"error": error}, extra="retry-after: 7\r\n")

    async with raw_server(busy) as a, loaded(a.url) as backend:
        with pytest.raises(UpstreamError) as one:
            await collect(backend, ask())
    async with raw_server(busy) as a, raw_server(busy) as b, loaded(a.url, b.url) as backend:
        with pytest.raises(UpstreamError) as two:
            await collect(backend, ask())
        assert all(s.healthy for s in backend.replicas())  # a 429 is not a fault: nobody ejected
    assert len(a.requests) == 1 and len(b.requests) == 1  # retried on the other replica first
    for info in (one, two):
        assert (info.value.status_code, info.value.error_type, info.value.code, info.value.message) == (
            429, "rate_limit_error", "rate_limit_exceeded", "slow down"
        )  # fmt: skip
        assert info.value.headers() == {"Retry-After": "7"}


class _RateLimited(BaseHTTPRequestHandler):
    """A server that lists its model and answers every completion 429 with ``Retry-After``."""

    def log_message(self, *args: Any) -> None:
        return None

    def do_GET(self) -> None:
        self._send(200, b'{"object":"list","data":[{"id":"smollm2","object":"model"}]}')

    def do_POST(self) -> None:
        self.rfile.read(int(self.headers["content-length"]))
        self._send(429, b'{"error":{"message":"slow down","type":"rate_limit_error","code":"rate_limit"}}')

    def _send(self, status: int, data: bytes) -> None:
        self.send_response(status)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(data)))
        if status == 429:
            self.send_header("retry-after", "7")
        self.end_headers()
        self.wfile.write(data)


def test_the_gateways_client_gets_the_servers_429(tmp_path: Path) -> None:
    """Through the API, streamed or not: the server's 429, its error object and ``Retry-After``."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), _RateLimited)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        settings = gateway_settings([f"http://127.0.0.1:{server.server_port}/v1"], tmp_path)
        body = {"model": "smol", "messages": [{"role": "user", "content": "Say hi"}], "max_tokens": 2}
        with TestClient(create_app(settings)) as http:
            answers = [http.post("/v1/chat/completions", json={**body, "stream": s}) for s in (False, True)]
    finally:
        server.shutdown()
        server.server_close()
    for answer in answers:
        assert answer.status_code == 429 and answer.headers["retry-after"] == "7"
        assert answer.json()["error"] == {
            "message": "slow down", "type": "rate_limit_error", "param": None, "code": "rate_limit"
        }  # fmt: skip


async def test_the_last_answer_wins_over_a_replica_that_did_not_answer() -> None:
    """A 503 from one replica, a dropped connection from the other (asked second): the server's 503, what
    a client of the servers would get; both ejected (a 5xx and a connection failure are faults)."""

    async def unavailable(exchange: Exchange) -> None:
        await exchange.send_json(503, {"error": {"message": "loading model"}}, extra="retry-after: 3\r\n")

    async def drop(exchange: Exchange) -> None:
        exchange.writer.transport.abort()

    async with (
        raw_server(unavailable) as a,
        raw_server(drop) as b,
        loaded(a.url, b.url, eject_seconds=3600) as backend,
    ):
        with pytest.raises(UpstreamError) as info:
            await collect(backend, ask())
        states = backend.replicas()
    assert (info.value.status_code, info.value.message, info.value.error_type) == (
        503, "loading model", "api_error"
    )  # fmt: skip
    assert info.value.retry_after == 3 and len(a.requests) == 1 and len(b.requests) >= 1
    assert not states[0].healthy and not states[1].healthy


async def test_the_events_of_one_read_are_one_chunk_tool_call_pieces_their_own() -> None:
    """What the server sent at once goes on at once: the text and logprobs of the events one network read
    brought are one chunk; each tool-call piece stays a chunk of its own."""
    call = {"index": 0, "id": "call_1", "type": "function", "function": {"name": "f", "arguments": ""}}
    more = {"index": 0, "function": {"arguments": "{}"}}
    events: list[object] = [token_event("Hel"), token_event("lo")]
    events += [{"choices": [{"index": 0, "delta": {"tool_calls": [piece]}}]} for piece in (call, more)]
    events += [{"choices": [{"index": 0, "delta": {}, "finish_reason": "tool_calls"}]}, "[DONE]"]

    async def burst(exchange: Exchange) -> None:
        await exchange.send_head()
        await exchange.send_events(events, last=True)

    async with raw_server(burst) as server, loaded(server.url) as backend:
        chunks = await collect(backend, ask())
    text, first, second, end = chunks
    assert text.text == "Hello" and [t.token for t in text.logprobs] == ["Hel", "lo"]
    assert [(c.tool_calls[0].name, c.tool_calls[0].arguments) for c in (first, second)] == [
        ("f", ""),
        (None, "{}"),
    ]
    assert end.finish_reason == "tool_calls"


async def test_the_read_that_ends_the_stream_is_one_chunk_with_its_end() -> None:
    """The text of the read that brings ``[DONE]`` carries the finish reason and usage: the end goes
    through the pipeline as one delta (the reads before it stream as they come)."""

    async def two_reads(exchange: Exchange) -> None:
        await exchange.send_head()
        await exchange.send_event(token_event("Hel"))
        ending: list[object] = [
            token_event("lo"),
            {"choices": [{"index": 0, "delta": {}, "finish_reason": "length"}]},
        ]
        ending += [{"choices": [], "usage": {"prompt_tokens": 3, "completion_tokens": 2}}, "[DONE]"]
        await exchange.send_events(ending, last=True)

    async with raw_server(two_reads) as server, loaded(server.url) as backend:
        chunks = await collect(backend, ask())
    *before, end = chunks  # "Hel" alone when the client read it before the rest came
    assert "".join(c.text for c in chunks) == "Hello" and end.text.endswith("lo")
    assert [t.token for c in chunks for t in c.logprobs] == ["Hel", "lo"]
    assert (end.finish_reason, end.usage) == ("length", Usage(3, 2))
    assert all(c.finish_reason is None for c in before)


async def test_request_body_headers_usage_and_reasoning_content() -> None:
    """What goes over the wire, a server-sent usage chunk, and vLLM's ``reasoning_content`` re-wrapped
    as ``<think>`` text that the pipeline's splitter takes apart."""

    async def reasoning(exchange: Exchange) -> None:
        await exchange.send_head()
        await exchange.send_event({"choices": [{"index": 0, "delta": {"role": "assistant"}}]})
        for piece in ("Two", " plus two."):
            await exchange.send_event({"choices": [{"index": 0, "delta": {"reasoning_content": piece}}]})
        await exchange.send_event(token_event("Four"))
        await exchange.send_event({"choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]})
        await exchange.send_event({"choices": [], "usage": {"prompt_tokens": 11, "completion_tokens": 9}})
        await exchange.send_event("[DONE]")
        await exchange.end()

    schema = {"type": "object", "properties": {"a": {"type": "integer"}}}
    async with raw_server(reasoning) as server:
        backend = OpenAIHTTPBackend(spec_for(server.url, api_key="sekret"))
        await backend.load()
        try:
            fmt = ResponseFormat("json_schema", schema)
            request = ask(seed=1, enable_thinking=True, response_format=fmt)
            chunks = await collect(backend, request)
            await collect(backend, replace(request, logprobs=True))
        finally:
            await backend.close()
    text = "".join(c.text for c in chunks)
    assert text == "<think>Two plus two.</think>Four"
    splitter = ThinkSplitter()
    assert splitter.feed(text) == ("Two plus two.", "Four")
    assert chunks[-1].finish_reason == "stop" and chunks[-1].usage == Usage(11, 9)
    sent = server.requests[0]
    assert sent.headers["authorization"] == "Bearer sekret"
    assert sent.body["model"] == ALIAS and sent.body["stream"] is True
    assert sent.body["stream_options"] == {"include_usage": True}
    assert sent.body["chat_template_kwargs"] == {"enable_thinking": True}
    assert "logprobs" not in sent.body and "top_logprobs" not in sent.body  # not asked: not paid for
    scored = server.requests[1].body
    assert scored["logprobs"] is True and scored["top_logprobs"] == 0
    assert sent.body["max_tokens"] == 4 and sent.body["seed"] == 1 and sent.body["temperature"] == 0.0
    assert sent.body["response_format"] == {
        "type": "json_schema",
        "json_schema": {"name": "response", "schema": schema, "strict": True},
    }


async def test_load_fails_only_when_no_replica_answers() -> None:
    backend = OpenAIHTTPBackend(spec_for(f"http://127.0.0.1:{free_port()}/v1"))
    with pytest.raises(ModelLoadError, match="no replica answers"):
        await backend.load()
    await backend.close()


async def test_a_foreign_error_while_loading_leaves_as_a_load_error() -> None:
    backend = OpenAIHTTPBackend(spec_for("http://[::1/v1"))  # no request can use it: not a replica down
    with pytest.raises(ModelLoadError, match=r"InvalidURL: http://\[::1/v1/models") as info:
        await backend.load()
    assert isinstance(info.value.__cause__, InvalidURL)
    await backend.close()


async def test_active_health_check_brings_a_replica_back() -> None:
    port = free_port()
    async with (
        raw_server(hang) as up,
        loaded(up.url, f"http://127.0.0.1:{port}/v1", health_interval=0.2) as backend,
    ):
        assert [s.healthy for s in backend.replicas()] == [True, False]
        async with raw_server(hang, port=port):
            for _ in range(50):
                if backend.replicas()[1].healthy:
                    break
                await asyncio.sleep(0.1)
            assert backend.replicas()[1].healthy


# ---------------------------------------------------------------------------------------------------------
# Images: forwarded as the client sent them, in order with the text

PNG = (  # a 1×1 PNG
    "data:image/png;base64,"
    "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAQAAAC1HAwCAAAAC0lEQVR42mNkYAAAAAYAAjCB0C8AAAAASUVORK5CYII="
)
# A ChatML template that reads OpenAI content parts and puts each image where it stands among the text, as
# Qwen-VL's template puts its vision placeholder. With no projector here, the image enters the prompt as its
# URL's text, so what the server answers depends on exactly which image parts it was sent, and where.
SEEING_TEMPLATE = (
    "{% for m in messages %}{% if loop.last and m.role == 'assistant' and not m.content %}"
    "{{ '<|im_start|>assistant\\n' }}{% else %}{{ '<|im_start|>' + m.role + '\\n' }}"
    "{% if m.content is string %}{{ m.content }}{% else %}{% for p in m.content %}"
    "{% if p.type == 'image_url' %}{{ '<image>' + p.image_url.url + '</image>' }}"
    "{% else %}{{ p.text }}{% endif %}"
    "{% endfor %}{% endif %}{{ '<|im_end|>\\n' }}{% endif %}{% endfor %}"
)


async def test_image_parts_are_forwarded_unchanged_and_in_order() -> None:
    async def answer(exchange: Exchange) -> None:
        await exchange.send_head()
        await exchange.send_event(token_event("A cat"))
        await exchange.send_event({"choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]})
        await exchange.send_event("[DONE]")
        await exchange.end()

    parts = ("Compare", ImagePart(PNG), "with", ImagePart("https://img.example/cat.jpg", "low"))
    messages = (Message("system", "Be brief."), Message("user", "Compare\nwith", parts))
    async with raw_server(answer) as server, loaded(server.url) as backend:
        await collect(backend, replace(ask(), messages=messages))
    assert server.requests[0].body["messages"] == [
        {"role": "system", "content": "Be brief."},
        {
            "role": "user",
            "content": [
                {"type": "text", "text": "Compare"},
                {"type": "image_url", "image_url": {"url": PNG}},
                {"type": "text", "text": "with"},
                {"type": "image_url", "image_url": {"url": "https://img.example/cat.jpg", "detail": "low"}},
            ],
        },
    ]


@pytest.fixture(scope="module")
def seeing_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LlamaServer]:
    from groupqwen.pool.bundled import ensure_bundled

    config = tmp_path_factory.mktemp("seeing") / "tokenizer_config.json"
    tokens = {"bos_token": "<|im_start|>", "eos_token": "<|im_end|>", "chat_template": SEEING_TEMPLATE}
    config.write_text(json.dumps(tokens))
    model = ensure_bundled(builtin_catalog()["smollm2-135m"], Settings().models_dir)
    extra = ("--chat_format", "hf-tokenizer-config", "--hf_tokenizer_config_path", str(config))
    with LlamaServer(model, *extra).serving() as server:
        yield server


def test_gateway_sends_images_through_the_vision_route_to_a_real_server(
    seeing_server: LlamaServer, tmp_path: Path
) -> None:
    """``auto`` with an image goes to ``auto:vision`` (a model marked ``vision: true``), and the server
    answers exactly as it does when sent the image part itself: not as it answers the text alone, nor the
    same parts in another order."""
    remote = {"backend": "openai_http", "urls": [seeing_server.url], "remote_model": ALIAS}
    settings = load_settings(
        models={"smol-text": remote, "smol-seeing": {**remote, "vision": True}},
        models_dir=tmp_path,
        data_dir=tmp_path,
        default_model="smol-text",
        router={"tiers": [{"model": "smol-text"}], "routes": {"auto:vision": "smol-seeing"}},
        cache={"backend": "off"},
    )
    text = {"type": "text", "text": "What is in this picture?"}
    image = {"type": "image_url", "image_url": {"url": PNG}}
    sampling = {"temperature": 0, "max_tokens": 5, "logprobs": True, "top_logprobs": 2}

    def direct(*content: dict[str, object]) -> tuple[list[tuple[str, float]], int]:
        body = {"model": ALIAS, "messages": [{"role": "user", "content": list(content)}], **sampling}
        answer = httpx.post(f"{seeing_server.url}/chat/completions", json=body, timeout=60).json()
        return tokens_of(answer), answer["usage"]["prompt_tokens"]

    with TestClient(create_app(settings)) as http:
        response = http.post(
            "/v1/chat/completions",
            json={"model": "auto", "messages": [{"role": "user", "content": [text, image]}], **sampling},
        )
        assert response.status_code == 200, response.text
        refused = http.post(
            "/v1/chat/completions",
            json={"model": "smol-text", "messages": [{"role": "user", "content": [text, image]}]},
        )
    assert response.headers["x-groupqwen-route"] == "auto:vision"
    assert response.headers["x-groupqwen-model"] == "smol-seeing"
    assert response.json()["groupqwen"]["route"] == "auto:vision"
    via_gateway = tokens_of(response.json())
    with_image, prompt_with_image = direct(text, image)
    text_only, prompt_text_only = direct(text)
    reordered, _ = direct(image, text)
    assert prompt_with_image > prompt_text_only + 30  # the server's own count: the image part was rendered
    assert same_answer(via_gateway, with_image)
    assert not same_answer(via_gateway, text_only) and not same_answer(via_gateway, reordered)
    assert (
        refused.status_code == 400 and "models.smol-text.vision: true" in refused.json()["error"]["message"]
    )


def tokens_of(answer: dict[str, Any]) -> list[tuple[str, float]]:
    return [(t["token"], t["logprob"]) for t in answer["choices"][0]["logprobs"]["content"]]


def same_answer(a: list[tuple[str, float]], b: list[tuple[str, float]]) -> bool:
    """The same tokens with the same log-probabilities (to float noise: a cached prompt prefix may be
    evaluated in other batch sizes)."""
    return len(a) == len(b) and all(x == y and abs(p - q) < 1e-3 for (x, p), (y, q) in zip(a, b, strict=True))
