"""A streamed response as the Responses API's typed events: ``response.created`` and ``in_progress``, then
each output item in turn (added, its deltas, done): a reasoning item while the model thinks, a message item
with its ``output_text`` deltas, a ``function_call`` item per tool call with its arguments' deltas; then
``response.completed`` (or ``incomplete`` when it hit ``max_output_tokens``). A failure mid-stream ends it
with ``error`` and ``response.failed``."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import aclosing
from typing import Any

from groupqwen import log
from groupqwen.api.schemas.chat_output import logprobs_json
from groupqwen.api.schemas.response_output import (
    ResponseWriter,
    message_item,
    new_id,
    reasoning_item,
    text_part,
)
from groupqwen.api.schemas.response_tools import function_call_item
from groupqwen.api.streaming import json_bytes
from groupqwen.errors import GroupQwenError
from groupqwen.messages import Completion, Delta, TokenLogprob, ToolCall, ToolCallDelta
from groupqwen.orchestrator.answer import Answer

_log = log.get(__name__)


def _event(kind: str, seq: int, payload: dict[str, Any]) -> bytes:
    data = json_bytes({"type": kind, "sequence_number": seq, **payload})
    return b"event: " + kind.encode() + b"\ndata: " + data + b"\n\n"


class _Item:
    """The output item being streamed: its kind, id, place in ``output`` and what it holds so far."""

    def __init__(self, kind: str, item_id: str, index: int, call: ToolCallDelta | None = None) -> None:
        self.kind, self.id, self.index = kind, item_id, index
        self.text: list[str] = []
        self.tokens: list[TokenLogprob] = []
        self.call = call


class ResponseEvents:
    """The events of one answer, numbered in order; ``output`` holds the items done."""

    def __init__(self, writer: ResponseWriter, logprobs: bool) -> None:
        self.writer, self.logprobs = writer, logprobs
        self.seq = 0
        self.output: list[dict[str, Any]] = []
        self.open: _Item | None = None
        self.messages = 0  # message items opened (the first has the writer's id)
        self.status = (
            "completed"  # a message item's when it closes: "incomplete" when the answer hit the limit
        )
        # the whole answer, for the completion
        self.reasoning: list[str] = []
        self.content: list[str] = []
        self.tokens: list[TokenLogprob] = []

    def event(self, kind: str, **payload: Any) -> bytes:
        frame = _event(kind, self.seq, payload)
        self.seq += 1
        return frame

    def _close(self) -> list[bytes]:
        item, self.open = self.open, None
        if item is None:
            return []
        text = "".join(item.text)
        if item.kind == "reasoning":
            done = reasoning_item(item.id, text, "completed")
            frames = [self._at("response.reasoning_text.done", item, content_index=0, text=text)]
        elif item.kind == "message":
            part = text_part(text, tuple(item.tokens) if self.logprobs else None)
            done = message_item(item.id, [part], self.status)
            scored = logprobs_json(tuple(item.tokens)) if self.logprobs else []
            frames = [
                self._at("response.output_text.done", item, content_index=0, text=text, logprobs=scored),
                self._at("response.content_part.done", item, content_index=0, part=part),
            ]
        else:
            assert item.call is not None
            call = ToolCall(item.call.id or "", item.call.name or "", text)
            done = function_call_item(item.id, call, "completed")
            frames = [self._at("response.function_call_arguments.done", item, arguments=text, name=call.name)]
        self.output.append(done)
        frames.append(self.event("response.output_item.done", output_index=item.index, item=done))
        return frames

    def _open(self, kind: str, call: ToolCallDelta | None = None) -> list[bytes]:
        frames = self._close()
        index = len(self.output)
        if kind == "reasoning":
            item = _Item(kind, self.writer.reasoning_id, index)
            added = reasoning_item(item.id, "", "in_progress")
        elif kind == "message":
            item = _Item(kind, self.writer.message_id if not self.messages else new_id("msg"), index)
            self.messages += 1
            added = message_item(item.id, [], "in_progress")
        else:
            assert call is not None
            item = _Item(kind, self.writer.call_item_id(call.index), index, call)
            pending = ToolCall(call.id or "", call.name or "", "")
            added = function_call_item(item.id, pending, "in_progress")
        self.open = item
        frames.append(self.event("response.output_item.added", output_index=index, item=added))
        if kind == "message":
            part = text_part("", None)
            frames.append(self._at("response.content_part.added", item, content_index=0, part=part))
        return frames

    def _append(self, kind: str, text: str, frames: list[bytes]) -> _Item:
        """The open item of ``kind`` (opened after closing another), with ``text`` added."""
        if self.open is None or self.open.kind != kind:
            frames += self._open(kind)
        assert self.open is not None
        self.open.text.append(text)
        return self.open

    def _at(self, kind: str, item: _Item, **payload: Any) -> bytes:
        return self.event(kind, item_id=item.id, output_index=item.index, **payload)

    def delta(self, delta: Delta) -> list[bytes]:
        frames: list[bytes] = []
        if delta.reasoning:
            item = self._append("reasoning", delta.reasoning, frames)
            self.reasoning.append(delta.reasoning)
            frames.append(
                self._at("response.reasoning_text.delta", item, content_index=0, delta=delta.reasoning)
            )
        if delta.content or delta.logprobs:
            item = self._append("message", delta.content, frames)
            item.tokens.extend(delta.logprobs)
            self.content.append(delta.content)
            self.tokens.extend(delta.logprobs)
            scored = logprobs_json(delta.logprobs) if self.logprobs else []
            frames.append(
                self._at(
                    "response.output_text.delta", item, content_index=0, delta=delta.content, logprobs=scored
                )
            )
        for piece in delta.tool_calls:
            if piece.id is not None:
                frames += self._open("call", piece)
            call = self.open
            if not piece.arguments or call is None or call.call is None or call.call.index != piece.index:
                continue
            call.text.append(piece.arguments)
            frames.append(self._at("response.function_call_arguments.delta", call, delta=piece.arguments))
        return frames

    def finish(self, delta: Delta) -> tuple[Completion, list[bytes]]:
        """The last delta's completion, and the frames that close the open item (an answer with neither
        text nor calls still gets its empty message item)."""
        assert delta.finish_reason is not None and delta.usage is not None
        if delta.finish_reason == "length":
            self.status = "incomplete"
        frames = self._close()
        calls = tuple(
            ToolCall(item["call_id"], item["name"], item["arguments"])
            for item in self.output
            if item["type"] == "function_call"
        )
        if not calls and not self.messages:
            frames += self._open("message") + self._close()
        completion = Completion(
            "".join(self.content),
            "".join(self.reasoning),
            delta.finish_reason,
            delta.usage,
            tuple(self.tokens),
            calls,
        )
        return completion, frames


async def response_events(
    answer: Answer,
    writer: ResponseWriter,
    logprobs: bool,
    keep: Callable[[dict[str, Any], Completion], Awaitable[None]],
    finish: Callable[[BaseException | None], object],
) -> AsyncIterator[bytes]:
    """``answer`` as Responses events; ``keep`` gets the finished response, ``finish`` what ended the
    stream, once."""
    events = ResponseEvents(writer, logprobs)
    failure: BaseException | None = None
    try:
        started = writer.response("in_progress", model=answer.decision.model)
        lead = events.event("response.created", response=started)
        lead += events.event("response.in_progress", response=started)
        async with aclosing(answer):
            try:
                async for delta in answer:
                    frames = [lead, *events.delta(delta)]
                    lead = b""
                    if delta.finish_reason is not None and delta.usage is not None:
                        completion, closing = events.finish(delta)
                        frames += closing
                        done = writer.done(
                            completion, answer.decision, logprobs, events.output, answer.translation
                        )
                        await keep(done, completion)
                        final = (
                            "response.incomplete" if done["status"] == "incomplete" else "response.completed"
                        )
                        frames.append(events.event(final, response=done))
                    yield b"".join(frames)
            except Exception as exc:
                failure = exc
                yield lead + _failed(events, writer, answer, exc)
    except BaseException as exc:
        failure = exc
        raise
    finally:
        finish(failure)


def _failed(events: ResponseEvents, writer: ResponseWriter, answer: Answer, exc: Exception) -> bytes:
    error = exc if isinstance(exc, GroupQwenError) else None
    if error is None:
        _log.exception("stream failed", error=type(exc).__name__)
        error = GroupQwenError("The stream failed; the request id identifies it in the logs")
    else:
        _log.error("stream failed", code=error.code, error=error.message)
    code = error.code or error.error_type
    failed = writer.response(
        "failed",
        model=answer.decision.model,
        decision=answer.decision,
        error={"code": code, "message": error.message},
    )
    detail = {"code": code, "message": error.message, "param": error.param}
    return events.event("error", **detail) + events.event("response.failed", response=failed)
