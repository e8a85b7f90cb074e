"""``POST /v1/completions`` on the wire (OpenAI's legacy text completions): the request (→ a ``ChatRequest``
whose one user turn is the prompt, continued as written: ``raw_prompt``), the JSON answer and the chunks of a
streamed one."""

from __future__ import annotations

import time
from typing import Any

from pydantic import Field

from groupqwen import log
from groupqwen.api.schemas import FalseIfNull, Wire
from groupqwen.api.schemas.chat import MAX_CHOICES, StreamOptions
from groupqwen.api.schemas.chat_output import usage_json
from groupqwen.errors import InvalidRequest, UnsupportedParameter
from groupqwen.messages import (
    ChatRequest,
    Completion,
    Decision,
    Delta,
    Message,
    Sampling,
    TokenLogprob,
    Usage,
)

_log = log.get(__name__)

DEFAULT_MAX_TOKENS = 16  # OpenAI's default for text completions (chat has none)


class CompletionRequest(Wire):
    """``POST /v1/completions``. Unknown fields are accepted and logged, except ``REFUSED`` ones."""

    model: str = Field(min_length=1)
    prompt: str | list[str] | list[int] | list[list[int]]
    max_tokens: int | None = Field(DEFAULT_MAX_TOKENS, ge=1)
    temperature: float | None = Field(None, ge=0, le=2)
    top_p: float | None = Field(None, gt=0, le=1)
    stream: FalseIfNull = False
    stream_options: StreamOptions | None = None
    stop: str | list[str] | None = None
    seed: int | None = None
    logprobs: int | None = Field(None, ge=0, le=5)
    echo: FalseIfNull = False
    n: int | None = Field(None, ge=1, le=MAX_CHOICES)
    best_of: int | None = Field(None, ge=1, le=MAX_CHOICES)
    suffix: str | None = None
    user: str | None = None


# Fields whose meaning we cannot honour: silently ignoring them would change what the client gets.
REFUSED = {
    "suffix": "fill-in-the-middle is not supported: send the text before the gap as the prompt",
}


def _prompt(body: CompletionRequest) -> str:
    prompt: object = body.prompt
    if isinstance(prompt, list):
        if not prompt or not all(isinstance(p, str) for p in prompt):
            raise UnsupportedParameter(
                "'prompt' must be a string (or a list of one string): token-id prompts are not supported",
                param="prompt",
            )
        if len(prompt) > 1:
            raise UnsupportedParameter(
                f"'prompt' has {len(prompt)} prompts: send one prompt per request", param="prompt"
            )
        prompt = prompt[0]
    if not isinstance(prompt, str) or not prompt:
        raise InvalidRequest("'prompt' is empty: give the text to continue", param="prompt")
    return prompt


def to_chat_request(body: CompletionRequest, max_stop_sequences: int) -> ChatRequest:
    """The request as the orchestrator runs it: the prompt as the one user turn, ``raw_prompt`` (no chat
    template, no thinking)."""
    extra = dict(body.model_extra or {})
    if extra.get("suffix") is not None or body.suffix:
        raise UnsupportedParameter(f"'suffix' is not supported: {REFUSED['suffix']}", param="suffix")
    if extra:
        _log.info("ignoring unsupported fields", fields=",".join(sorted(extra)))
    n = body.n or 1
    if body.best_of is not None and body.best_of < n:
        raise InvalidRequest(f"'best_of' ({body.best_of}) must be at least 'n' ({n})", param="best_of")
    if body.best_of is not None and body.best_of > n:
        raise UnsupportedParameter(
            "'best_of' greater than 'n' is not supported (no server-side ranking): ask for 'n' choices and "
            "pick among them",
            param="best_of",
        )
    if body.echo and body.logprobs is not None:
        raise UnsupportedParameter(
            "'echo' with 'logprobs' is not supported: the prompt's tokens are not scored", param="echo"
        )
    stops = [body.stop] if isinstance(body.stop, str) else list(body.stop or [])
    if len(stops) > max_stop_sequences:
        raise InvalidRequest(
            f"'stop' has {len(stops)} sequences; at most {max_stop_sequences} are allowed", param="stop"
        )
    return ChatRequest(
        messages=(Message("user", _prompt(body)),),
        model=body.model,
        sampling=Sampling(
            temperature=body.temperature,
            top_p=body.top_p,
            seed=body.seed,
            stop=tuple(s for s in stops if s),
            max_tokens=body.max_tokens,
        ),
        logprobs=body.logprobs is not None,
        top_logprobs=body.logprobs or 0,
        user=body.user,
        enable_thinking=False,
        raw_prompt=True,
        n=n,
        stream=bool(body.stream),
    )


# --------------------------------------------------------------------------------------------------------
# Responses, built as plain dicts.


def logprobs_json(items: tuple[TokenLogprob, ...], offset: int) -> dict[str, Any]:
    """Legacy log-probabilities: ``tokens``, ``token_logprobs``, ``top_logprobs`` (one ``{token: logprob}``
    per token) and each token's ``text_offset`` from ``offset`` on."""
    offsets = []
    for item in items:
        offsets.append(offset)
        offset += len(item.token)
    return {
        "tokens": [item.token for item in items],
        "token_logprobs": [item.logprob for item in items],
        "top_logprobs": [{t.token: t.logprob for t in item.top} for item in items],
        "text_offset": offsets,
    }


def completion_json(
    completion_id: str,
    decision: Decision,
    completions: list[Completion],
    usage: Usage,
    logprobs: bool,
    echo: str,
) -> dict[str, Any]:
    """The ``text_completion`` of ``completions`` (one per choice) and their ``usage`` (``total_usage``)."""
    choices = [
        {
            "index": index,
            "text": echo + completion.content,
            "logprobs": logprobs_json(completion.logprobs, len(echo)) if logprobs else None,
            "finish_reason": completion.finish_reason,
        }
        for index, completion in enumerate(completions)
    ]
    return {
        "id": completion_id,
        "object": "text_completion",
        "created": int(time.time()),
        "model": decision.model,
        "choices": choices,
        "usage": usage_json(usage),
    }


class TextChunkWriter:
    """Builds the ``text_completion`` chunks of one streamed answer; the first carries the echoed prompt."""

    def __init__(self, completion_id: str, model: str, echo: str) -> None:
        self._base = {
            "id": completion_id,
            "object": "text_completion",
            "created": int(time.time()),
            "model": model,
        }
        self._echo = echo
        self._offset = len(echo)

    def _chunk(self, text: str, finish: str | None, logprobs: Any = None, index: int = 0) -> dict[str, Any]:
        choice = {"index": index, "text": text, "logprobs": logprobs, "finish_reason": finish}
        return {**self._base, "choices": [choice]}

    def role(self, index: int = 0) -> dict[str, Any] | None:
        self._offset = len(self._echo)  # each choice's offsets count from its own start
        return self._chunk(self._echo, None, index=index) if self._echo else None

    def delta(self, delta: Delta, logprobs: bool, index: int = 0) -> dict[str, Any]:
        scored = logprobs_json(delta.logprobs, self._offset) if logprobs else None
        self._offset += len(delta.content)
        return self._chunk(delta.content, delta.finish_reason, scored, index)

    def usage(self, usage: Usage) -> dict[str, Any]:
        return {**self._base, "choices": [], "usage": usage_json(usage)}
