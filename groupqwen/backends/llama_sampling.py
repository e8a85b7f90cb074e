"""Sampling for the in-process backend: one llama.cpp sampler chain per request.

The chain mirrors llama-cpp-python's own (and llama-server's defaults) — logit bias, then the repetition
penalties (``presence_penalty``, ``frequency_penalty`` over the last 64 tokens), then a grammar, then greedy
decoding at temperature 0 or top-k 40 → top-p → min-p 0.05 → temperature → a seeded draw — with what
``Llama.generate`` lacks: llama.cpp's own logit-bias sampler (native, no Python callback per token).

``Constraint`` says which grammar applies: the tool-call grammar (``tool_calls.call_grammar``) when a call
is forced, else ``response_format``'s JSON (schema).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from groupqwen.backends.tool_calls import call_grammar
from groupqwen.errors import InvalidRequest
from groupqwen.messages import ResponseFormat, Sampling, Tools

PENALTY_LAST_N = 64  # llama.cpp's default window for the repetition penalties
TOP_K, MIN_P = 40, 0.05  # llama.cpp's defaults (as llama-server uses them)


@dataclass(frozen=True)
class Constraint:
    """A grammar (GBNF, rule ``root``) for the output; ``param`` names the field it comes from."""

    gbnf: str
    param: str


def constraint(response_format: ResponseFormat | None, tools: Tools | None) -> Constraint | None:
    """The grammar a request asks for: a forced tool call wins over ``response_format`` (which then
    applies to the answer after the tool results, in a later request)."""
    from llama_cpp.llama_grammar import JSON_GBNF, json_schema_to_gbnf

    if tools is not None and tools.choice in ("required", "named"):
        return Constraint(call_grammar(tools), "tools")
    if response_format is not None:
        if response_format.type == "json_object" or response_format.schema is None:
            return Constraint(JSON_GBNF, "response_format")
        try:
            gbnf = json_schema_to_gbnf(json.dumps(response_format.schema))
        except Exception as exc:  # the converter raises whatever it meets
            raise InvalidRequest(f"unusable JSON schema: {exc}", param="response_format") from exc
        return Constraint(gbnf, "response_format")
    return None


class SamplerChain:
    """A llama.cpp sampler chain for one request over ``llm`` (a ``llama_cpp.Llama``); ``close`` frees it.
    Raises ``InvalidRequest`` for a grammar llama.cpp rejects or a ``logit_bias`` token outside the
    vocabulary."""

    def __init__(self, llm: Any, sampling: Sampling, grammar: Constraint | None, seed: int) -> None:
        import llama_cpp

        self._lib = llama_cpp
        self._ctx = llm.ctx
        vocab = llama_cpp.llama_model_get_vocab(llm.model)
        n_vocab = int(llm.n_vocab())
        params = llama_cpp.llama_sampler_chain_default_params()
        self._chain = llama_cpp.llama_sampler_chain_init(params)
        try:
            if sampling.logit_bias:
                self._logit_bias(n_vocab, sampling.logit_bias)
            self._add(
                llama_cpp.llama_sampler_init_penalties(
                    n_vocab, PENALTY_LAST_N, 1.0, sampling.frequency_penalty, sampling.presence_penalty
                )
            )
            if grammar is not None:
                self._grammar(vocab, grammar)
            if sampling.local_temperature <= 0:
                self._add(llama_cpp.llama_sampler_init_greedy())
            else:
                self._add(llama_cpp.llama_sampler_init_top_k(TOP_K))
                self._add(llama_cpp.llama_sampler_init_top_p(sampling.local_top_p, 1))
                self._add(llama_cpp.llama_sampler_init_min_p(MIN_P, 1))
                self._add(llama_cpp.llama_sampler_init_temp(sampling.local_temperature))
                self._add(llama_cpp.llama_sampler_init_dist(seed))
        except BaseException:
            self.close()
            raise

    def _add(self, sampler: Any) -> None:
        self._lib.llama_sampler_chain_add(self._chain, sampler)

    def _logit_bias(self, n_vocab: int, bias: tuple[tuple[int, float], ...]) -> None:
        outside = [token for token, _ in bias if not 0 <= token < n_vocab]
        if outside:
            raise InvalidRequest(
                f"logit_bias names token {outside[0]}, outside this model's vocabulary (0 to {n_vocab - 1})",
                param="logit_bias",
            )
        entries = (self._lib.llama_logit_bias * len(bias))()
        for i, (token, value) in enumerate(bias):
            entries[i].token, entries[i].bias = token, value  # type: ignore[assignment]
        self._add(self._lib.llama_sampler_init_logit_bias(n_vocab, len(bias), entries))

    def _grammar(self, vocab: Any, grammar: Constraint) -> None:
        sampler = self._lib.llama_sampler_init_grammar(vocab, grammar.gbnf.encode("utf-8"), b"root")
        if not sampler:
            what = "tools' parameters" if grammar.param == "tools" else "JSON schema"
            raise InvalidRequest(f"unusable {what}: llama.cpp rejected its grammar", param=grammar.param)
        self._add(sampler)

    def sample(self) -> int:
        """The next token, from the last logits row (the chain records it as accepted)."""
        return int(self._lib.llama_sampler_sample(self._chain, self._ctx, -1))

    def close(self) -> None:
        if self._chain is not None:
            self._lib.llama_sampler_free(self._chain)
            self._chain = None
