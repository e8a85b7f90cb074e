"""Field types shared by several sections of the settings."""

from __future__ import annotations

from typing import Annotated

from pydantic import AfterValidator


def _fits_a_header(value: str) -> str:
    if not (value.isascii() and value.isprintable()):
        raise ValueError("must be printable ASCII (it is sent in the Authorization header)")
    return value


BearerToken = Annotated[str, AfterValidator(_fits_a_header)]
