"""Cache keys: the scope (everything but the last user turn that shapes an answer, hashed) and the exact
key (the scope plus the normalised last user turn, hashed).

The scope covers the tenant (hashed), the model, the system prompt(s), the conversation before the last
user turn (with its tool calls and results), the sampling settings (penalties and logit bias included),
the response format, thinking, the tools and tool choice, the embedder (name and width, so that other
vectors never meet), and a digest of every image in the conversation (so the same words about another
image never hit). Searches run inside one scope: a neighbour from another one is never a candidate.
Normalisation (``normalise``) is Unicode NFKC, case-folding and collapsed whitespace; the exact layer also
drops one closing mark right after a letter (``exact_form``).
"""

from __future__ import annotations

import hashlib
import json
import re
import unicodedata
from dataclasses import dataclass

from groupqwen.messages import ChatRequest

_SPACE = re.compile(r"\s+")
_CLOSING = re.compile(r"(?<=[^\W\d_])[?!.。？！]$")  # one mark, right after a letter


@dataclass(frozen=True)
class CacheKey:
    scope: str
    exact: str
    text: str  # the normalised last user turn

    @property
    def entry_key(self) -> str:
        return f"{self.scope}:{self.exact}"


def normalise(text: str) -> str:
    return _SPACE.sub(" ", unicodedata.normalize("NFKC", text).casefold()).strip()


def exact_form(text: str) -> str:
    """What the exact layer compares: ``normalise``'s text without one closing ``?``, ``!`` or ``.`` right
    after a letter ("what is x?" and "What is x" are one key; "what is 10!" and "cd .." keep theirs: the
    exact layer has no guard). The semantic layer still sees the whole text."""
    return _CLOSING.sub("", text)


def _digest(value: object) -> str:
    data = json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=str)
    return hashlib.sha256(data.encode()).hexdigest()[:32]


def cache_key(request: ChatRequest, tenant: str, model: str, embedder: tuple[str, int]) -> CacheKey:
    """The key of ``request`` (which ends on a user turn) asked by ``tenant`` of ``model``, its last turn
    embedded by ``embedder`` (name, width)."""
    s = request.sampling
    *before, last = request.messages
    shaping: dict[str, object] = {
        "v": 1,
        "tenant": hashlib.sha256(tenant.encode()).hexdigest(),
        "model": model,
        "system": [m.content for m in before if m.role == "system"],
        "history": [(m.role, m.content) for m in before if m.role != "system"],
        "sampling": [s.temperature, s.top_p, s.seed, list(s.stop), s.max_tokens],
        "format": request.response_format,
        "thinking": request.enable_thinking,
        "embedder": list(embedder),
    }
    if request.raw_prompt:  # a text completion never shares a chat answer
        shaping["raw"] = True
    if s.presence_penalty or s.frequency_penalty or s.logit_bias:  # scopes without them unchanged
        shaping["penalties"] = [s.presence_penalty, s.frequency_penalty, [list(b) for b in s.logit_bias]]
    if request.tools is not None:  # the tools offered and how they may be used; scopes without unchanged
        t = request.tools
        shaping["tools"] = [[f.as_json() for f in t.functions], t.choice, t.name, t.parallel]
    if any(m.tool_calls or m.tool_call_id for m in before):  # earlier calls and their results
        shaping["calls"] = [[c.as_json() for c in m.tool_calls] + [m.tool_call_id] for m in before]
    if request.translation is not None:  # what to translate into, and how; other scopes unchanged
        shaping["translation"] = request.translation.as_json()
    if request.images:  # each message's images (URL and detail), digested; text-only scopes unchanged
        shaping["images"] = [[_digest([i.url, i.detail]) for i in m.images] for m in request.messages]
    scope = _digest(shaping)
    text = normalise(last.content)
    return CacheKey(scope=scope, exact=_digest(exact_form(text)), text=text)
