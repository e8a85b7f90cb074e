"""Tool calling on the chat-completions wire: ``tools``, ``tool_choice``, ``parallel_tool_calls``, assistant
``tool_calls`` and ``tool`` messages (→ ``messages.Tools``, ``ToolCall``), and the calls of an answer as JSON
and as streamed ``delta.tool_calls``. The legacy ``functions``/``function_call`` are refused with what to
send instead (``chat.REFUSED``)."""

from __future__ import annotations

import re
from typing import Any, Literal

from pydantic import Field

from groupqwen.api.schemas import Wire
from groupqwen.errors import InvalidRequest, UnsupportedParameter
from groupqwen.messages import Tool, ToolCall, ToolCallDelta, ToolChoice, Tools

_NAME = re.compile(r"[A-Za-z0-9_-]{1,64}")


class FunctionIn(Wire):
    name: str
    description: str | None = None
    parameters: dict[str, Any] | None = None
    strict: bool | None = None


class ToolIn(Wire):
    type: str
    function: FunctionIn | None = None


class NamedFunction(Wire):
    name: str


class NamedToolChoice(Wire):
    type: Literal["function"]
    function: NamedFunction


class FunctionCallIn(Wire):
    name: str
    arguments: str


class ToolCallIn(Wire):
    id: str = Field(min_length=1)
    type: Literal["function"] = "function"
    function: FunctionCallIn


def tools_of(
    tools: list[ToolIn] | None,
    choice: str | NamedToolChoice | None,
    parallel: bool | None,
    function: str = ".function",
) -> Tools | None:
    """The request's ``Tools``; ``None`` when it offers none (then ``tool_choice`` may only be ``none``).
    ``function`` is where a tool's fields sit in the request (the Responses API has them on the tool itself:
    ``""``), for the ``param`` of an error."""
    if not tools:
        if choice is not None and choice != "none":
            raise InvalidRequest("'tool_choice' needs 'tools' to choose from", param="tool_choice")
        return None
    functions: list[Tool] = []
    for i, tool in enumerate(tools):
        where = f"tools[{i}]"
        if tool.type != "function":
            raise UnsupportedParameter(
                f"{where}.type is {tool.type!r}: only 'function' tools are supported", param=f"{where}.type"
            )
        if tool.function is None:
            at = f"{where}{function or '.name'}"
            raise InvalidRequest(f"{at} is required", param=at)
        name = tool.function.name
        if not _NAME.fullmatch(name):
            raise InvalidRequest(
                f"{where}{function}.name {name[:80]!r} must be 1 to 64 letters, digits, '_' or '-'",
                param=f"{where}{function}.name",
            )
        if any(f.name == name for f in functions):
            raise InvalidRequest(
                f"{where}: the function {name!r} is offered twice", param=f"{where}{function}.name"
            )
        f = tool.function
        functions.append(Tool(name, f.description, f.parameters, f.strict))
    modes: dict[str, ToolChoice] = {"auto": "auto", "none": "none", "required": "required"}
    mode: ToolChoice = "auto"
    named: str | None = None
    if isinstance(choice, NamedToolChoice):
        named, mode = choice.function.name, "named"
        if all(f.name != named for f in functions):
            offered = ", ".join(repr(f.name) for f in functions)
            raise InvalidRequest(
                f"tool_choice names {named!r}, which is not among the tools ({offered})",
                param=f"tool_choice{function}.name",
            )
    elif choice in modes:
        mode = modes[choice]
    elif choice is not None:
        named_shape = (
            '{"type": "function", "function": {"name": …}}' if function else '{"type": "function", "name": …}'
        )
        raise InvalidRequest(
            f"tool_choice must be 'auto', 'none', 'required' or {named_shape}, not {choice[:40]!r}",
            param="tool_choice",
        )
    return Tools(tuple(functions), mode, named, True if parallel is None else parallel)


def calls_of(calls: list[ToolCallIn] | None) -> tuple[ToolCall, ...]:
    """An assistant message's ``tool_calls``."""
    return tuple(ToolCall(c.id, c.function.name, c.function.arguments) for c in calls or ())


def check_tool_results(ids_so_far: set[str], call_id: str | None, param: str) -> str:
    """A tool result's call id (at ``param``), which must answer a call an earlier assistant turn made."""
    if not call_id:
        raise InvalidRequest(f"{param} is required: the id of the tool call this result answers", param=param)
    if call_id not in ids_so_far:
        raise InvalidRequest(
            f"{param} {call_id[:80]!r} answers no tool call of an earlier assistant turn", param=param
        )
    return call_id


def tool_call_deltas_json(pieces: tuple[ToolCallDelta, ...]) -> list[dict[str, Any]]:
    """Streamed pieces in OpenAI's shape: the first of a call with ``id``, ``type`` and ``function.name``."""
    out: list[dict[str, Any]] = []
    for p in pieces:
        if p.id is not None:
            function = {"name": p.name, "arguments": p.arguments}
            out.append({"index": p.index, "id": p.id, "type": "function", "function": function})
        else:
            out.append({"index": p.index, "function": {"arguments": p.arguments}})
    return out
