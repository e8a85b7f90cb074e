"""The frames of ``/v1/ws`` a client sends, checked (``parse``), and the ``error`` frame (``error_frame``).

A frame that breaks the protocol raises ``Violation``: binary, larger than ``ws.max_frame_bytes``, not a
JSON object, an unknown ``type``, or a known one without its fields. ``ws.max_violations`` of them in a row
close the socket; anything else wrong (a duplicate id, an unknown one, a bad chat body) is an error frame
only.
"""

from __future__ import annotations

from typing import Any

from starlette.types import Message

from groupqwen.api.body import json_object
from groupqwen.api.errors import error_body
from groupqwen.api.openai import CACHE_HEADERS
from groupqwen.errors import GroupQwenError, InvalidRequest, PayloadTooLarge

MAX_ID_CHARS = 128
NORMAL_CLOSURE = 1000  # RFC 6455 close codes
POLICY_VIOLATION = 1008
GOING_AWAY = 1001
RESUMED_ELSEWHERE = 4001  # an application's own close code (4000-4999)


def error_frame(exc: GroupQwenError, gid: str | None = None) -> dict[str, Any]:
    frame: dict[str, Any] = {"type": "error"}
    if gid is not None:
        frame["id"] = gid
    return {**frame, "status": exc.status_code, **error_body(exc)}


class Violation(Exception):
    """A frame that breaks the protocol; counted towards ``ws.max_violations``."""

    def __init__(self, error: GroupQwenError, gid: str | None = None) -> None:
        self.error, self.gid = error, gid


def _string(frame: dict[str, Any], name: str, kind: str, limit: int = MAX_ID_CHARS) -> str:
    value = frame.get(name)
    if not isinstance(value, str) or not 0 < len(value) <= limit:
        raise InvalidRequest(
            f"A {kind!r} frame needs '{name}': a string of 1 to {limit} characters",
            param=name,
            code="invalid_frame",
        )
    return value


def resumes(frame: dict[str, Any]) -> list[tuple[str, int]]:
    wanted = frame.get("generations", [])
    problem = InvalidRequest(
        "'generations' of a 'resume' frame is a list of {\"id\": string, \"after_seq\": integer >= 0}",
        param="generations",
        code="invalid_frame",
    )
    if not isinstance(wanted, list):
        raise problem
    out: list[tuple[str, int]] = []
    for item in wanted:
        if not isinstance(item, dict):
            raise problem
        after = item.get("after_seq", 0)
        if not isinstance(after, int) or isinstance(after, bool) or after < 0:
            raise problem
        gid = _string(item, "id", "resume")
        if any(gid == seen for seen, _ in out):  # two after_seqs: frames would come twice
            raise InvalidRequest(
                f"A 'resume' frame names the generation {gid!r} twice: give each id once, with the last "
                "seq you saw of it",
                param="generations",
                code="invalid_frame",
            )
        out.append((gid, after))
    return out


def request_headers(frame: dict[str, Any]) -> dict[str, str]:
    """A ``chat.create``'s ``headers`` (names lower-cased): the HTTP request headers a generation may
    carry on its own, the cache's (``CACHE_HEADERS``); the others belong to the connection's upgrade."""
    headers = frame.get("headers", {})
    if not isinstance(headers, dict) or not all(isinstance(v, str) for v in headers.values()):
        raise InvalidRequest(
            "'headers' of a 'chat.create' frame is an object of header names to strings",
            param="headers",
            code="invalid_frame",
        )
    out = {str(name).lower(): value for name, value in headers.items()}
    for name in out:
        if name not in CACHE_HEADERS:
            raise InvalidRequest(
                f"A 'chat.create' frame's headers may be {', '.join(CACHE_HEADERS)}; not {name[:40]!r}",
                param="headers",
                code="invalid_frame",
            )
    return out


def parse(message: Message, max_bytes: int) -> tuple[str, str | None, dict[str, Any]]:
    """A client frame: its ``type``, ``id`` (when it has a string one) and the frame; ``Violation`` when
    it breaks the protocol (binary, oversized, not a JSON object, unknown type, fields missing)."""
    text = message.get("text")
    if text is None:
        error = InvalidRequest("Frames are JSON text; binary frames are not accepted", code="invalid_frame")
        raise Violation(error)
    raw = text.encode("utf-8", "surrogatepass")
    if len(raw) > max_bytes:
        error = PayloadTooLarge(f"The frame is {len(raw)} bytes; at most {max_bytes} (ws.max_frame_bytes)")
        raise Violation(error)
    gid = None
    try:
        frame = json_object(raw, "The frame")
        gid = frame.get("id") if isinstance(frame.get("id"), str) else None
        kind = frame.get("type")
        if kind in ("chat.create", "cancel"):
            gid = _string(frame, "id", kind)
            if kind == "chat.create" and not isinstance(frame.get("body"), dict):
                raise InvalidRequest(
                    "A 'chat.create' frame needs 'body': a POST /v1/chat/completions body (an object)",
                    param="body",
                    code="invalid_frame",
                )
            if kind == "chat.create":
                request_headers(frame)
        elif kind == "resume":
            _string(frame, "session", kind, 200)
            resumes(frame)
        elif kind not in ("ping", "pong"):
            raise InvalidRequest(
                f"Unknown frame type {str(kind)[:40]!r}: send chat.create, cancel, resume, ping or pong",
                param="type",
                code="unknown_type",
            )
    except InvalidRequest as exc:
        raise Violation(exc, gid) from None
    return str(kind), gid, frame
