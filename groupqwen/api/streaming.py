"""Server-sent events and the client's going away: the plumbing under the chat routes.

``Disconnect`` watches one request for the client leaving and cancels the request's task (which stops the
generation wherever it waits); ``EventStream`` writes SSE from the request's own task; ``answer_frames``
frames an ``Answer``'s deltas (and those of the further choices, ``n > 1``) as ``chat.completion.chunk``
events (text completions' chunks likewise), each choice's first with its lead chunk (the role) in one write,
a failure mid-stream as an error event, always ending with ``[DONE]``, written with the last choice's
finishing frame, the usage and the end of the body in one write.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable
from contextlib import aclosing
from typing import Any, Protocol, TypeVar

import orjson
from fastapi.responses import StreamingResponse
from starlette.types import Receive, Scope, Send

from groupqwen import log
from groupqwen.api.choices import total_usage
from groupqwen.api.errors import error_body
from groupqwen.api.schemas.chat_output import decision_json
from groupqwen.errors import ClientDisconnected, GroupQwenError
from groupqwen.messages import Delta, Usage
from groupqwen.orchestrator.answer import Answer
from groupqwen.telemetry import timing

_log = log.get(__name__)
T = TypeVar("T")
DONE = b"data: [DONE]\n\n"


class ChunkFrames(Protocol):
    """The chunk objects of one streamed answer (``chat.completion.chunk``, or ``text_completion``)."""

    def role(self, index: int = 0) -> dict[str, Any] | None:
        """The chunk that leads choice ``index``'s first delta (chat: the role), or ``None``."""
        ...

    def delta(self, delta: Delta, logprobs: bool, index: int = 0) -> dict[str, Any]: ...

    def usage(self, usage: Usage) -> dict[str, Any]: ...


def json_bytes(body: dict[str, Any]) -> bytes:
    """An answer's JSON, for a JSON body or an event's data: compact, UTF-8 as it is, by orjson (a third
    of the time of Starlette's ``JSONResponse`` with its headers, docs/benchmarks.md). A float written
    with an exponent reads ``0.00001`` for ``1e-05``; a non-finite one is ``null`` (valid JSON, where
    ``json.dumps`` wrote ``-Infinity`` into an event, which strict parsers refuse, and raised for a body);
    numpy's numbers (a similarity or a confidence ``round``ed by numpy stays numpy's) as the numbers they
    are."""
    return orjson.dumps(body, option=orjson.OPT_SERIALIZE_NUMPY)


def sse(payload: dict[str, Any]) -> bytes:
    return b"data: " + json_bytes(payload) + b"\n\n"


class Disconnect:
    """Watches for the client going away while the request's task works: the body is read, so the only
    message left to receive is ``http.disconnect``; it then cancels that task, which stops the generation
    wherever it waits. ``stop`` before the response's last message (after it, uvicorn answers every
    ``receive`` with a disconnect). One watcher per request, for the answer and its whole stream."""

    def __init__(self, receive: Receive) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._task = task
        self.gone = False
        self._watcher: asyncio.Task[None] | None = asyncio.get_running_loop().create_task(
            self._watch(receive)
        )

    async def _watch(self, receive: Receive) -> None:
        while (await receive())["type"] != "http.disconnect":
            pass
        self.gone = True
        _log.info("client disconnected; generation cancelled")
        self._task.cancel()

    def stop(self) -> None:
        """Stop watching (again: nothing). The cancelled watcher keeps its ``CancelledError``, whose
        traceback holds ``_watch``'s frame and so this object: forgetting the watcher here leaves no
        reference cycle, so the request's objects are freed when it ends, not by the garbage collector
        (which, with requests in flight, then walked every one of them: docs/benchmarks.md)."""
        if self._watcher is not None:
            self._watcher.cancel()
            self._watcher = None

    def absorb(self, exc: asyncio.CancelledError) -> ClientDisconnected:
        """The error that replaces this watcher's cancellation (raise ``exc`` itself when it is not one)."""
        if not self.gone:
            raise exc
        self._task.uncancel()
        return ClientDisconnected("The client closed the connection")

    async def watching(self, work: Awaitable[T]) -> T:
        """``await work`` while watching; on any error the watcher stops, and the client's going away
        becomes ``ClientDisconnected``. On success the watcher goes on (for the stream that follows)."""
        try:
            return await work
        except asyncio.CancelledError as exc:
            self.stop()
            raise self.absorb(exc) from None
        except BaseException:
            self.stop()
            raise


class EventStream(StreamingResponse):
    """Server-sent events written from the request's own task (Starlette's ``StreamingResponse`` starts a
    task group and a second task for them: a loop turn and more before the first token goes out); the
    request's ``Disconnect`` stops the stream when the client goes away."""

    def __init__(self, frames: AsyncIterator[bytes], headers: dict[str, str], watch: Disconnect) -> None:
        super().__init__(frames, media_type="text/event-stream", headers=headers)
        self._watch = watch

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        last = False
        try:
            start = {"type": "http.response.start", "status": self.status_code, "headers": self.raw_headers}
            await send(start)
            async for frame in self.body_iterator:
                last = isinstance(frame, bytes) and frame.endswith(DONE)  # the body's end in the same write
                await send({"type": "http.response.body", "body": frame, "more_body": not last})
        except asyncio.CancelledError as exc:
            self._watch.absorb(exc)
            return  # the client is gone: nobody to finish the response for
        finally:
            self._watch.stop()
        if not last:
            await send({"type": "http.response.body", "body": b"", "more_body": False})


async def answer_frames(
    answer: Answer,
    more: AsyncGenerator[Answer, None],
    writer: ChunkFrames,
    *,
    choices: int,
    logprobs: bool,
    include_usage: bool,
    finish: Callable[[BaseException | None], object],
) -> AsyncIterator[bytes]:
    """``answer`` (choice 0), then each answer of ``more`` (choices 1 to ``choices - 1``: ``n > 1``), as SSE
    frames, then the usage of all (``include_usage``) and ``[DONE]``: the last choice's finishing frame, the
    usage and ``[DONE]`` in one write. A failure after the first delta ends the stream with an error event
    (logged here); ``finish`` gets what ended the stream once: ``None``, that failure, or the client's going
    away."""
    failure: BaseException | None = None
    usages: list[Usage] = []
    end = b""  # what goes out with [DONE]
    try:
        lead = b""  # a choice's role chunk, sent with its first delta: one write for the first token
        try:
            index = 0
            current: Answer | None = answer
            while current is not None:
                async with aclosing(current):
                    role = writer.role(index)
                    lead = b"" if role is None else sse(role)
                    async for delta in current:
                        frame = writer.delta(delta, logprobs, index)
                        if delta.finish_reason is not None:  # the decision as it stands (confidence known)
                            frame["groupqwen"] = decision_json(
                                current.decision,
                                current.cache,
                                boxes=current.boxes,
                                translation=current.translation,
                            )
                        end, lead = end + lead + sse(frame), b""
                        if delta.usage is not None:
                            usages.append(delta.usage)
                        if delta.finish_reason is None or index < choices - 1:
                            yield end
                            end = b""
                current, index = await anext(more, None), index + 1
            if usages:
                total = total_usage(usages)
                timing.used(total)
                if include_usage:
                    end += sse(writer.usage(total))
        except GroupQwenError as exc:
            failure = exc
            _log.error("stream failed", code=exc.code, error=exc.message)
            end += lead + sse(error_body(exc))
        except Exception as exc:
            failure = exc
            _log.exception("stream failed", error=type(exc).__name__)
            unexpected = GroupQwenError("The stream failed; the request id identifies it in the logs")
            end += lead + sse(error_body(unexpected))
        finally:
            await more.aclose()
        yield end + DONE
    except BaseException as exc:
        failure = exc
        raise
    finally:
        finish(failure)
