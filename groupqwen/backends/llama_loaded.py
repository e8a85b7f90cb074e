"""A loaded llama.cpp model with what each request needs from it, computed once: the chat template
(rendering, tokenizing), end-of-generation tokens, token pieces, log-probabilities read in place from the
last logits row, and the multimodal projector when the model has one (``llama_vision.py``)."""

from __future__ import annotations

import ctypes
import math
from dataclasses import dataclass
from typing import Any

import jinja2
import numpy as np
import numpy.typing as npt

from groupqwen import log
from groupqwen.backends.llama_vision import Projector
from groupqwen.backends.text import CHATML_TEMPLATE, chat_template, template_message
from groupqwen.backends.tool_calls import fold_tools
from groupqwen.errors import BackendError, InvalidRequest
from groupqwen.messages import GenerationRequest, Message, TokenLogprob, TopLogprob

_log = log.get(__name__)


@dataclass
class Loaded:
    """A loaded ``Llama`` with what each request needs from it, computed once."""

    llm: Any
    model_id: str
    projector: Projector | None = None
    # the context's first tokens that were evaluated from the first token in whole batches (a multiple of
    # the batch size): what a seeded request may reuse (``llamacpp._evaluate``)
    whole_batches: int = 0

    def close(self) -> None:
        if self.projector is not None:
            self.projector.close()
        self.llm.close()

    def __post_init__(self) -> None:
        import llama_cpp

        self._llama_cpp = llama_cpp
        self.vocab = llama_cpp.llama_model_get_vocab(self.llm.model)
        self.n_vocab = int(self.llm.n_vocab())
        self.bos = int(self.llm.token_bos())
        self.add_bos = bool(llama_cpp.llama_vocab_get_add_bos(self.vocab))
        self._pieces: dict[int, bytes] = {}
        self._scratch: npt.NDArray[np.float32] = np.empty(self.n_vocab, dtype=np.float32)
        source = self.llm.metadata.get("tokenizer.chat_template") or CHATML_TEMPLATE
        try:
            self.template = chat_template(source)
        except jinja2.TemplateError as exc:
            _log.warning("bad chat template, using ChatML", model=self.model_id, error=str(exc))
            self.template = chat_template(CHATML_TEMPLATE)
            source = CHATML_TEMPLATE
        self.takes_tools = "tools" in source  # else tools are folded into the messages (``fold_tools``)
        self.special = {"bos_token": self._text(self.bos), "eos_token": self._text(int(self.llm.token_eos()))}

    def _text(self, token: int) -> str:
        if token < 0:
            return ""
        text: bytes = self._llama_cpp.llama_vocab_get_text(self.vocab, token)
        return text.decode("utf-8", errors="replace")

    def prompt(self, request: GenerationRequest) -> tuple[list[int], bool]:
        """The rendered, tokenized prompt, and whether it ends inside an open ``<think>``; a raw prompt is
        tokenized as written (special tokens in it are read as such, as llama.cpp's completion does)."""
        if request.raw_prompt:
            return self._tokens(request.messages[-1].content), False
        rendered, opens_thinking = self.render(request, request.messages)
        return self._tokens(rendered), opens_thinking

    def render(self, request: GenerationRequest, messages: tuple[Message, ...]) -> tuple[str, bool]:
        """``messages`` through the chat template with ``request``'s tools and thinking switch, and whether
        the text ends inside an open ``<think>``."""
        tools = request.tools
        variables: dict[str, Any] = {"enable_thinking": request.enable_thinking, **self.special}
        if not self.takes_tools:
            messages = fold_tools(messages, tools)
        elif tools is not None and tools.active:
            variables["tools"] = [t.as_json() for t in tools.functions]
        try:
            rendered = self.template.render(
                messages=[template_message(m) for m in messages], add_generation_prompt=True, **variables
            )
        except jinja2.TemplateError as exc:
            raise InvalidRequest(f"the chat template rejected the messages: {exc}", param="messages") from exc
        return rendered, rendered.rstrip().endswith("<think>")

    def _tokens(self, text: str) -> list[int]:
        tokens: list[int] = self.llm.tokenize(text.encode("utf-8"), add_bos=False, special=True)
        if self.add_bos and self.bos >= 0 and (not tokens or tokens[0] != self.bos):
            tokens.insert(0, self.bos)
        return tokens

    def is_eog(self, token: int) -> bool:
        return bool(self._llama_cpp.llama_vocab_is_eog(self.vocab, token))

    def piece(self, token: int) -> bytes:
        """The token's raw bytes (special tokens render as nothing)."""
        data = self._pieces.get(token)
        if data is None:
            size = 64
            while True:
                buf = (ctypes.c_char * size)()
                n = self._llama_cpp.llama_token_to_piece(self.vocab, token, buf, size, 0, False)
                if n >= 0:
                    break
                size = -n
            data = self._pieces[token] = buf.raw[:n]
        return data

    def logprob(self, token: int, top_k: int) -> TokenLogprob:
        """The sampled token's log-probability from the logits row it was sampled from."""
        pointer = self._llama_cpp.llama_get_logits_ith(self.llm.ctx, -1)
        if not pointer:
            raise BackendError(f"model {self.model_id!r}: llama.cpp kept no logits")
        logits = np.ctypeslib.as_array(pointer, shape=(self.n_vocab,))
        high = float(logits.max())
        np.subtract(logits, high, out=self._scratch)
        np.exp(self._scratch, out=self._scratch)
        norm = high + math.log(float(self._scratch.sum()))
        top: tuple[TopLogprob, ...] = ()
        if top_k > 0:
            # the top k are among the logits near the max when at least k are: partition only those
            best = np.flatnonzero(logits >= high - 10.0)
            if best.size < top_k:
                best = np.arange(self.n_vocab)
            best = best[np.argpartition(logits[best], -top_k)[-top_k:]] if best.size > top_k else best
            best = best[np.argsort(-logits[best], kind="stable")]
            top = tuple(self._top(int(i), float(logits[i]) - norm) for i in best)
        data = self.piece(token)
        return TokenLogprob(
            token=data.decode("utf-8", errors="replace"),
            logprob=min(float(logits[token]) - norm, 0.0),
            bytes=tuple(data),
            top=top,
        )

    def _top(self, token: int, logprob: float) -> TopLogprob:
        data = self.piece(token)
        return TopLogprob(
            token=data.decode("utf-8", errors="replace"), logprob=min(logprob, 0.0), bytes=tuple(data)
        )
