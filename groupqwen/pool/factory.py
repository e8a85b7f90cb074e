"""How the pool builds a backend for a catalog entry, and what that backend will need in memory."""

from __future__ import annotations

import os
import re
from dataclasses import replace

from groupqwen.backends.base import Backend
from groupqwen.backends.fake import FakeBackend
from groupqwen.catalog import ModelSpec, finetuned
from groupqwen.config import Settings
from groupqwen.pool.budget import estimate, projector_estimate
from groupqwen.pool.gguf import read_metadata


def context_size(spec: ModelSpec, settings: Settings) -> int:
    """The context window to allocate: the model's own setting, else the default capped by what it was
    trained for."""
    return spec.n_ctx or min(spec.context_length, settings.n_ctx)


def served(spec: ModelSpec, settings: Settings) -> ModelSpec:
    """``spec`` as the pool serves it: ``n_ctx`` set to the context actually allocated for in-process (and
    fake) backends, so ``/v1/models``, the router and the backend agree on the limit. A remote server sets
    its own: its ``n_ctx`` stays as configured (``None``: its native context is assumed)."""
    if spec.backend == "openai_http":
        return spec
    return replace(spec, n_ctx=context_size(spec, settings))


def shares_the_cpu(spec: ModelSpec, settings: Settings, cores: int | None = None) -> bool:
    """Whether the model computes in this process on CPU threads that fill the cores (llama.cpp, nothing
    offloaded to a GPU, ``n_threads`` 0 or at least the cores): then any other work here competes with it."""
    cores = cores or os.cpu_count() or 1
    in_process = spec.backend == "llamacpp" and settings.n_gpu_layers == 0
    return in_process and (settings.n_threads == 0 or settings.n_threads >= cores)


def backend_for(spec: ModelSpec, settings: Settings) -> Backend:
    if spec.backend == "fake":
        reply = spec.fake_reply or "Hello from the fake backend."
        return FakeBackend(
            model_id=spec.id,
            tokens=re.findall(r"\s*\S+", reply),
            delay=spec.fake_delay_s or 0.0,
            n_ctx=context_size(spec, settings),
            keep_requests=1000,  # a served fake answers for as long as it runs: keep its memory bounded
        )
    if spec.backend == "openai_http":
        from groupqwen.backends.openai_http import OpenAIHTTPBackend

        return OpenAIHTTPBackend(spec)
    from groupqwen.backends.llamacpp import LlamaCppBackend  # llama-cpp-python is an optional extra

    return LlamaCppBackend(
        spec,
        n_ctx=context_size(spec, settings),
        n_threads=settings.n_threads,
        n_gpu_layers=settings.n_gpu_layers,
    )


def memory_need(spec: ModelSpec, settings: Settings) -> int:
    """Bytes a model needs resident here: its GGUF's estimate, with its LoRA adapter and its multimodal
    projector; nothing for remote or fake backends."""
    if spec.backend != "llamacpp" or spec.path is None:
        return 0
    meta = read_metadata(spec.path)
    adapter = spec.lora_path.stat().st_size if spec.lora_path is not None and spec.lora_path.is_file() else 0
    projector = 0
    if spec.mmproj is not None and spec.mmproj.is_file():
        max_pixels = spec.max_pixels or settings.images.max_pixels
        projector = projector_estimate(read_metadata(spec.mmproj), spec.mmproj.stat().st_size, max_pixels)
    return estimate(meta, spec.path.stat().st_size, context_size(spec, settings)).total + adapter + projector


class FinetunedWatch:
    """The fine-tuned models recorded in ``settings.finetuned_dir`` since the last look, as the pool serves
    them, and those whose record went since (``DELETE /v1/models/{id}`` here or on another replica): a run
    of ``groupqwen train`` or a job's worker writes one record there (whole, by a rename) while the gateway
    runs. A look lists the folder once; only when its names changed are the records read. The models
    recorded when it is made are those the gateway started with."""

    def __init__(self, settings: Settings) -> None:
        self._settings = settings
        self._seen: frozenset[str] = frozenset()
        self._recorded = set(finetuned(settings.finetuned_dir, settings.catalog()))

    def _names(self) -> frozenset[str]:
        try:
            return frozenset(os.listdir(self._settings.finetuned_dir))
        except OSError:  # no run has recorded a model yet
            return frozenset()

    def __call__(self) -> tuple[list[ModelSpec], list[str]]:
        """(the models recorded now, the ids no longer recorded)."""
        names = self._names()
        if names == self._seen:
            return [], []
        self._seen = names
        specs = finetuned(self._settings.finetuned_dir, self._settings.catalog())
        gone, self._recorded = sorted(self._recorded - set(specs)), set(specs)
        return [served(spec, self._settings) for spec in specs.values()], gone
