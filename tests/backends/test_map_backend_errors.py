"""``map_backend_errors``: a foreign error leaves a backend as a ``GroupQwenError`` naming the model."""

from __future__ import annotations

import asyncio

import pytest

from groupqwen.backends.base import map_backend_errors
from groupqwen.errors import BackendError, ContextLengthExceeded, ModelLoadError


def test_a_foreign_error_becomes_a_backend_error_naming_the_model() -> None:
    with pytest.raises(BackendError) as caught, map_backend_errors("qwen"):
        raise OSError("connection reset")
    assert caught.value.message == "model 'qwen' failed: OSError: connection reset"
    assert isinstance(caught.value.__cause__, OSError)


def test_the_error_asked_for_around_a_load() -> None:
    expected = pytest.raises(ModelLoadError, match="model 'qwen' failed: ValueError: bad file")
    with expected, map_backend_errors("qwen", ModelLoadError):
        raise ValueError("bad file")


def test_the_gateways_own_errors_and_cancellation_pass_unchanged() -> None:
    own = ContextLengthExceeded("too long")
    with pytest.raises(ContextLengthExceeded) as caught, map_backend_errors("qwen"):
        raise own
    assert caught.value is own
    with pytest.raises(asyncio.CancelledError), map_backend_errors("qwen"):
        raise asyncio.CancelledError
    with map_backend_errors("qwen"):
        pass
