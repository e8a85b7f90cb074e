"""Structured logging (key=value for consoles, or JSON lines) with the ``request_id`` on every line."""

from __future__ import annotations

import json
import logging
from contextvars import ContextVar
from typing import Any

request_id: ContextVar[str] = ContextVar("request_id", default="-")


def _format_value(value: Any) -> str:
    text = str(value)
    if not text or any(c in text for c in ' "=\n'):
        return '"' + text.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n") + '"'
    return text


class KeyValueFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        fields: dict[str, Any] = {
            "ts": self.formatTime(record, "%Y-%m-%dT%H:%M:%S"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "request_id": request_id.get(),
            "msg": record.getMessage(),
        }
        fields.update(getattr(record, "kv", {}))
        line = " ".join(f"{k}={_format_value(v)}" for k, v in fields.items())
        if record.exc_info:
            line += "\n" + self.formatException(record.exc_info)
        return line


class JsonFormatter(logging.Formatter):
    """One JSON object per line: ``ts``, ``level``, ``logger``, ``request_id``, ``msg`` and the fields."""

    def format(self, record: logging.LogRecord) -> str:
        fields: dict[str, Any] = {
            "ts": self.formatTime(record, "%Y-%m-%dT%H:%M:%S") + f".{int(record.msecs):03d}",
            "level": record.levelname.lower(),
            "logger": record.name,
            "request_id": request_id.get(),
            "msg": record.getMessage(),
        }
        fields.update(getattr(record, "kv", {}))
        if record.exc_info:
            fields["exception"] = self.formatException(record.exc_info)
        return json.dumps(fields, ensure_ascii=False, default=str)


def formatter(fmt: str = "console") -> logging.Formatter:
    """``console`` (key=value) or ``json``."""
    return JsonFormatter() if fmt == "json" else KeyValueFormatter()


def setup(level: str = "info", fmt: str = "console") -> None:
    """Install the ``fmt`` formatter (``console`` or ``json``) on the root logger (idempotent)."""
    root = logging.getLogger()
    root.setLevel(level.upper())
    for handler in root.handlers:
        if isinstance(handler.formatter, KeyValueFormatter | JsonFormatter):
            handler.setFormatter(formatter(fmt))
            return
    handler = logging.StreamHandler()
    handler.setFormatter(formatter(fmt))
    root.addHandler(handler)


class Logger:
    """A thin wrapper: ``log.info("loaded", model=m, seconds=1.2)``."""

    def __init__(self, name: str) -> None:
        self._logger = logging.getLogger(name)

    def _log(self, level: int, msg: str, kv: dict[str, Any], exc_info: bool = False) -> None:
        if self._logger.isEnabledFor(level):
            self._logger.log(level, msg, extra={"kv": kv}, exc_info=exc_info, stacklevel=3)

    def debug(self, msg: str, **kv: Any) -> None:
        self._log(logging.DEBUG, msg, kv)

    def info(self, msg: str, **kv: Any) -> None:
        self._log(logging.INFO, msg, kv)

    def warning(self, msg: str, **kv: Any) -> None:
        self._log(logging.WARNING, msg, kv)

    def error(self, msg: str, **kv: Any) -> None:
        self._log(logging.ERROR, msg, kv)

    def exception(self, msg: str, **kv: Any) -> None:
        self._log(logging.ERROR, msg, kv, exc_info=True)


def get(name: str) -> Logger:
    return Logger(name)
