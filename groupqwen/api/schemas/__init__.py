"""OpenAI wire models, by surface, and their conversion to and from the internal ``messages`` types:
``chat`` (chat completions: the request, the JSON answer, the stream's chunks), ``models`` (the model list),
``embeddings``, ``responses`` (the Responses API: the request, the response object, its stream's events).
Pydantic only here, at the edge."""

from __future__ import annotations

from typing import Annotated

from pydantic import BaseModel, BeforeValidator, ConfigDict


class Wire(BaseModel):
    """A request body: strict types; unknown fields kept (each surface says which it refuses)."""

    model_config = ConfigDict(extra="allow", strict=True)


# A flag the SDK types ``Optional[bool]`` (``stream``, ``echo``, ``store``) and sends as JSON null when
# given ``None``: null is OpenAI's default, not a 400.
FalseIfNull = Annotated[bool, BeforeValidator(lambda value: False if value is None else value)]
TrueIfNull = Annotated[bool, BeforeValidator(lambda value: True if value is None else value)]
