"""``POST /v1/embeddings`` on the wire: the request's texts, and the vectors as OpenAI's list."""

from __future__ import annotations

import base64
from typing import Any, Literal

import numpy as np
import numpy.typing as npt
from pydantic import Field

from groupqwen.api.schemas import Wire
from groupqwen.errors import InvalidRequest, UnsupportedParameter

MAX_EMBEDDING_INPUTS = 2048  # OpenAI's limit on inputs per request


class EmbeddingRequest(Wire):
    model: str
    input: str | list[Any]  # ``embedding_texts`` says exactly what is wrong with a list
    encoding_format: Literal["float", "base64"] = "float"
    dimensions: int | None = Field(None, ge=1)
    user: str | None = None


def embedding_texts(body: EmbeddingRequest) -> list[str]:
    """The texts to embed; token arrays, empty texts and too many inputs are refused with what to fix."""
    texts = [body.input] if isinstance(body.input, str) else body.input
    if not texts:
        raise InvalidRequest("'input' must not be empty", param="input")
    if len(texts) > MAX_EMBEDDING_INPUTS:
        raise InvalidRequest(
            f"'input' has {len(texts)} items; at most {MAX_EMBEDDING_INPUTS} a request", param="input"
        )
    for index, text in enumerate(texts):
        where = "input" if isinstance(body.input, str) else f"input[{index}]"
        if not isinstance(text, str):
            raise UnsupportedParameter(
                f"'{where}' is not a string: token arrays are not accepted, send the text", param=where
            )
        if not text:
            raise InvalidRequest(f"'{where}' is empty", param=where)
    return texts


def embeddings_json(
    vectors: npt.NDArray[np.float32], model: str, encoding_format: str, prompt_tokens: int
) -> dict[str, Any]:
    """OpenAI's embedding list; ``base64``: each vector's little-endian float32 bytes (what the ``openai``
    SDK asks for by default)."""
    data: list[dict[str, Any]] = []
    for index, row in enumerate(vectors):
        if encoding_format == "base64":
            embedding: Any = base64.b64encode(row.astype("<f4").tobytes()).decode("ascii")
        else:
            embedding = row.tolist()
        data.append({"object": "embedding", "index": index, "embedding": embedding})
    usage = {"prompt_tokens": prompt_tokens, "total_tokens": prompt_tokens}
    return {"object": "list", "data": data, "model": model, "usage": usage}
