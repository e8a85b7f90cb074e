"""Text helpers for in-process backends: stop strings over streamed bytes, and chat templates.

``StopFilter`` turns a token's raw bytes into text safe to emit, holding back what may start a stop
string. ``chat_template`` compiles a GGUF's Jinja chat template in a sandbox, with the globals and
filters that Hugging Face templates expect; ``template_message`` is a message as those templates take it.
"""

from __future__ import annotations

import codecs
import json
from datetime import datetime
from typing import Any

import jinja2
import jinja2.ext
from jinja2.sandbox import ImmutableSandboxedEnvironment

from groupqwen.messages import Message

CHATML_TEMPLATE = (
    "{% for message in messages %}{{ '<|im_start|>' + message['role'] + '\n' + message['content']"
    " + '<|im_end|>' + '\n' }}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}"
    "{% endif %}"
)


class StopFilter:
    """Incremental text with stop strings: never emits a stop string, holds back a possible start of one."""

    def __init__(self, stops: tuple[str, ...]) -> None:
        self._stops = tuple(s for s in stops if s)
        self._decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        self._pending = ""
        self._stopped = False

    def feed(self, data: bytes) -> tuple[str, bool]:
        """Return (text safe to emit, whether a stop string was hit)."""
        text = self._pending + self._decoder.decode(data)
        if not self._stops:
            self._pending = ""
            return text, False
        hits = [i for i in (text.find(s) for s in self._stops) if i >= 0]
        if hits:
            self._pending, self._stopped = "", True
            return text[: min(hits)], True
        hold = 0
        for stop in self._stops:
            for size in range(min(len(stop) - 1, len(text)), hold, -1):
                if text.endswith(stop[:size]):
                    hold = size
                    break
        self._pending = text[len(text) - hold :]
        return text[: len(text) - hold], False

    def flush(self) -> str:
        if self._stopped:
            return ""
        text = self._pending + self._decoder.decode(b"", final=True)
        self._pending = ""
        return text


def chat_template(source: str) -> jinja2.Template:
    """``source`` compiled in a sandboxed environment; raises ``jinja2.TemplateError`` when it is bad."""
    env = ImmutableSandboxedEnvironment(
        trim_blocks=True, lstrip_blocks=True, extensions=[jinja2.ext.loopcontrols]
    )
    env.globals["raise_exception"] = _raise_exception
    env.globals["strftime_now"] = lambda fmt: datetime.now().strftime(fmt)
    env.filters["tojson"] = _tojson
    return env.from_string(source)


def _raise_exception(message: str) -> None:
    raise jinja2.TemplateError(message)


def _tojson(
    value: Any, ensure_ascii: bool = False, indent: int | None = None, sort_keys: bool = False
) -> str:
    return json.dumps(value, ensure_ascii=ensure_ascii, indent=indent, sort_keys=sort_keys)


def template_message(message: Message) -> dict[str, Any]:
    """A message as Hugging Face chat templates take it: calls with their arguments as objects."""
    out: dict[str, Any] = {"role": message.role, "content": message.content}
    if message.tool_calls:
        out["tool_calls"] = [
            {"id": c.id, "type": "function", "function": {"name": c.name, "arguments": _object(c.arguments)}}
            for c in message.tool_calls
        ]
    if message.tool_call_id is not None:
        out["tool_call_id"] = message.tool_call_id
    return out


def _object(arguments: str) -> Any:
    try:
        return json.loads(arguments)
    except ValueError:
        return arguments  # checked at the edge; a template renders a string as it is
