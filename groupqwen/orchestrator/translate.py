"""A request with ``translation_options``. For a model that does not take them itself (an in-process Qwen
model): the options compiled into prompts and the format kept (``modalities.translation``), each piece
generated through the cascade on the decided model alone (leases, errors and telemetry as for any answer).
A model that does take them (``ModelSpec.translation``: a Qwen-MT endpoint) gets the request as it came,
the options passed through by its backend (``passed_through``), and its answer is checked for the terms."""

from __future__ import annotations

from collections.abc import AsyncGenerator, Callable
from contextlib import aclosing
from dataclasses import replace

from groupqwen.messages import ChatRequest, Chunk, Decision, Message, TranslationReport, Usage
from groupqwen.modalities.terms import applying, missing
from groupqwen.modalities.translation import Generated, Translator
from groupqwen.orchestrator.cascade import Cascade
from groupqwen.orchestrator.thinking import ThinkSplitter

PROMPT_RESERVE = 512  # tokens of a piece's prompt besides its text: instructions, terms, examples


def budget_chars(context_tokens: int) -> int:
    """The most characters of prose one generation is asked to translate in a ``context_tokens`` window:
    its text, the prompt around it and an answer up to twice as long (about 3 characters a token)."""
    return max(64, (context_tokens - PROMPT_RESERVE) // 3 * 3)


async def translated(
    cascade: Cascade,
    request: ChatRequest,
    decision: Decision,
    context_tokens: int,
    on_decided: Callable[[Decision], None],
    on_report: Callable[[TranslationReport], None],
) -> AsyncGenerator[Chunk, None]:
    """The chunks of ``request``'s translation by ``decision.model`` (see the module's docstring)."""
    assert request.translation is not None
    decision = replace(decision, thinking=False, steps=())
    on_decided(decision)

    async def generate(messages: tuple[Message, ...], max_tokens: int) -> Generated:
        sampling = replace(request.sampling, max_tokens=max_tokens, stop=())
        piece = ChatRequest(messages, decision.model, sampling, enable_thinking=False, user=request.user)
        splitter: ThinkSplitter | None = None
        text: list[str] = []
        usage = Usage(0, 0)
        async with aclosing(cascade.stream(piece, decision)) as chunks:
            async for chunk in chunks:
                if splitter is None:
                    splitter = ThinkSplitter(chunk.prompt_opens_thinking)
                text.append(splitter.feed(chunk.text)[1])
                if chunk.finish_reason is not None:
                    text.append(splitter.flush()[1])
                    usage = chunk.usage or usage
        return Generated("".join(text), usage)

    translator = Translator(request.translation, generate, budget_chars=budget_chars(context_tokens))
    async with aclosing(translator.stream(request.messages[-1].content)) as chunks:
        async for chunk in chunks:
            if chunk.finish_reason is not None:
                on_report(translator.report())
            yield chunk


async def passed_through(
    chunks: AsyncGenerator[Chunk, None],
    request: ChatRequest,
    on_report: Callable[[TranslationReport], None],
) -> AsyncGenerator[Chunk, None]:
    """``chunks`` of a model that translated with the options itself, as they come; at the end, how many
    of the terms that apply to the text its answer holds."""
    assert request.translation is not None
    options = request.translation
    terms = applying(options.terms, request.messages[-1].content)
    text: list[str] = []
    async with aclosing(chunks):
        async for chunk in chunks:
            text.append(chunk.text)
            if chunk.finish_reason is not None:
                held = len(terms) - len(missing("".join(text), terms))
                source = None if options.source == "auto" else options.source
                on_report(TranslationReport(source, 1, 0, 0, 0, len(terms), held, (("prompt", held),)))
            yield chunk
