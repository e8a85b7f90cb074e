"""Text → unit vector for the cache: ``base.py`` (the ``Embedder`` protocol), ``minilm.py`` (the bundled
all-MiniLM-L6-v2 on onnxruntime) with ``int8_build.py`` (its int8 build, made once per machine),
``openai_http.py`` (a remote ``/v1/embeddings`` server) and ``fake.py`` (``HashingEmbedder``, the fake).
Anything else plugs in by implementing ``Embedder``."""

from groupqwen.cache.embedders.base import Embedder, Vectors, normalise_rows
from groupqwen.cache.embedders.fake import HashingEmbedder
from groupqwen.cache.embedders.int8_build import QUANTISED_NAME, ensure_quantised, packaged_model_path
from groupqwen.cache.embedders.minilm import MiniLMEmbedder
from groupqwen.cache.embedders.openai_http import OpenAIEmbedder

__all__ = [
    "QUANTISED_NAME",
    "Embedder",
    "HashingEmbedder",
    "MiniLMEmbedder",
    "OpenAIEmbedder",
    "Vectors",
    "ensure_quantised",
    "normalise_rows",
    "packaged_model_path",
]
