"""Field types shared by several sections of the settings."""

from __future__ import annotations

from typing import Annotated

from pydantic import AfterValidator


def _fits_a_header(value: str) -> str:
    if not (value.isascii() and value.isprintable()):
        raise ValueError("must be printable ASCII (it is sent in the Authorization header)")
    return value


BearerToken = Annotated[str, AfterValidator(_fits_a_header)]


def _redis_scheme(value: str) -> str:
    if not value.startswith(("redis://", "rediss://", "unix://")):
        raise ValueError("must start with redis://, rediss:// or unix://")
    return value


RedisUrl = Annotated[str, AfterValidator(_redis_scheme)]
