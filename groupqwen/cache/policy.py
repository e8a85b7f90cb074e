"""What the cache may keep and serve (``CachePolicy``, from ``CacheConfig``), and what a lookup answers
(``Lookup``)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal, get_args

from groupqwen.cache.embedders import Vectors
from groupqwen.cache.keys import CacheKey
from groupqwen.cache.stores import CacheEntry
from groupqwen.config import CacheConfig
from groupqwen.messages import ChatRequest, Completion, Usage

Status = Literal["hit", "miss", "bypass"]
# why a lookup was a bypass: the policy refused the request; the client said ``no-cache``; the store was
# slow (no answer within its timeout) or down (refused, reset, or slow for long); the embedder failed;
# the lookup step outlasted ``timeout_s``
BypassReason = Literal["policy", "no_cache", "store_slow", "store_down", "embedder", "timeout"]
BYPASS_REASONS: tuple[BypassReason, ...] = get_args(BypassReason)
# which stage served a hit: the exact layer; the verifier (``verifier.py``); the cosine threshold and the
# lexical guard (where no verifier fits the embedder, or it is turned off)
Stage = Literal["exact", "verifier", "threshold"]


@dataclass(frozen=True)
class CachePolicy:
    threshold: float  # without a verifier: the least cosine similarity served as a hit
    ttl_s: float  # an answer's TTL unless the request sets one
    max_ttl_s: float  # the longest TTL a request may set
    max_temperature: float  # hotter requests bypass
    cache_seeded: bool  # whether requests with a seed are cached (each seed its own scope)
    timeout_s: float  # each layer of a lookup (the semantic one with its embedding), or a store
    candidates: int = 4  # neighbours tried, best first
    max_false_hit_rate: float = 0.01  # with a verifier: the false-hit rate accepted (its calibrated bar)
    min_confidence: float = 0.5  # scored answers below it are not kept (``answers.py``)

    @classmethod
    def from_config(cls, config: CacheConfig) -> CachePolicy:
        return cls(
            threshold=config.threshold,
            ttl_s=config.ttl_s,
            max_ttl_s=config.max_ttl_s,
            max_temperature=config.max_temperature,
            cache_seeded=config.cache_seeded,
            timeout_s=config.timeout_s,
            max_false_hit_rate=config.max_false_hit_rate,
            min_confidence=config.min_confidence,
        )

    def refusal(self, request: ChatRequest) -> str | None:
        """Why ``request`` may not be cached; ``None`` when it may."""
        s = request.sampling
        if not request.messages or request.messages[-1].role != "user":
            return "the conversation does not end on a user turn"
        if s.local_temperature > self.max_temperature:
            return f"temperature above {self.max_temperature}"
        if s.seed is not None and not self.cache_seeded:
            return "a seed asks for a particular sample"
        if request.logprobs:
            return "logprobs are not cached"
        return None


@dataclass(frozen=True)
class Lookup:
    status: Status
    reason: str
    key: CacheKey | None = None
    entry: CacheEntry | None = None
    similarity: float | None = None
    vector: Vectors | None = field(default=None, compare=False, repr=False)
    pending: bool = False  # a miss of the exact layer whose semantic search has not run yet
    bypass: BypassReason | None = None  # a bypass's reason
    stage: Stage | None = None  # a hit's: which stage accepted it
    score: float | None = None  # a verifier's hit or best refusal: its probability that the answer serves
    max_false_hit_rate: float | None = None  # the request's own accepted rate (None: the policy's)
    hit_id: str | None = None  # a semantic hit's id, for ``SemanticCache.dislike``

    def completion(self) -> Completion:
        """The cached answer of a hit."""
        if self.entry is None:
            raise ValueError("only a hit has a completion")
        a = self.entry.answer
        return Completion(
            a.content, a.reasoning, a.finish_reason, Usage(a.prompt_tokens, a.completion_tokens)
        )
