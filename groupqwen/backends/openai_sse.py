"""Reading an OpenAI-compatible chat-completions (or text-completions) stream: server-sent events into
``Chunk``s.

``SseSplitter`` gives each event's ``data`` as bytes (parsed once, with orjson); ``StreamParser`` turns those
payloads into ``Chunk``s with ``TokenLogprob``s (a text completion's ``choices[].text`` and legacy
``logprobs`` too) and ``ToolCallDelta``s (``delta.tool_calls``), re-wrapping ``delta.reasoning_content``
(vLLM's reasoning parser) as ``<think>…</think>`` text and keeping the finish reason and usage for its last
chunk; a whole (non-streamed) answer is read as a stream of one event. A stream that ends without a
finish reason, or carries an error event or a malformed one, raises ``StreamIncomplete``.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from dataclasses import replace
from typing import Any

import orjson

from groupqwen.messages import Chunk, FinishReason, TokenLogprob, ToolCallDelta, TopLogprob, Usage

MAX_MESSAGE = 500


# one event's text, logprobs and tool-call pieces: a plain tuple (a ``Chunk`` per event cost more than the
# event's parsing); ``read`` joins a read's into chunks
Piece = tuple[str, tuple[TokenLogprob, ...], tuple[ToolCallDelta, ...]]


class StreamIncomplete(Exception):
    """The stream ended without a finish reason, or carried an error event or a malformed one."""


class StreamParser:
    """Turns SSE ``data`` payloads into ``Chunk``s; ``finish()`` gives the last one."""

    def __init__(self, top_n: int) -> None:
        self.top_n, self.done, self.reasoning, self.tokens = top_n, False, False, 0
        self.calls: set[int] = set()  # the tool calls begun (by index)
        self.finish_reason: FinishReason | None = None
        self.usage: Usage | None = None

    def read(self, events: list[bytes]) -> list[Chunk]:
        """The chunks of the events one network read brought, each run of text and logprobs joined into
        one chunk (what the server sent at once goes on at once: one delta through the pipeline, one frame
        to the client); tool-call pieces stay one a chunk, as clients read one piece per call a delta."""
        chunks: list[Chunk] = []
        texts: list[str] = []
        logprobs: list[TokenLogprob] = []
        for event in events:
            piece = self.feed(event)
            if piece is None:
                continue
            text, tokens, calls = piece
            if not calls:
                texts.append(text)
                logprobs += tokens
                continue
            if texts:
                chunks.append(Chunk(text="".join(texts), logprobs=tuple(logprobs)))
                texts, logprobs = [], []
            chunks.append(Chunk(text=text, logprobs=tokens, tool_calls=calls))
        if texts:
            chunks.append(Chunk(text="".join(texts), logprobs=tuple(logprobs)))
        return chunks

    def feed(self, payload: bytes) -> Piece | None:
        """One event's ``data``: its text, logprobs and tool-call pieces (``None``: none of them)."""
        if self.done:
            return None
        if payload.strip() == b"[DONE]":
            self.done = True
            return None
        return self._parsed(payload, self._event)

    def answer(self, payload: bytes) -> list[Chunk]:
        """A whole answer (``stream: false``), read as the one event of a stream: its ``message`` the delta
        (its tool calls numbered, as a stream's are); its chunks as ``finish`` gives a stream's last ones."""
        self.done = True
        piece = self._parsed(payload, self._whole)
        if piece is None:
            return self.finish()
        text, logprobs, calls = piece
        if calls:
            return self.finish(Chunk(text=text, logprobs=logprobs, tool_calls=calls))
        return [self._last(text, logprobs)]

    def _parsed(self, payload: bytes, handle: Callable[[dict[str, Any]], Piece | None]) -> Piece | None:
        try:
            event = loads(payload)
            if not isinstance(event, dict):
                raise TypeError("not an object")
            return handle(event)
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            text = payload[:100].decode(errors="replace")
            raise StreamIncomplete(f"malformed event ({type(exc).__name__}): {text!r}") from exc

    def _whole(self, answer: dict[str, Any]) -> Piece | None:
        choices = answer.get("choices")
        if choices and "message" in choices[0]:  # read in place, not copied into an event's shape
            return self._event(answer, "message")
        return self._event(answer)

    def _event(self, event: dict[str, Any], key: str = "delta") -> Piece | None:
        """An event's piece; ``key``: where its choice's text is (a whole answer's is its ``message``)."""
        if "error" in event or event.get("object") == "error":
            raise StreamIncomplete(f"error event: {message_of(event)[:MAX_MESSAGE]}")
        if isinstance(usage := event.get("usage"), dict):
            self.usage = Usage(int(usage.get("prompt_tokens") or 0), int(usage.get("completion_tokens") or 0))
        if not (choices := event.get("choices")):
            return None
        choice = choices[0]
        if "text" in choice:  # a text completion
            return self._text(choice)
        text = ""
        delta = choice.get(key) or {}
        if reasoning := delta.get("reasoning_content") or delta.get("reasoning"):
            text += reasoning if self.reasoning else "<think>" + reasoning
            self.reasoning = True
        if content := delta.get("content"):
            text += "</think>" + content if self.reasoning else content
            self.reasoning = False
        entries = (choice.get("logprobs") or {}).get("content")
        logprobs = tuple(map(self._logprob, entries)) if entries else ()
        pieces = delta.get("tool_calls")
        if pieces and key == "message":  # a whole answer's calls, numbered as a stream's are
            pieces = [{**call, "index": i} for i, call in enumerate(pieces)]
        calls = tuple(map(self._call_piece, pieces)) if pieces else ()
        self.tokens += len(logprobs) or (1 if text or calls else 0)
        if reason := choice.get("finish_reason"):
            self.finish_reason = _FINISH.get(reason, "stop")
        return (text, logprobs, calls) if text or logprobs or calls else None

    def _text(self, choice: Mapping[str, Any]) -> Piece | None:
        """A text completion's choice: ``text``, and legacy ``logprobs`` (``tokens``, ``token_logprobs``,
        ``top_logprobs`` as one ``{token: logprob}`` object per token)."""
        text = str(choice.get("text") or "")
        legacy = choice.get("logprobs") or {}
        tokens = legacy.get("tokens") or []
        values = legacy.get("token_logprobs") or []
        tops = legacy.get("top_logprobs") or [None] * len(tokens)
        if not len(tokens) == len(values) == len(tops):
            raise ValueError("logprobs' tokens, token_logprobs and top_logprobs differ in length")
        logprobs = tuple(self._legacy(t, v, top) for t, v, top in zip(tokens, values, tops, strict=True))
        self.tokens += len(logprobs) or (1 if text else 0)
        if reason := choice.get("finish_reason"):
            self.finish_reason = "length" if reason == "length" else "stop"
        return (text, logprobs, ()) if text or logprobs else None

    def _legacy(self, token: Any, logprob: Any, top: Mapping[str, Any] | None) -> TokenLogprob:
        alternatives = tuple(
            TopLogprob(str(t), float(lp), tuple(str(t).encode())) for t, lp in (top or {}).items()
        )
        return TokenLogprob(
            str(token), float(logprob), tuple(str(token).encode()), alternatives[: self.top_n]
        )

    def _call_piece(self, piece: Mapping[str, Any]) -> ToolCallDelta:
        """A streamed ``delta.tool_calls`` entry in OpenAI's shape: ``id`` and ``function.name`` on the first
        piece of a call only (llama-cpp-python's server repeats them on every piece)."""
        function = piece.get("function") or {}
        index, arguments = int(piece["index"]), function.get("arguments")
        more = ToolCallDelta(index, arguments=str(arguments) if arguments else "")
        if index in self.calls:
            return more
        self.calls.add(index)
        name = function.get("name")
        return replace(more, id=str(piece.get("id") or f"call_{index}"), name=str(name) if name else "")

    def _logprob(self, entry: Mapping[str, Any]) -> TokenLogprob:
        top = tuple(
            TopLogprob(t["token"], float(t["logprob"]), _bytes(t)) for t in entry.get("top_logprobs") or ()
        )
        return TokenLogprob(entry["token"], float(entry["logprob"]), _bytes(entry), top)  # as the server sent

    def finish(self, last: Chunk | None = None) -> list[Chunk]:
        """The stream's last chunks: ``last`` (its final piece, not yet sent), then the finish reason and
        usage; on ``last`` itself when it is text (the end through the pipeline and out as one delta),
        after it when it is a tool-call piece (one piece a chunk, as ``read`` keeps them)."""
        if last is None or last.tool_calls:
            end = self._last("", ())
            return [end] if last is None else [last, end]
        return [self._last(last.text, last.logprobs, last.prompt_opens_thinking)]

    def _last(self, text: str, logprobs: tuple[TokenLogprob, ...], opens_thinking: bool = False) -> Chunk:
        """The stream's last chunk: ``text`` and ``logprobs`` with its finish reason and usage (one chunk
        made, not one copied by ``dataclasses.replace``)."""
        if self.finish_reason is None:
            raise StreamIncomplete("the stream ended without a finish reason")
        usage = self.usage or Usage(0, self.tokens)
        return Chunk(text, logprobs, self.finish_reason, usage, opens_thinking)


class SseSplitter:
    """The ``data`` of each server-sent event, as bytes, from the body's pieces as they arrive (comments,
    ``event:`` and ``id:`` lines are ignored; lines may end in CRLF, LF or CR); never decoded to text. A
    plain object, not an async generator: the reader awaits the network once per piece and handles a
    piece's events without a further await (an upstream's burst of events is one read)."""

    __slots__ = ("_pending",)

    def __init__(self) -> None:
        self._pending = b""

    def feed(self, piece: bytes) -> list[bytes]:
        """The events that ``piece`` completes."""
        text = self._pending + piece
        if b"\r" in text:
            carry = b"\r" if text.endswith(b"\r") else b""  # its LF may be in the next piece
            text = text[: len(text) - len(carry)].replace(b"\r\n", b"\n").replace(b"\r", b"\n") + carry
        *events, self._pending = text.split(b"\n\n")
        return [data for event in events if (data := _data(event)) is not None]

    def end(self) -> list[bytes]:
        """The last event, when the body ended without its blank line."""
        data = _data(self._pending.replace(b"\r", b"\n"))
        self._pending = b""
        return [] if data is None else [data]


def _data(event: bytes) -> bytes | None:
    lines = [line[5:].removeprefix(b" ") for line in event.split(b"\n") if line.startswith(b"data:")]
    return b"\n".join(lines) if lines else None


_FINISH: dict[str, FinishReason] = {
    "length": "length",
    "tool_calls": "tool_calls",
    "function_call": "tool_calls",
}


def _bytes(entry: Mapping[str, Any]) -> tuple[int, ...]:
    raw = entry.get("bytes")
    return tuple(raw) if isinstance(raw, list) else tuple(str(entry["token"]).encode())


def loads(payload: bytes) -> Any:
    """JSON with orjson; what it refuses and the standard library reads (``NaN``, ``-Infinity`` logprobs,
    integers beyond 64 bits) with the standard library."""
    try:
        return orjson.loads(payload)
    except orjson.JSONDecodeError:
        return json.loads(payload)


def message_of(body: Any) -> str:
    """The message of an error body: OpenAI/llama.cpp ``{"error": {"message"}}``, Ollama ``{"error": "…"}``,
    older vLLM ``{"object": "error", "message"}``, FastAPI ``{"detail"}``."""
    if isinstance(body, dict):
        error = body.get("error")
        if isinstance(error, dict) and error.get("message"):
            return str(error["message"])
        if isinstance(error, str):
            return error
        for key in ("message", "detail"):
            if body.get(key):
                return str(body[key])
    return json.dumps(body)
