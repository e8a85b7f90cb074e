"""Request bodies read (``read``) and parsed as JSON, once, at the edge: every route that reads a JSON body
parses it here.

Python's ``json`` accepts two things no layer behind the edge can use, so they are refused here with a
400 that names the field (``messages[0].content``), never left to fail deep inside as a 500:

- a lone UTF-16 surrogate escape (``"\\ud800"``): valid JSON, but not a Unicode character, so the text
  cannot be encoded as UTF-8 (the cache key, a backend's request, the embedder, the logs all encode it);
- an integer with more than ``MAX_INT_DIGITS`` digits: Python refuses to convert it (its int-string
  limit), and no field means anything with it.

Nesting is limited too: arrays and objects more than ``MAX_JSON_DEPTH`` levels deep are refused before
the parser runs (a scan over the brackets outside strings, which stops at the first level too deep), so
depth never reaches Python's recursion limit, in the parser or in any layer that walks the value after it
(pydantic, the cache key, the logs).
"""

from __future__ import annotations

import json
import re
from typing import Any

import numpy as np
from starlette.requests import ClientDisconnect, Request

from groupqwen.errors import InvalidRequest

MAX_INT_DIGITS = 4300  # Python's own default limit on int-string conversion (sys.int_info)
MAX_JSON_DEPTH = 64  # levels of arrays and objects; a JSON schema in response_format needs a dozen

# what is not a bracket outside strings: a JSON string (possessive: no backtracking over a long one), or
# a run of anything but brackets and quotes
_NOT_A_BRACKET = re.compile(r'"[^"\\]*+(?:\\.[^"\\]*+)*+"|[^\[\]{}"]++')
_OPENING = np.frombuffer(b"[{", dtype=np.uint8)
_CLOSING = np.frombuffer(b"]}", dtype=np.uint8)

# a \uD800-\uDFFF escape: only a body holding one can hold a surrogate (UTF-8 input cannot encode one)
_SURROGATE_ESCAPE = re.compile(r"\\u[dD][89a-fA-F][0-9a-fA-F]{2}")
_SURROGATE = re.compile("[\ud800-\udfff]")


class BodyProblem(ValueError):
    """A parsed JSON value that the gateway refuses; ``param`` is the path to it (``None``: the top)."""

    def __init__(self, param: str | None, problem: str) -> None:
        where = f"Invalid value for '{param}'" if param else "Invalid request body"
        super().__init__(f"{where}: {problem}")
        self.param = param


class _HugeInt:
    """Stands in for an integer too long to convert until the walk finds where it is."""

    __slots__ = ("digits",)

    def __init__(self, digits: int) -> None:
        self.digits = digits


class _Huge(Exception):
    """An integer too long to convert: the text is parsed again, the slow way, to find where it is."""


def _digits(literal: str) -> int:
    return len(literal) - literal.startswith("-")


def _int(literal: str) -> int:
    if _digits(literal) > MAX_INT_DIGITS:
        raise _Huge
    return int(literal)


def _int_or_marker(literal: str) -> int | _HugeInt:
    digits = _digits(literal)
    return _HugeInt(digits) if digits > MAX_INT_DIGITS else int(literal)


# built once: ``json.loads`` with any ``parse_int`` builds a decoder and its scanner on every call (3 µs,
# as long as the parse of a chat request's body itself)
_DECODER = json.JSONDecoder(parse_int=_int)
_MARKING_DECODER = json.JSONDecoder(parse_int=_int_or_marker)


def loads(text: str) -> Any:
    """``json.loads`` that raises :class:`BodyProblem` for nesting deeper than ``MAX_JSON_DEPTH``, a lone
    surrogate or a huge integer (besides ``json.JSONDecodeError`` for bad JSON)."""
    _check_depth(text)
    huge = False
    try:
        value = _DECODER.decode(text)
    except _Huge:  # refused below: parsed again with markers, so that the walk names the field
        value, huge = _MARKING_DECODER.decode(text), True
    if huge or _SURROGATE_ESCAPE.search(text):
        _check(value)
    return value


def _check_depth(text: str) -> None:
    """Raise :class:`BodyProblem` when arrays and objects nest deeper than ``MAX_JSON_DEPTH``: the depth
    is the running sum of the brackets outside strings (+1 opening, -1 closing), in C however many. A text
    with no more opening brackets than that, as nearly every request, cannot nest deeper: not walked."""
    if text.count("[") + text.count("{") <= MAX_JSON_DEPTH:
        return
    brackets = np.frombuffer(_NOT_A_BRACKET.sub("", text).encode("ascii"), dtype=np.uint8)
    steps = np.isin(brackets, _OPENING).astype(np.int32) - np.isin(brackets, _CLOSING)
    if steps.size and int(np.cumsum(steps).max()) > MAX_JSON_DEPTH:
        raise BodyProblem(
            None, f"JSON nested deeper than {MAX_JSON_DEPTH} levels of arrays and objects; flatten it"
        )


def _check(value: Any) -> None:
    """Raise :class:`BodyProblem` for the first refused value, in document order."""
    stack: list[tuple[str, Any]] = [("", value)]
    while stack:
        path, item = stack.pop()
        if isinstance(item, str):
            if _SURROGATE.search(item):
                raise BodyProblem(path or None, _surrogate_problem(item, "string"))
        elif isinstance(item, _HugeInt):
            raise BodyProblem(
                path or None, f"an integer with {item.digits} digits; at most {MAX_INT_DIGITS} are accepted"
            )
        elif isinstance(item, dict):
            children: list[tuple[str, Any]] = []
            for key, child in item.items():
                if _SURROGATE.search(key):
                    raise BodyProblem(path or None, _surrogate_problem(key, "key"))
                children.append((f"{path}.{key}" if path else key, child))
            stack.extend(reversed(children))
        elif isinstance(item, list):
            stack.extend((f"{path}[{i}]", child) for i, child in reversed(list(enumerate(item))))


def _surrogate_problem(text: str, what: str) -> str:
    found = _SURROGATE.search(text)
    assert found is not None
    escape = f"\\u{ord(found.group()):04x}"
    return (
        f"the {what} holds a lone UTF-16 surrogate ({escape}), which is not a Unicode character; "
        "send text as UTF-8, or a surrogate pair's two escapes together"
    )


def json_object(raw: bytes, what: str = "The request body") -> dict[str, Any]:
    """A request body that must be one JSON object; every problem is an :class:`InvalidRequest`."""
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise InvalidRequest(f"{what} is not valid UTF-8 (byte {exc.start})") from None
    try:
        data = loads(text)
    except json.JSONDecodeError as exc:
        raise InvalidRequest(
            f"{what} is not valid JSON: {exc.msg} at line {exc.lineno} column {exc.colno}"
        ) from None
    except BodyProblem as exc:
        raise InvalidRequest(str(exc), param=exc.param) from None
    if not isinstance(data, dict):
        raise InvalidRequest(f"{what} must be a JSON object")
    return data


async def read(request: Request) -> bytes:
    """``request``'s body, as Starlette's ``Request.body`` reads it (``ClientDisconnect`` when the client
    goes first), from its ``receive`` directly: ``Request.stream`` is an async generator, closed by an
    ``aclosing`` and started through the event loop's hooks, for a body that nearly always comes whole in
    one message. Read it once: the body is not kept on ``request``."""
    chunks: list[bytes] = []
    while True:
        message = await request.receive()
        if message["type"] == "http.disconnect":
            raise ClientDisconnect()
        chunks.append(message.get("body", b""))
        if not message.get("more_body", False):
            return b"".join(chunks)
