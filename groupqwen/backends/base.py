"""The ``Backend`` protocol every model server implements, and the error boundary around it.

A backend is the boundary between GroupQwen and a foreign library or server: whatever llama.cpp, httpx or
the operating system raise inside ``load`` and ``stream`` leaves the backend as a ``GroupQwenError``
(``map_backend_errors``), so the pool and the cascade above only ever see those. Nothing is logged here:
an error is logged where it is handled.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator
from typing import Protocol, runtime_checkable

from groupqwen.errors import BackendError, GroupQwenError
from groupqwen.messages import Chunk, GenerationRequest, ReplicaState


@runtime_checkable
class Backend(Protocol):
    """One loaded model.

    ``stream`` yields ``Chunk``s; the last one carries ``finish_reason`` and ``usage``. It raises
    ``ContextLengthExceeded`` before yielding anything when the prompt does not fit, and ``BackendError``
    when the model fails. Closing the iterator early (a client went away) stops the generation promptly
    and frees the model.
    """

    model_id: str

    async def load(self) -> None:
        """Make the model ready; idempotent. Raises ``ModelLoadError``."""
        ...

    def stream(self, request: GenerationRequest) -> AsyncGenerator[Chunk, None]: ...

    def replicas(self) -> tuple[ReplicaState, ...]:
        """The servers behind this model, each with its health and counters; () when it runs in-process."""
        ...

    async def close(self) -> None:
        """Free the model's memory; idempotent."""
        ...


class map_backend_errors:  # named as the function it was: ``with map_backend_errors(model_id):``
    """Translate a foreign exception raised inside into ``error`` (``BackendError``, 502; ``ModelLoadError``
    around a load) that names the model; a ``GroupQwenError`` passes unchanged. A class, not a
    ``contextmanager`` (a generator and contextlib's bookkeeping each request)."""

    __slots__ = ("_error", "_model_id")

    def __init__(self, model_id: str, error: type[BackendError] = BackendError) -> None:
        self._model_id, self._error = model_id, error

    def __enter__(self) -> None:
        return None

    def __exit__(self, kind: object, exc: BaseException | None, traceback: object) -> None:
        if isinstance(exc, Exception) and not isinstance(exc, GroupQwenError):
            raise self._error(f"model {self._model_id!r} failed: {type(exc).__name__}: {exc}") from exc
