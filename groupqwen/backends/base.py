"""The ``Backend`` protocol every model server implements, and the error boundary around it."""

from __future__ import annotations

from collections.abc import AsyncGenerator, Iterator
from contextlib import contextmanager
from typing import Protocol, runtime_checkable

from groupqwen import log
from groupqwen.errors import BackendError, GroupQwenError
from groupqwen.messages import Chunk, GenerationRequest

_log = log.get(__name__)


@runtime_checkable
class Backend(Protocol):
    """One loaded model.

    ``stream`` yields ``Chunk``s; the last one carries ``finish_reason`` and ``usage``. It raises
    ``ContextLengthExceeded`` before yielding anything when the prompt does not fit. Closing the iterator
    early (a client went away) stops the generation promptly and frees the model.
    """

    model_id: str

    async def load(self) -> None:
        """Make the model ready; idempotent. Raises ``ModelLoadError``."""
        ...

    def stream(self, request: GenerationRequest) -> AsyncGenerator[Chunk, None]: ...

    async def close(self) -> None:
        """Free the model's memory; idempotent."""
        ...


@contextmanager
def map_backend_errors(model_id: str) -> Iterator[None]:
    """Translate foreign exceptions raised by a backend into ``BackendError`` (502)."""
    try:
        yield
    except GroupQwenError:
        raise
    except Exception as exc:
        _log.exception("backend failed", model=model_id, error=type(exc).__name__)
        raise BackendError(f"model {model_id!r} failed: {type(exc).__name__}: {exc}") from exc
