"""Function calling in the Responses API: ``tools`` (``{"type": "function", "name", "parameters", …}``,
the function's fields on the tool itself), ``tool_choice`` (``auto``, ``none``, ``required`` or
``{"type": "function", "name": …}``), the ``function_call`` and ``function_call_output`` items a client
sends back, and the ``function_call`` items of an answer. Checked like the chat wire's tools
(``tools.tools_of``)."""

from __future__ import annotations

from typing import Any

from groupqwen.api.schemas import Wire
from groupqwen.api.schemas.tools import FunctionIn, NamedFunction, NamedToolChoice, ToolIn, tools_of
from groupqwen.errors import InvalidRequest, UnsupportedParameter
from groupqwen.messages import Message, ToolCall, Tools


class ResponsesTool(Wire):
    type: str
    name: str | None = None
    description: str | None = None
    parameters: dict[str, Any] | None = None
    strict: bool | None = None


class ResponsesToolChoice(Wire):
    type: str
    name: str | None = None


def response_tools(
    tools: list[ResponsesTool] | None, choice: str | ResponsesToolChoice | None, parallel: bool | None
) -> Tools | None:
    """The request's ``Tools`` (``None`` when it offers none)."""
    offered = None
    if tools is not None:
        offered = [
            ToolIn(
                type=t.type,
                function=None
                if t.name is None
                else FunctionIn(
                    name=t.name, description=t.description, parameters=t.parameters, strict=t.strict
                ),
            )
            for t in tools
        ]
    named: str | NamedToolChoice | None
    if isinstance(choice, ResponsesToolChoice):
        if choice.type != "function":
            raise UnsupportedParameter(
                f"tool_choice.type is {choice.type!r}: only 'function' (with a 'name') is supported",
                param="tool_choice.type",
            )
        if choice.name is None:
            raise InvalidRequest(
                "tool_choice.name is required: the function to call", param="tool_choice.name"
            )
        named = NamedToolChoice(type="function", function=NamedFunction(name=choice.name))
    else:
        named = choice
    return tools_of(offered, named, parallel, function="")


def tools_json(tools: Tools | None) -> tuple[list[dict[str, Any]], Any]:
    """The response object's ``tools`` and ``tool_choice``: the request's, in the Responses API's shape."""
    if tools is None:
        return [], "auto"
    listed = [
        {
            "type": "function",
            "name": t.name,
            "description": t.description,
            "parameters": t.parameters,
            "strict": t.strict,
        }
        for t in tools.functions
    ]
    choice: Any = {"type": "function", "name": tools.name} if tools.choice == "named" else tools.choice
    return listed, choice


def function_call_item(item_id: str, call: ToolCall, status: str) -> dict[str, Any]:
    return {
        "type": "function_call",
        "id": item_id,
        "call_id": call.id,
        "name": call.name,
        "arguments": call.arguments,
        "status": status,
    }


def call_of(call_id: str | None, name: str | None, arguments: str | None, where: str) -> ToolCall:
    """A ``function_call`` item sent back: the call an earlier answer made."""
    if not call_id:
        raise InvalidRequest(
            f"{where}.call_id is required in a 'function_call' item", param=f"{where}.call_id"
        )
    if not name:
        raise InvalidRequest(f"{where}.name is required in a 'function_call' item", param=f"{where}.name")
    if arguments is None:
        raise InvalidRequest(
            f"{where}.arguments is required in a 'function_call' item (a JSON string)",
            param=f"{where}.arguments",
        )
    return ToolCall(call_id, name, arguments)


def with_call(messages: list[Message], call: ToolCall) -> None:
    """Append ``call`` to the assistant turn it belongs to: the one just before it (its text, or the calls
    made with it), else a new assistant turn of its own."""
    last = messages[-1] if messages else None
    if last is not None and last.role == "assistant" and not last.parts:
        messages[-1] = Message("assistant", last.content, tool_calls=(*last.tool_calls, call))
    else:
        messages.append(Message("assistant", "", tool_calls=(call,)))
