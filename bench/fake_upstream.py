"""A fast fake OpenAI-compatible upstream for ``bench/proxy.py``: its own process, raw asyncio (uvloop when
installed), answers from bytes built once, so that it is never what a benchmark measures.

    .venv/bin/python bench/fake_upstream.py PORT [--tokens 16] [--delay-ms 0]

``POST /v1/chat/completions`` answers a fixed reply of ``--tokens`` tokens: one JSON object, or with
``"stream": true`` one server-sent event per token (chunked transfer encoding, an event per chunk), then the
finish reason, the usage when ``stream_options.include_usage`` asks, and ``[DONE]``; with ``"logprobs": true``
each token carries its logprob and ``top_logprobs`` alternatives, as vLLM sends them. ``GET /v1/models`` lists
the one model (the gateway's health check). Anything else is a 404. HTTP/1.1 keep-alive, ``Content-Length``
bodies only (what every client sends here). ``--delay-ms`` answers each POST that much later (a timer, no
CPU): an upstream that takes as long as a cache miss's embedding, so that a cache-off gateway's event loop
sleeps as long between a request's parts as a miss's does.
"""

from __future__ import annotations

import argparse
import asyncio
import json
from functools import cache
from typing import Any

MODEL = "fake-upstream"
WORDS = ("The", " answer", " is", " forty", "-two", ",", " as", " the", " book", " says", ";", " it")
CREATED = 1_700_000_000


def _tokens(count: int) -> list[str]:
    return [WORDS[i % len(WORDS)] for i in range(count)]


def _logprob(token: str, top: int) -> dict[str, Any]:
    alternatives = [
        {"token": token if i == 0 else f"{token}{i}", "logprob": -0.01 - i, "bytes": list(token.encode())}
        for i in range(top)
    ]
    return {"token": token, "logprob": -0.01, "bytes": list(token.encode()), "top_logprobs": alternatives}


def _http(status: str, content_type: str, body: bytes) -> bytes:
    head = f"HTTP/1.1 {status}\r\ncontent-type: {content_type}\r\ncontent-length: {len(body)}\r\n\r\n"
    return head.encode() + body


@cache
def completion(tokens: int, logprobs: int | None) -> bytes:
    """The whole non-streamed answer, status line to body."""
    words = _tokens(tokens)
    choice: dict[str, Any] = {
        "index": 0,
        "message": {"role": "assistant", "content": "".join(words)},
        "finish_reason": "stop",
        "logprobs": None if logprobs is None else {"content": [_logprob(w, logprobs) for w in words]},
    }
    body = {
        "id": "chatcmpl-fake",
        "object": "chat.completion",
        "created": CREATED,
        "model": MODEL,
        "choices": [choice],
        "usage": {"prompt_tokens": 12, "completion_tokens": tokens, "total_tokens": 12 + tokens},
    }
    return _http("200 OK", "application/json", json.dumps(body).encode())


@cache
def stream(tokens: int, logprobs: int | None, usage: bool) -> bytes:
    """The whole streamed answer, status line to the last chunk: one chunk of the encoding per event."""

    def event(delta: dict[str, Any], finish: str | None, lp: Any = None, **extra: Any) -> bytes:
        choice = {"index": 0, "delta": delta, "finish_reason": finish, "logprobs": lp}
        body = {
            "id": "chatcmpl-fake",
            "object": "chat.completion.chunk",
            "created": CREATED,
            "model": MODEL,
            "choices": [choice] if delta is not None else [],
            **extra,
        }
        data = b"data: " + json.dumps(body).encode() + b"\n\n"
        return b"%x\r\n%s\r\n" % (len(data), data)

    parts = [
        b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ntransfer-encoding: chunked\r\n\r\n",
    ]
    for i, word in enumerate(_tokens(tokens)):
        delta = {"role": "assistant", "content": word} if i == 0 else {"content": word}
        lp = None if logprobs is None else {"content": [_logprob(word, logprobs)]}
        parts.append(event(delta, None, lp))
    parts.append(event({}, "stop"))
    if usage:
        counts = {"prompt_tokens": 12, "completion_tokens": tokens, "total_tokens": 12 + tokens}
        parts.append(event(None, None, usage=counts))  # type: ignore[arg-type]
    done = b"data: [DONE]\n\n"
    parts.append(b"%x\r\n%s\r\n0\r\n\r\n" % (len(done), done))
    return b"".join(parts)


MODELS = _http(
    "200 OK",
    "application/json",
    json.dumps({"object": "list", "data": [{"id": MODEL, "object": "model", "owned_by": "bench"}]}).encode(),
)
NOT_FOUND = _http("404 Not Found", "application/json", b'{"error": {"message": "no such route"}}')


class Upstream(asyncio.Protocol):
    def __init__(self, tokens: int, delay_s: float = 0.0) -> None:
        self.tokens, self.delay_s, self.buffer = tokens, delay_s, b""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport: Any = transport  # uvloop's transport is not an asyncio.Transport subclass

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        while (end := self.buffer.find(b"\r\n\r\n")) >= 0:
            head = self.buffer[:end].decode("latin-1").split("\r\n")
            length = 0
            for line in head[1:]:
                name, _, value = line.partition(":")
                if name.strip().lower() == "content-length":
                    length = int(value)
            if len(self.buffer) < end + 4 + length:
                return
            body = self.buffer[end + 4 : end + 4 + length]
            self.buffer = self.buffer[end + 4 + length :]
            method, path = head[0].split(" ")[:2]
            answer = self.answer(method, path, body)
            if self.delay_s and method == "POST":
                asyncio.get_running_loop().call_later(self.delay_s, self._write, answer)
            else:
                self.transport.write(answer)

    def _write(self, answer: bytes) -> None:
        if not self.transport.is_closing():  # the client may have left meanwhile
            self.transport.write(answer)

    def answer(self, method: str, path: str, body: bytes) -> bytes:
        if method == "GET" and path.endswith("/models"):
            return MODELS
        if method != "POST" or not path.endswith("/chat/completions"):
            return NOT_FOUND
        request = json.loads(body)
        logprobs = int(request.get("top_logprobs") or 0) if request.get("logprobs") else None
        if request.get("stream"):
            usage = bool((request.get("stream_options") or {}).get("include_usage"))
            return stream(self.tokens, logprobs, usage)
        return completion(self.tokens, logprobs)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("port", type=int)
    parser.add_argument("--tokens", type=int, default=16)
    parser.add_argument("--delay-ms", type=float, default=0.0, help="answer each POST this much later")
    args = parser.parse_args()
    if args.delay_ms < 0:
        parser.error("--delay-ms must be 0 or more")

    async def run() -> None:
        loop = asyncio.get_running_loop()
        server = await loop.create_server(
            lambda: Upstream(args.tokens, args.delay_ms / 1e3), "127.0.0.1", args.port, backlog=1024
        )
        await server.serve_forever()

    try:
        import uvloop
    except ImportError:
        asyncio.run(run())
    else:
        uvloop.run(run())


if __name__ == "__main__":
    main()
