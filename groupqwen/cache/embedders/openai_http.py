"""``OpenAIEmbedder``: embeddings from any OpenAI-compatible ``/v1/embeddings`` server (Qwen3-Embedding on a
GPU server, another GroupQwen …): ``cache.embedder.kind: openai``."""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from typing import Any

import httpx
import numpy as np

from groupqwen.cache.embedders.base import Vectors, normalise_rows
from groupqwen.errors import ConfigError, EmbedderUnavailable

MAX_ANSWER_BYTES = 64 << 20  # a remote embedder's answer (a float as JSON is ≈ 20 bytes: 3M floats)


class OpenAIEmbedder:
    """Any OpenAI-compatible ``/v1/embeddings`` server: vLLM or Ollama serving Qwen3-Embedding on a GPU,
    llama.cpp's ``llama-server --embedding --pooling mean|last``, Hugging Face TEI, another GroupQwen.

    ``name`` is ``model``: gateways that ask for the same model share cache entries (a GroupQwen asked
    for ``all-minilm-l6-v2-q8`` returns the vectors of that build). ``dim``: the vectors' width; ``None``
    asks the server once, here, within ``probe_timeout_s``, and a server that cannot answer is a
    ``ConfigError``. Every later call has ``timeout_s`` in all (the cache's lookup timeout); a failure
    raises ``EmbedderUnavailable``. Vectors are
    L2-normalised here, whatever the server does. Blocking and thread-safe, like the other embedders.
    """

    def __init__(
        self,
        url: str,
        model: str,
        *,
        api_key: str | None = None,
        timeout_s: float,
        dim: int | None = None,
        probe_timeout_s: float = 30.0,
    ) -> None:
        self.name = model
        self.url = url.rstrip("/") + "/embeddings"
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self._timeout_s = timeout_s
        self._client = httpx.Client(headers=headers, timeout=timeout_s)
        if dim is None:
            try:  # a server may load its model on the first request (Ollama): a start-up's patience
                dim = int(self._request(["dimension probe"], max(timeout_s, probe_timeout_s)).shape[1])
            except EmbedderUnavailable as exc:
                self._client.close()
                hint = "check url and model, or set cache.embedder.dim to start without the server"
                raise ConfigError([("cache.embedder", f"{exc.message} ({hint})")]) from exc
        self.dim = dim

    def embed(self, texts: Sequence[str]) -> Vectors:
        if not texts:
            return np.zeros((0, self.dim), dtype=np.float32)
        rows = self._request(list(texts), self._timeout_s)
        if rows.shape[1] != self.dim:
            raise EmbedderUnavailable(
                f"{self.url} sent {rows.shape[1]}-wide vectors for {self.name!r}, expected {self.dim}"
            )
        return normalise_rows(rows)

    def count_tokens(self, texts: Sequence[str]) -> None:
        return None  # the server's tokenizer is not known here

    def close(self) -> None:
        self._client.close()

    def _request(self, texts: list[str], timeout_s: float) -> Vectors:
        """One POST within ``timeout_s`` in all (httpx bounds each read, not the call: a server that
        trickles its answer is cut off here), and its vectors, checked, in the order of ``texts``."""
        deadline = time.monotonic() + timeout_s
        body = {"model": self.name, "input": texts, "encoding_format": "float"}
        try:
            with self._client.stream("POST", self.url, json=body, timeout=timeout_s) as response:
                received = bytearray()
                for chunk in response.iter_bytes():
                    received += chunk
                    if time.monotonic() > deadline:
                        raise EmbedderUnavailable(f"{self.url} took more than {timeout_s} s to answer")
                    if len(received) > MAX_ANSWER_BYTES:
                        raise EmbedderUnavailable(f"{self.url} sent more than {MAX_ANSWER_BYTES} bytes")
        except httpx.HTTPError as exc:
            raise EmbedderUnavailable(f"{self.url}: {type(exc).__name__}: {str(exc) or 'no answer'}") from exc
        if response.status_code != 200:
            raise EmbedderUnavailable(
                f"{self.url} answered {response.status_code}: {_reason(response, received)}"
            )
        try:
            return self._vectors(json.loads(received), len(texts))
        except (ValueError, KeyError, TypeError, OverflowError, RecursionError) as exc:  # whatever JSON holds
            raise EmbedderUnavailable(f"{self.url} sent a malformed answer ({type(exc).__name__})") from exc

    def _vectors(self, answer: Any, count: int) -> Vectors:
        """``answer``'s ``count`` vectors in the order of the texts, or ``EmbedderUnavailable`` saying what is
        wrong with them."""
        data = sorted(answer["data"], key=lambda item: int(item["index"]))
        indices = [int(item["index"]) for item in data]
        rows = [item["embedding"] for item in data]
        if indices != list(range(count)):
            raise EmbedderUnavailable(f"{self.url} sent vectors for indices {indices[:8]}, not one per text")
        if any(isinstance(row, list) and row and isinstance(row[0], list) for row in rows):
            raise EmbedderUnavailable(
                f"{self.url} sent one vector per token, not one per text: the server does not pool "
                "(llama-server needs --pooling mean or last)"
            )
        if not all(
            isinstance(row, list) and row and all(type(x) in (int, float) for x in row) for row in rows
        ):
            raise EmbedderUnavailable(f"{self.url} sent embeddings that are not lists of numbers")
        if len({len(row) for row in rows}) != 1:
            raise EmbedderUnavailable(f"{self.url} sent vectors of different widths")
        vectors = np.asarray(rows, dtype=np.float32)
        if not np.isfinite(vectors).all():
            raise EmbedderUnavailable(f"{self.url} sent vectors that are not finite")
        return vectors


def _reason(response: httpx.Response, body: bytes | bytearray) -> str:
    """The server's error message (OpenAI's ``{"error": {"message": …}}`` or its text), kept short."""
    try:
        error = json.loads(body).get("error")
        message = error.get("message") if isinstance(error, dict) else error
    except (ValueError, AttributeError, RecursionError):
        message = None
    return str(message or body.decode("utf-8", "replace") or response.reason_phrase)[:300]
