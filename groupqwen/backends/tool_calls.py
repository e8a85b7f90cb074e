"""Hermes-style tool calls, as Qwen2.5 and Qwen3 write them, for in-process models.

A model that calls a tool writes ``<tool_call>{"name": …, "arguments": {…}}</tool_call>`` (one block per
call); small models (Qwen2.5-Coder-0.5B) often write bare objects instead, which count as calls when they
start the answer (one after another, or in a Markdown code block) and name an offered function.
``ToolCallParser`` reads calls out of a stream of text: text outside them is the answer's ``content`` (a
possible start of ``<tool_call>`` is held back until it can be told apart); each call becomes a
``ToolCallDelta`` with its id and name as soon as the name is known, then its ``arguments`` as they arrive
(OpenAI's streamed shape). A call whose JSON is malformed, whose arguments are not an object, or that names
a function the request did not offer raises ``BackendError`` with what was wrong; a call cut off by
``max_tokens`` keeps what was streamed (the finish reason says ``length``).

``call_grammar`` is the llama.cpp grammar (GBNF) of the blocks the request allows: the offered functions,
each with its own parameters' JSON schema, one block or several (``parallel``). The backend applies it from
the first token when the request forces a call (``required``, a named function): those calls are always
valid. With ``auto`` the model writes freely and the parser judges what it wrote. (llama.cpp's *lazy*
grammars, which would constrain only from ``<tool_call>`` on, abort the process when the text that
triggered them does not fit the grammar: not used.)

``fold_tools`` renders tools for a chat template that knows nothing of them (SmolLM2's): the Hermes
instructions join the system prompt, and calls and results become text turns.
"""

from __future__ import annotations

import json
import re
import secrets
from collections.abc import Callable
from typing import Any

from groupqwen.errors import BackendError, InvalidRequest
from groupqwen.messages import Message, ToolCall, ToolCallDelta, Tools

OPEN, CLOSE = "<tool_call>", "</tool_call>"
# the start of a block, up to its arguments' value: streaming starts here (name first, as Qwen writes it)
_HEAD = re.compile(r'\s*\{\s*"name"\s*:\s*"((?:[^"\\]|\\.)*)"\s*,\s*"arguments"\s*:\s*')
_TAIL = re.compile(r"\s*\}?\s*")
_BARE_TAIL = re.compile(r"\s*\}")
_FENCE = re.compile(r"\s*```(?:json)?[ \t]*\n?")  # a bare call in a Markdown code block


def new_call_id() -> str:
    return f"call_{secrets.token_hex(12)}"


def _held(text: str, tag: str) -> int:
    """Length of the longest suffix of ``text`` that is a proper prefix of ``tag``."""
    for n in range(min(len(tag) - 1, len(text)), 0, -1):
        if text.endswith(tag[:n]):
            return n
    return 0


class ToolCallParser:
    """Feed text pieces, get ``(content, tool call pieces)`` back; ``finish`` at the end of the stream.
    ``calls`` lists the complete calls so far; ``done`` says when no more may follow."""

    def __init__(self, tools: Tools, model_id: str, new_id: Callable[[], str] = new_call_id) -> None:
        self._names = {t.name for t in tools.functions}
        self._parallel = tools.parallel
        self._model_id = model_id
        self._new_id = new_id
        self._state = "text"  # text | head | args | tail | raw
        self._buffer = ""
        self._after_call = False  # drop the whitespace between blocks
        self._said = False  # content other than whitespace was emitted: no bare call any more
        self._bare = False  # the current call is a bare object, not a block
        self._window = 64 + max((len(n) for n in self._names), default=0)  # a bare call's head fits in it
        self._current: ToolCall | None = None
        self._depth, self._in_string, self._escaped, self._started = 0, False, False, False
        self.calls: list[ToolCall] = []

    @property
    def done(self) -> bool:
        """Without ``parallel`` calls, the first complete call ends the answer (stop generating)."""
        return not self._parallel and bool(self.calls)

    def feed(self, text: str) -> tuple[str, tuple[ToolCallDelta, ...]]:
        self._buffer += text
        content: list[str] = []
        pieces: list[ToolCallDelta] = []
        while self._buffer and self._step(content, pieces):
            pass
        return "".join(content), tuple(pieces)

    def finish(self, truncated: bool) -> tuple[str, tuple[ToolCallDelta, ...]]:
        """The rest, at the end of the generation; ``truncated``: it stopped at ``max_tokens``."""
        content: list[str] = []
        pieces: list[ToolCallDelta] = []
        rest, self._buffer = self._buffer, ""
        if self._state == "text":
            if self._may_be_bare() and self._bare_call(rest, pieces):
                return "", tuple(pieces)
            if not (self.calls and rest.strip() in ("", "```" if self._bare else "")):
                content.append(rest.lstrip() if self._after_call else rest)
        elif self._state == "head":
            if truncated and not rest.strip().endswith("}"):
                content.append(OPEN + rest)  # cut off before its name: the raw text, as written
            else:
                self._whole_block(rest, pieces)
        elif self._state in ("args", "tail", "raw"):
            if self._state == "args" and not truncated:
                raise self._invalid("its arguments end before their JSON object is closed")
            if self._state == "tail" and not _TAIL.fullmatch(rest):
                raise self._invalid(f"unexpected text after its arguments: {rest[:80]!r}")
            if self._state == "raw":
                self._raw_arguments(rest, pieces)
            self._complete()
        return "".join(content), tuple(pieces)

    # -- states ------------------------------------------------------------------------------------------

    def _step(self, content: list[str], pieces: list[ToolCallDelta]) -> bool:
        """Advance through the buffer; ``False`` when it needs more text."""
        if self._state == "text":
            return self._text(content, pieces)
        if self._state == "head":
            return self._head(pieces)
        if self._state == "args":
            return self._args(pieces)
        if self._bare:  # a bare call ends with the object's brace, a raw one with the stream
            match = _BARE_TAIL.match(self._buffer)
            if self._state == "raw" or match is None:
                if self._buffer.strip():
                    raise self._invalid(f"unexpected text after its arguments: {self._buffer[:80]!r}")
                return False
            self._buffer = self._buffer[match.end() :]
            self._complete()
            return True
        end = self._buffer.find(CLOSE)
        if end < 0:
            return False
        inside, self._buffer = self._buffer[:end], self._buffer[end + len(CLOSE) :]
        if self._state == "tail":
            if not _TAIL.fullmatch(inside):
                raise self._invalid(f"unexpected text after its arguments: {inside[:80]!r}")
        else:
            self._raw_arguments(inside, pieces)
        self._complete()
        return True

    def _may_be_bare(self) -> bool:
        """Whether the buffer may be (the start of) a bare call: at the start of the answer, or right after
        another bare call."""
        first = not self._said and not self.calls
        return (first or self._bare) and self._buffer.lstrip()[:1] in ("", "{", "`")

    def _bare_call(self, text: str, pieces: list[ToolCallDelta]) -> bool:
        """Whether ``text``, the rest of the answer, is a bare call to an offered function (then it is
        one)."""
        fence = _FENCE.match(text)
        if fence is not None:
            text = text[fence.end() :].rstrip().removesuffix("```")
        try:
            value = json.loads(text)
        except ValueError:
            return False
        if not (isinstance(value, dict) and value.get("name") in self._names and "arguments" in value):
            return False
        self._bare = True
        self._start(value["name"], pieces)
        self._more(_arguments_text(value["arguments"], self._invalid), pieces)
        self._complete()
        return True

    def _text(self, content: list[str], pieces: list[ToolCallDelta]) -> bool:
        if self._may_be_bare():
            fence = _FENCE.match(self._buffer)
            start = 0 if fence is None else fence.end()
            match = _HEAD.match(self._buffer, start)
            if match is not None and _name(match.group(1)) in self._names:
                self._bare, self._buffer = True, self._buffer[start:]
                return self._head(pieces)
            if len(self._buffer) <= self._window:
                return False  # may still become a bare call
            self._said = True
        if self._bare:
            return False  # after a bare call: only a closing fence may follow; ``finish`` decides
        if self._after_call:
            self._buffer = self._buffer.lstrip()
            if not self._buffer:
                return False
            self._after_call = False
        start = self._buffer.find(OPEN)
        if start >= 0:
            content.append(self._buffer[:start].rstrip())
            self._said = self._said or bool(content[-1])
            self._buffer = self._buffer[start + len(OPEN) :]
            self._state, self._bare = "head", False
            return True
        safe = self._buffer[: len(self._buffer) - _held(self._buffer, OPEN)]
        safe = safe.rstrip()  # whitespace right before a block is layout: held until text follows
        content.append(safe)
        self._said = self._said or bool(safe)
        self._buffer = self._buffer[len(safe) :]
        return False

    def _head(self, pieces: list[ToolCallDelta]) -> bool:
        match = _HEAD.match(self._buffer)
        if match is not None:
            name = _name(match.group(1))
            if name is None:
                raise self._invalid(f"its name is not a valid JSON string: {match.group(1)[:80]!r}")
            self._start(name, pieces)
            self._buffer = self._buffer[match.end() :]
            self._state = "args"
            self._depth, self._in_string, self._escaped, self._started = 0, False, False, False
            return True
        end = self._buffer.find(CLOSE)
        if end < 0:
            return False
        block, self._buffer = self._buffer[:end], self._buffer[end + len(CLOSE) :]
        self._whole_block(block, pieces)
        return True

    def _args(self, pieces: list[ToolCallDelta]) -> bool:
        """Stream the arguments object, character by character, until its closing brace."""
        text = self._buffer
        if not self._started:
            text = text.lstrip()
            if not text:
                self._buffer = ""
                return False
            if text[0] != "{":  # arguments written as a JSON string (or worse): read the whole block
                self._buffer, self._state = text, "raw"
                return True
            self._started = True
        end = len(text)
        for i, char in enumerate(text):
            if self._in_string:
                if self._escaped:
                    self._escaped = False
                elif char == "\\":
                    self._escaped = True
                elif char == '"':
                    self._in_string = False
            elif char == '"':
                self._in_string = True
            elif char in "{[":
                self._depth += 1
            elif char in "}]":
                self._depth -= 1
                if self._depth == 0:
                    end = i + 1
                    break
        self._more(text[:end], pieces)
        self._buffer = text[end:]
        if self._depth == 0:
            assert self._current is not None
            try:
                value = json.loads(self._current.arguments)
            except ValueError as exc:
                raise self._invalid(f"its arguments are not valid JSON ({exc})") from None
            if not isinstance(value, dict):
                raise self._invalid("its arguments are not a JSON object")
            self._state = "tail"
            return True
        return False

    # -- calls -------------------------------------------------------------------------------------------

    def _start(self, name: str, pieces: list[ToolCallDelta]) -> None:
        if name not in self._names:
            offered = ", ".join(sorted(self._names))
            raise self._invalid(f"it names {name!r}, which is not among the request's tools ({offered})")
        self._current = ToolCall(self._new_id(), name, "")
        pieces.append(ToolCallDelta(len(self.calls), self._current.id, name, ""))

    def _more(self, text: str, pieces: list[ToolCallDelta]) -> None:
        assert self._current is not None
        if text:
            self._current = ToolCall(self._current.id, self._current.name, self._current.arguments + text)
            pieces.append(ToolCallDelta(len(self.calls), arguments=text))

    def _complete(self) -> None:
        assert self._current is not None
        self.calls.append(self._current)
        self._current = None
        self._state, self._after_call = "text", True

    def _whole_block(self, block: str, pieces: list[ToolCallDelta]) -> None:
        """A block read whole (its fields in another order, or the stream ended before its close tag)."""
        try:
            value = json.loads(block)
        except ValueError as exc:
            raise self._invalid(f"it is not valid JSON ({exc}): {block.strip()[:80]!r}") from None
        if not isinstance(value, dict) or not isinstance(value.get("name"), str) or "arguments" not in value:
            raise self._invalid('it is not an object with "name" and "arguments"')
        self._start(value["name"], pieces)
        self._more(_arguments_text(value["arguments"], self._invalid), pieces)
        self._complete()

    def _raw_arguments(self, inside: str, pieces: list[ToolCallDelta]) -> None:
        """The rest of a block whose arguments' value is not an object literal: ``value }``."""
        text = inside.strip()
        if not text.endswith("}"):
            raise self._invalid(f"it does not end with '}}': {text[-80:]!r}")
        try:
            value = json.loads(text[:-1])
        except ValueError as exc:
            raise self._invalid(f"its arguments are not valid JSON ({exc})") from None
        self._more(_arguments_text(value, self._invalid), pieces)

    def _invalid(self, why: str) -> BackendError:
        return BackendError(f"model {self._model_id!r} wrote a tool call that cannot be used: {why}")


def _name(raw: str) -> str | None:
    """The function name from the inside of its JSON string; ``None`` when the escapes are invalid."""
    try:
        name = json.loads(f'"{raw}"')
    except ValueError:
        return None
    return name if isinstance(name, str) else None


def _arguments_text(value: Any, invalid: Callable[[str], BackendError]) -> str:
    """OpenAI's ``arguments``: a JSON object's text (a JSON string holding one is unwrapped)."""
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except ValueError:
            raise invalid("its arguments are a string that is not JSON") from None
    if not isinstance(value, dict):
        raise invalid("its arguments are not a JSON object")
    return json.dumps(value, ensure_ascii=False)


def call_grammar(tools: Tools) -> str:
    """The GBNF of the tool-call blocks ``tools`` allows (each function's parameters as its schema)."""
    from llama_cpp.llama_grammar import json_schema_to_gbnf

    offered = [t for t in tools.functions if tools.choice != "named" or t.name == tools.name]
    schemas = [
        {
            "type": "object",
            "properties": {
                "name": {"const": t.name},
                "arguments": t.parameters if t.parameters is not None else {"type": "object"},
            },
            "required": ["name", "arguments"],
            "additionalProperties": False,
        }
        for t in offered
    ]
    schema = schemas[0] if len(schemas) == 1 else {"anyOf": schemas}
    try:
        rules = json_schema_to_gbnf(json.dumps(schema))
    except Exception as exc:  # the converter raises whatever it meets
        raise InvalidRequest(
            f"a tool's parameters are not a JSON schema llama.cpp can enforce: {exc}", param="tools"
        ) from exc
    rules = re.sub(r"^root ::=", "tool-call ::=", rules, flags=re.MULTILINE)
    block = '"<tool_call>" "\\n"? tool-call "\\n"? "</tool_call>"'
    more = f' ("\\n" {block})*' if tools.parallel else ""
    return f"root ::= {block}{more}\n{rules}"


def instructions(tools: Tools) -> str:
    """The Hermes tool instructions (as Qwen2.5's template words them), for a template without tools."""
    lines = "\n".join(json.dumps(t.as_json(), ensure_ascii=False) for t in tools.functions)
    return (
        "# Tools\n\nYou may call one or more functions to assist with the user query.\n\n"
        f"You are provided with function signatures within <tools></tools> XML tags:\n<tools>\n{lines}\n"
        "</tools>\n\nFor each function call, return a json object with function name and arguments within "
        '<tool_call></tool_call> XML tags:\n<tool_call>\n{"name": <function-name>, "arguments": '
        "<args-json-object>}\n</tool_call>"
    )


def call_text(call: ToolCall) -> str:
    """A call as the model writes it (for a template without tools)."""
    return f'{OPEN}\n{{"name": {json.dumps(call.name)}, "arguments": {call.arguments}}}\n{CLOSE}'


def fold_tools(messages: tuple[Message, ...], tools: Tools | None) -> tuple[Message, ...]:
    """``messages`` for a template that knows no tools: the instructions (when the model may call) join
    the system prompt, calls become assistant text and results user turns in ``<tool_response>`` tags."""
    out: list[Message] = []
    for m in messages:
        if m.role == "tool":
            result = f"<tool_response>\n{m.content}\n</tool_response>"
            if out and out[-1].role == "user" and out[-1].content.startswith("<tool_response>"):
                out[-1] = Message("user", f"{out[-1].content}\n{result}")
            else:
                out.append(Message("user", result))
        elif m.tool_calls:
            said = [m.content] if m.content else []
            out.append(Message("assistant", "\n".join(said + [call_text(c) for c in m.tool_calls])))
        else:
            out.append(m)
    if tools is not None and tools.active:
        if out and out[0].role == "system":
            out[0] = Message("system", f"{out[0].content}\n\n{instructions(tools)}")
        else:
            out.insert(0, Message("system", instructions(tools)))
    return tuple(out)
