"""Images for a model run in-process: llama.cpp's multimodal library (``mtmd``) with the model's projector
(``ModelSpec.mmproj``, docs/vision.md).

``Projector`` owns one ``mtmd`` context, made from the projector GGUF and the loaded text model. A prompt
with images is rendered by the chat template with ``mtmd``'s media marker where each image stands, split
by ``mtmd_tokenize`` into text and image chunks (the Qwen-VL projectors wrap each image in
``<|vision_start|>`` … ``<|vision_end|>``), and evaluated chunk by chunk into the model's context: an image
chunk runs the vision encoder and the projector, then decodes their embeddings. The images arrive decoded
and resized by the gateway (``modalities/preprocess.py``): raw RGB pixels go to ``mtmd_bitmap_init``, no
second decoder reads the client's bytes.

Qwen2-VL's M-RoPE gives an image fewer positions than tokens, so after an image the context's next
position (``n_past``) is below the number of tokens it holds; ``Chunks.n_tokens`` (KV cells) is what the
context limit counts.
"""

from __future__ import annotations

import ctypes
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from groupqwen.errors import BackendError, ModelLoadError
from groupqwen.messages import ImagePart, Message, PreparedImage


@dataclass(frozen=True)
class Chunks:
    """A tokenized multimodal prompt: ``mtmd``'s chunks, and the context cells they will fill."""

    handle: Any
    n_tokens: int


class Projector:
    """``mmproj``'s projector over the loaded model ``llm`` (a ``llama_cpp.Llama``)."""

    def __init__(self, llm: Any, mmproj: Path, model_id: str, n_threads: int, use_gpu: bool) -> None:
        import llama_cpp._logger
        import llama_cpp.mtmd_cpp as mtmd

        self._mtmd = mtmd
        self.model_id = model_id
        # llama-cpp-python's own log callback: quiet unless it is verbose, as the text model's logs are
        mtmd.mtmd_log_set(llama_cpp._logger.llama_log_callback, ctypes.c_void_p(0))
        mtmd.mtmd_helper_log_set(llama_cpp._logger.llama_log_callback, ctypes.c_void_p(0))
        params = mtmd.mtmd_context_params_default()
        params.use_gpu = use_gpu
        params.n_threads = n_threads
        params.print_timings = False
        self._ctx = mtmd.mtmd_init_from_file(str(mmproj).encode(), llm.model, params)
        if not self._ctx:
            raise ModelLoadError(
                f"model {model_id!r}: llama.cpp could not load the projector {mmproj} for this model (a "
                "projector made for another model, or a projector type this llama.cpp does not know)"
            )
        if not mtmd.mtmd_support_vision(self._ctx):
            self.close()
            raise ModelLoadError(f"model {model_id!r}: the projector {mmproj} takes no images")
        self.marker = mtmd.mtmd_default_marker().decode("utf-8")

    def close(self) -> None:
        if self._ctx:
            self._mtmd.mtmd_free(self._ctx)
            self._ctx = None

    def with_markers(self, messages: Sequence[Message]) -> tuple[Message, ...]:
        """``messages`` with each image's place in its text taken by the media marker."""
        out = []
        for message in messages:
            if message.images:
                text = "\n".join(self.marker if isinstance(p, ImagePart) else p for p in message.parts)
                message = Message(message.role, text, (), message.tool_calls, message.tool_call_id)
            out.append(message)
        return tuple(out)

    @contextmanager
    def tokenized(self, text: str, images: Sequence[PreparedImage]) -> Iterator[Chunks]:
        """``text`` (one marker per image) and ``images`` split into text and image chunks, freed after."""
        mtmd = self._mtmd
        bitmaps: list[Any] = []
        chunks = mtmd.mtmd_input_chunks_init()
        try:
            bitmaps.extend(self._bitmap(image) for image in images)
            self._tokenize(chunks, text, bitmaps)
            yield Chunks(chunks, int(mtmd.mtmd_helper_get_n_tokens(chunks)))
        finally:
            mtmd.mtmd_input_chunks_free(chunks)
            for bitmap in bitmaps:
                mtmd.mtmd_bitmap_free(bitmap)

    def evaluate(self, llm: Any, chunks: Chunks, cancel: threading.Event) -> bool:
        """Evaluate ``chunks`` into ``llm``'s emptied context (encoding and projecting each image), the last
        logits row kept for sampling; ``False`` when cancelled."""
        import llama_cpp

        mtmd = self._mtmd
        llm.reset()
        llm._ctx.kv_cache_clear()
        n_past = llama_cpp.llama_pos(0)
        count = int(mtmd.mtmd_input_chunks_size(chunks.handle))
        for index in range(count):
            if cancel.is_set():
                return False
            chunk = mtmd.mtmd_input_chunks_get(chunks.handle, index)
            status = mtmd.mtmd_helper_eval_chunk_single(
                self._ctx, llm._ctx.ctx, chunk, n_past.value, 0, llm.n_batch, index == count - 1,
                ctypes.byref(n_past),
            )  # fmt: skip
            if status != 0:
                raise BackendError(f"model {self.model_id!r}: llama.cpp could not evaluate the image prompt")
        llm.n_tokens = n_past.value  # the next token's position (M-RoPE: below the cells used)
        return True

    def _bitmap(self, image: PreparedImage) -> Any:
        if len(image.rgb) != image.width * image.height * 3:
            raise BackendError(f"model {self.model_id!r}: an image arrived without its pixels")
        pixels = (ctypes.c_uint8 * len(image.rgb)).from_buffer_copy(image.rgb)
        bitmap = self._mtmd.mtmd_bitmap_init(image.width, image.height, pixels)
        if not bitmap:
            raise BackendError(
                f"model {self.model_id!r}: llama.cpp refused a {image.width}×{image.height} image"
            )
        return bitmap

    def _tokenize(self, chunks: Any, text: str, bitmaps: list[Any]) -> None:
        mtmd = self._mtmd
        encoded = text.encode("utf-8")
        source = mtmd.mtmd_input_text()
        source.text = encoded
        source.text_len = len(encoded)
        source.add_special = True  # a BOS where the model's vocabulary asks for one
        source.parse_special = True
        array = (mtmd.mtmd_bitmap_p_ctypes * len(bitmaps))(*bitmaps)
        status = mtmd.mtmd_tokenize(self._ctx, chunks, ctypes.byref(source), array, len(bitmaps))
        if status != 0:
            why = "the prompt's image markers and its images differ in number" if status == 1 else "an image"
            raise BackendError(f"model {self.model_id!r}: llama.cpp could not tokenize the prompt ({why})")
