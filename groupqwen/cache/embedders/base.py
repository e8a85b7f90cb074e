"""The ``Embedder`` seam: text → L2-normalised float32 rows, and what an embedder declares besides."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol, runtime_checkable

import numpy as np
import numpy.typing as npt

Vectors = npt.NDArray[np.float32]


@runtime_checkable
class Embedder(Protocol):
    """Turns texts into L2-normalised float32 rows of ``dim`` columns. Blocking: callers use a thread.

    The cache scope includes ``name`` and ``dim``: two embedders whose vectors differ must differ in one."""

    @property
    def name(self) -> str: ...

    @property
    def dim(self) -> int: ...

    def embed(self, texts: Sequence[str]) -> Vectors: ...

    def count_tokens(self, texts: Sequence[str]) -> int | None:
        """How many tokens ``embed`` reads for ``texts`` (``/v1/embeddings``' usage); ``None``: unknown."""
        ...

    def close(self) -> None:
        """Release what the embedder holds (connections); it is not used afterwards."""
        ...


def normalise_rows(rows: Vectors) -> Vectors:
    """``rows`` scaled to unit length (a zero row stays zero), as float32."""
    norms = np.linalg.norm(rows, axis=1, keepdims=True)
    norms[norms == 0] = 1.0
    out: Vectors = (rows / norms).astype(np.float32, copy=False)
    return out
