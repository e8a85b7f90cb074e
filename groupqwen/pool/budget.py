"""Pure memory accounting: what a model needs, what fits, and what to evict.

The estimate of a llama.cpp model's resident memory is

    weights (the GGUF file, mmapped and fully touched once it has generated)
  + KV cache  = layers × n_ctx × kv_heads × (key_length + value_length) × 2 bytes (f16)
  + compute   = n_ctx × heads × 3 KiB      (f32 attention scores of a 512-token batch, and their softmax)
  + runtime   = 16 MiB + n_vocab × 700 B    (vocabulary tables, output buffers, allocator slack)

The last two terms are fitted on the peak RSS measured here with prompts filling 90% of the context
(bench/pool.py, docs/benchmarks.md); the pool also records the RSS each load really added.

A vision model run in-process adds its projector (``projector_estimate``): the mmproj GGUF, and the vision
encoder's work on the largest image the model is given (``max_pixels``: patches = max_pixels / patch²),
whose full attention holds patches² scores per head (f32) besides the patches' activations.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from groupqwen.pool.gguf import GGUFMetadata

MiB = 1024 * 1024
_RUNTIME_BASE = 16 * MiB
_RUNTIME_PER_VOCAB = 700
_COMPUTE_PER_CTX_HEAD = 3 * 1024
_KV_BYTES = 2  # f16 K and V


@dataclass(frozen=True)
class MemoryEstimate:
    weights: int
    kv_cache: int
    compute: int
    runtime: int

    @property
    def total(self) -> int:
        return self.weights + self.kv_cache + self.compute + self.runtime


def estimate(meta: GGUFMetadata, file_size: int, n_ctx: int, n_parallel: int = 1) -> MemoryEstimate:
    """What a model needs resident, from its GGUF header and file size, for ``n_ctx`` tokens of context
    in each of ``n_parallel`` slots."""
    layers = int(meta.arch_value("block_count", 0))
    heads = int(meta.arch_value("attention.head_count", 0)) or 1
    kv_heads = int(meta.arch_value("attention.head_count_kv", heads))
    embedding = int(meta.arch_value("embedding_length", 0))
    key_length = int(meta.arch_value("attention.key_length", embedding // heads))
    value_length = int(meta.arch_value("attention.value_length", key_length))
    context = n_ctx * n_parallel
    return MemoryEstimate(
        weights=file_size,
        kv_cache=layers * context * kv_heads * (key_length + value_length) * _KV_BYTES,
        compute=context * heads * _COMPUTE_PER_CTX_HEAD,
        runtime=_RUNTIME_BASE + meta.vocab_size * _RUNTIME_PER_VOCAB,
    )


def projector_estimate(meta: GGUFMetadata, file_size: int, max_pixels: int) -> int:
    """What a multimodal projector (an mmproj GGUF, architecture ``clip``) needs resident for images of up
    to ``max_pixels`` pixels."""
    patch = int(meta.values.get("clip.vision.patch_size", 14)) or 14
    heads = int(meta.values.get("clip.vision.attention.head_count", 16)) or 1
    width = int(meta.values.get("clip.vision.embedding_length", 0))
    ffn = int(meta.values.get("clip.vision.feed_forward_length", 4 * width))
    patches = max_pixels // (patch * patch)
    attention = patches * patches * heads * 4
    activations = patches * (4 * width + ffn) * 4
    return file_size + attention + activations


@dataclass(frozen=True)
class Resident:
    """A loaded model as the budget sees it."""

    model_id: str
    bytes: int
    last_used: float
    pinned: bool
    busy: bool  # active leases or queued requests


def to_evict(need: int, free: int, resident: Iterable[Resident]) -> Sequence[str] | None:
    """The least recently used idle, unpinned models to unload so that ``need`` bytes fit in ``free``;
    ``[]`` if it fits already, ``None`` if it cannot fit even after evicting every candidate."""
    if need <= free:
        return []
    chosen: list[str] = []
    for model in sorted(resident, key=lambda r: r.last_used):
        if model.pinned or model.busy:
            continue
        chosen.append(model.model_id)
        free += model.bytes
        if need <= free:
            return chosen
    return None
