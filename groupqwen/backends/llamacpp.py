"""A GGUF served in-process by llama-cpp-python.

One instance owns one ``llama_cpp.Llama`` and serves one stream at a time: each stream holds ``_lock``
from start to end and runs on the instance's one worker thread, which hands ``Chunk``s to the event loop
through an ``asyncio.Queue``. The worker alone releases the lock, when its job ends, so a stream closed
early (client gone) frees the model only once llama.cpp is no longer in use; it checks a
``threading.Event`` between tokens and between prompt batches.

The worker thread lives as long as the model: llama.cpp's OpenMP thread team belongs to the thread that
calls it, and a fresh thread per request paid for a new team (about 15 ms more to the first token on two
cores; see docs/benchmarks.md).

Log-probabilities come from the last logits row that llama.cpp keeps (``logits_all=False``), read in
place with numpy (``llama_loaded.py``), only for requests that ask (``logprobs``: the cascade's confidence,
or the client): the sampled token's on every token, and the top ``k`` alternatives when ``top_logprobs`` is
set.

A model with a projector (``ModelSpec.mmproj``) takes images: their prompt is evaluated through
llama.cpp's ``mtmd`` (``llama_vision.py``), with the pixels the gateway prepared
(``GenerationRequest.images``); such a prompt's prefix is never reused by the next request.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import os
import threading
from collections.abc import AsyncGenerator, Callable
from dataclasses import replace
from typing import Any

import numpy as np

from groupqwen.backends.base import map_backend_errors
from groupqwen.backends.llama_loaded import Loaded
from groupqwen.backends.llama_sampling import SamplerChain, constraint
from groupqwen.backends.llama_vision import Projector
from groupqwen.backends.text import StopFilter
from groupqwen.backends.tool_calls import ToolCallParser
from groupqwen.catalog import ModelSpec
from groupqwen.errors import BackendError, ContextLengthExceeded, InvalidRequest, ModelLoadError
from groupqwen.messages import (
    Chunk,
    FinishReason,
    GenerationRequest,
    ReplicaState,
    ToolCallDelta,
    Usage,
)

MAX_TOP_LOGPROBS = 20
N_BATCH = 512

_Item = Chunk | BaseException | None


class LlamaCppBackend:
    """``spec.path``'s GGUF with a context of ``n_ctx`` tokens on ``n_threads`` threads (0: all cores),
    ``n_gpu_layers`` of its layers offloaded to the GPU (-1: all; needs a CUDA build of llama.cpp)."""

    def __init__(self, spec: ModelSpec, *, n_ctx: int, n_threads: int, n_gpu_layers: int = 0) -> None:
        self.model_id = spec.id
        self.spec = spec
        self.n_ctx = n_ctx
        self.n_threads = n_threads or os.cpu_count() or 1
        self.n_gpu_layers = n_gpu_layers
        self._lock = asyncio.Lock()
        self._model: Loaded | None = None
        self._cancel: threading.Event | None = None
        self._worker: concurrent.futures.ThreadPoolExecutor | None = None

    @property
    def loaded(self) -> bool:
        return self._model is not None

    async def load(self) -> None:
        async with self._lock:
            if self._model is None:
                if self._worker is None:
                    self._worker = concurrent.futures.ThreadPoolExecutor(
                        1, thread_name_prefix=f"llamacpp-{self.model_id}"
                    )
                loop = asyncio.get_running_loop()
                with map_backend_errors(self.model_id, ModelLoadError):
                    self._model = await loop.run_in_executor(self._worker, self._load_sync)

    def replicas(self) -> tuple[ReplicaState, ...]:
        return ()  # in-process

    async def close(self) -> None:
        if self._cancel is not None:
            self._cancel.set()
        async with self._lock:
            model, self._model = self._model, None
            worker, self._worker = self._worker, None
        if worker is not None:
            if model is not None:
                await asyncio.get_running_loop().run_in_executor(worker, model.close)
            worker.shutdown(wait=False)

    async def stream(self, request: GenerationRequest) -> AsyncGenerator[Chunk, None]:
        await self.load()
        loop = asyncio.get_running_loop()
        queue: asyncio.Queue[_Item] = asyncio.Queue()
        done: asyncio.Future[None] = loop.create_future()
        cancel = threading.Event()
        await self._lock.acquire()
        started = False
        try:
            model, worker = self._model, self._worker
            if model is None or worker is None:
                raise BackendError(f"model {self.model_id!r} was closed")
            self._cancel = cancel
            worker.submit(self._work, model, request, loop, queue, done, cancel)
            started = True
            while (item := await queue.get()) is not None:
                if isinstance(item, BaseException):
                    raise item
                yield item
        finally:
            cancel.set()
            if started:
                await asyncio.shield(done)  # the worker releases the lock as it exits
            else:
                self._lock.release()

    # -- worker thread -------------------------------------------------------------------------------

    def _work(
        self,
        model: Loaded,
        request: GenerationRequest,
        loop: asyncio.AbstractEventLoop,
        queue: asyncio.Queue[_Item],
        done: asyncio.Future[None],
        cancel: threading.Event,
    ) -> None:
        error: BaseException | None = None
        try:
            with map_backend_errors(self.model_id):
                self._generate(
                    model, request, lambda chunk: loop.call_soon_threadsafe(queue.put_nowait, chunk), cancel
                )
        except BaseException as exc:  # handed to the consumer
            error = exc
        finally:

            def finished() -> None:
                if error is not None:
                    queue.put_nowait(error)
                queue.put_nowait(None)
                self._cancel = None
                self._lock.release()
                if not done.done():
                    done.set_result(None)

            with contextlib.suppress(RuntimeError):  # the event loop is gone: nobody waits any more
                loop.call_soon_threadsafe(finished)

    def _generate(
        self,
        model: Loaded,
        request: GenerationRequest,
        emit: Callable[[Chunk], Any],
        cancel: threading.Event,
    ) -> None:
        llm = model.llm
        images = any(m.images for m in request.messages)
        if images and model.projector is None:
            raise InvalidRequest(
                f"model {self.model_id!r} runs in-process on llama.cpp without a multimodal projector, so it "
                f"cannot take images: set models.{self.model_id}.mmproj to its projector GGUF, or serve it "
                "with backend openai_http (vLLM, or llama-server --mmproj)",
                param="messages",
            )
        max_tokens = request.sampling.max_tokens
        if model.projector is not None and images:
            try:
                text, opens_thinking = model.render(request, model.projector.with_markers(request.messages))
                with model.projector.tokenized(text, request.images) as chunks:
                    self._check_context(chunks.n_tokens, max_tokens)
                    evaluated = model.projector.evaluate(llm, chunks, cancel)
                self._finish(model, request, chunks.n_tokens, evaluated, opens_thinking, emit, cancel)
            finally:
                llm.n_tokens = 0  # no prefix of an image prompt is reused by the next request
                model.whole_batches = 0
            return
        prompt, opens_thinking = model.prompt(request)
        self._check_context(len(prompt), max_tokens)
        evaluated = _evaluate(model, prompt, cancel, exact=request.sampling.seed is not None)
        self._finish(model, request, len(prompt), evaluated, opens_thinking, emit, cancel)

    def _check_context(self, n_prompt: int, max_tokens: int | None) -> None:
        if n_prompt >= self.n_ctx or (max_tokens is not None and n_prompt + max_tokens > self.n_ctx):
            asked = f" and asks for {max_tokens} completion tokens" if max_tokens else ""
            raise ContextLengthExceeded(
                f"This model's maximum context length is {self.n_ctx} tokens; the request has "
                f"{n_prompt} prompt tokens{asked}.",
                param="messages",
            )

    def _finish(
        self,
        model: Loaded,
        request: GenerationRequest,
        n_prompt: int,
        evaluated: bool,
        opens_thinking: bool,
        emit: Callable[[Chunk], Any],
        cancel: threading.Event,
    ) -> None:
        """Sample the answer after the evaluated prompt of ``n_prompt`` tokens; the last chunk has usage."""
        import llama_cpp

        if not evaluated:
            raise BackendError(f"model {self.model_id!r}: generation cancelled")
        max_tokens = request.sampling.max_tokens
        limit = max_tokens if max_tokens is not None else self.n_ctx - n_prompt
        sampling = request.sampling
        seed = sampling.seed if sampling.seed is not None else llama_cpp.LLAMA_DEFAULT_SEED
        sampler = SamplerChain(model.llm, sampling, constraint(request.response_format, request.tools), seed)
        try:
            produced, last = self._sample(model, request, sampler, limit, opens_thinking, emit, cancel)
        finally:
            sampler.close()
        emit(replace(last, usage=Usage(prompt_tokens=n_prompt, completion_tokens=produced)))

    def _sample(
        self,
        model: Loaded,
        request: GenerationRequest,
        sampler: SamplerChain,
        limit: int,
        opens_thinking: bool,
        emit: Callable[[Chunk], Any],
        cancel: threading.Event,
    ) -> tuple[int, Chunk]:
        """Sample up to ``limit`` tokens after the evaluated prompt, emitting each as a ``Chunk``; the
        number of tokens and the last chunk (its finish reason set, without usage) come back."""
        llm = model.llm
        top_k = min(max(request.top_logprobs, 0), MAX_TOP_LOGPROBS)
        scored = request.logprobs or top_k > 0  # a softmax over the vocabulary per token: only when asked
        text = StopFilter(request.sampling.stop)
        tools = request.tools
        calls = ToolCallParser(tools, self.model_id) if tools is not None and tools.active else None
        first = opens_thinking
        produced = 0
        finish: FinishReason = "length"
        while produced < limit:
            if cancel.is_set():
                raise BackendError(f"model {self.model_id!r}: generation cancelled")
            token = sampler.sample()
            if model.is_eog(token):
                finish = "stop"
                break
            produced += 1
            logprobs = (model.logprob(token, top_k),) if scored else ()
            piece, stopped = text.feed(model.piece(token))
            pieces: tuple[ToolCallDelta, ...] = ()
            if calls is not None:
                piece, pieces = calls.feed(piece)
                stopped = stopped or calls.done  # one call asked for, one made
            emit(Chunk(text=piece, logprobs=logprobs, prompt_opens_thinking=first, tool_calls=pieces))
            first = False
            if stopped:
                finish = "stop"
                break
            if produced < limit:
                llm.eval([token])
        rest, pieces = text.flush(), ()
        if calls is not None:
            rest, more = calls.feed(rest)
            tail, final = calls.finish(truncated=finish == "length")
            rest, pieces = rest + tail, more + final
            if calls.calls and finish == "stop":
                finish = "tool_calls"
        last = Chunk(text=rest, finish_reason=finish, prompt_opens_thinking=first, tool_calls=pieces)
        return produced, last

    def _load_sync(self) -> Loaded:
        import llama_cpp

        path = self.spec.path
        if path is None:
            raise ModelLoadError(f"model {self.model_id!r} has no GGUF file on this machine")
        if not path.is_file() or not os.access(path, os.R_OK):
            raise ModelLoadError(f"model {self.model_id!r}: no readable GGUF file at {path}")
        with path.open("rb") as f:
            magic = f.read(4)
        if magic != b"GGUF":
            raise ModelLoadError(f"model {self.model_id!r}: {path} is not a GGUF file (bad magic {magic!r})")
        lora = self.spec.lora_path
        if lora is not None and not lora.is_file():
            raise ModelLoadError(f"model {self.model_id!r}: its LoRA adapter {lora} is missing")
        try:
            llm = llama_cpp.Llama(
                model_path=str(path), n_ctx=self.n_ctx, n_threads=self.n_threads,
                n_threads_batch=self.n_threads, n_gpu_layers=self.n_gpu_layers, n_batch=N_BATCH,
                logits_all=False, verbose=False, lora_path=str(lora) if lora is not None else None,
            )  # fmt: skip
        except Exception as exc:
            raise ModelLoadError(f"model {self.model_id!r}: llama.cpp could not load {path}: {exc}") from exc
        projector = None
        if self.spec.mmproj is not None:
            try:
                projector = Projector(
                    llm, self.spec.mmproj, self.model_id, self.n_threads, use_gpu=self.n_gpu_layers != 0
                )
            except BaseException:
                llm.close()
                raise
        return Loaded(llm, self.model_id, projector)


def _evaluate(model: Loaded, prompt: list[int], cancel: threading.Event, *, exact: bool) -> bool:
    """Evaluate the prompt into the model's context; ``False`` when cancelled.

    A seed asks for the same answer each time, but llama.cpp's logits depend on how the prompt's tokens
    were evaluated (in which batch, or one at a time as an earlier answer's were): an ``exact`` (seeded)
    request reuses only whole batches that were evaluated from the first token (``model.whole_batches``),
    and evaluates the rest in batches that start where an evaluation from the first token starts them,
    so that its logits are those of the prompt evaluated alone.
    """
    llm = model.llm
    start = eval_prompt(llm, prompt, cancel, whole_batches=model.whole_batches if exact else None)
    if start is None:
        model.whole_batches = 0
        return False
    n_batch = llm.n_batch
    if exact:  # the batches reused and the ones evaluated alike start where they would from the first token
        model.whole_batches = len(prompt) // n_batch * n_batch
    else:  # the batches evaluated from ``start`` on do not: only the reused part's whole batches stay
        model.whole_batches = min(model.whole_batches, start // n_batch * n_batch)
    return True


def eval_prompt(
    llm: Any, prompt: list[int], cancel: threading.Event, *, whole_batches: int | None = None
) -> int | None:
    """Evaluate the prompt batch by batch, reusing the cached prefix; how many tokens were reused, or
    ``None`` when cancelled. With ``whole_batches``, at most that many of the cache's first tokens are
    reused, and only whole batches of ``llm.n_batch`` of them.

    Afterwards ``llm.generate(prompt, reset=True)`` finds it fully cached and samples at once.
    """
    cached = llm.input_ids[: llm.n_tokens]
    n = min(len(cached), len(prompt))
    same = np.flatnonzero(cached[:n] != np.asarray(prompt[:n], dtype=cached.dtype))
    keep = int(same[0]) if same.size else n
    keep = min(keep, len(prompt) - 1)  # always decode at least one token: fresh logits to sample from
    if whole_batches is not None:
        keep = min(keep, whole_batches) // llm.n_batch * llm.n_batch
    if keep <= 0:
        llm.reset()
    else:
        llm.n_tokens = keep  # eval() drops the KV cache past n_tokens
    for start in range(keep, len(prompt), llm.n_batch):
        if cancel.is_set():
            return None
        llm.eval(prompt[start : start + llm.n_batch])
    return keep
