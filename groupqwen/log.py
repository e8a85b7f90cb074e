"""Structured key=value logging with the current ``request_id`` on every line."""

from __future__ import annotations

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


def setup(level: str = "info") -> None:
    """Install the key=value formatter on the root logger (idempotent)."""
    root = logging.getLogger()
    root.setLevel(level.upper())
    for handler in root.handlers:
        if isinstance(handler.formatter, KeyValueFormatter):
            return
    handler = logging.StreamHandler()
    handler.setFormatter(KeyValueFormatter())
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
