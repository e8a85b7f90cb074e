"""Which answers are worth keeping: ``SemanticCache.store`` keeps none that ``unworthy`` names a reason for.

- ``low_confidence``: the cascade scored the answer and it is unsure: below ``cache.min_confidence``, or
  below its own step's escalation bar (a tier that would have escalated had a later one been there). A
  wrong, unsure answer served again to everyone who asks is worse than one generation.
- ``time``: the question or the answer refers to the current date or time ("today", "right now", "next
  Friday", "how many days until", the weather, prices, scores, "as of today" …): true when written, stale
  when served tomorrow.
- ``earlier_turns``: the question or the answer refers to the user's earlier turns ("as I said", "your
  previous answer" …): its meaning lives in a conversation the next asker did not have.

Answers the cascade did not score (one model, no router) are kept unless the words say otherwise.
"""

from __future__ import annotations

import re
from typing import Literal, get_args

from groupqwen.messages import Decision

NotStored = Literal["low_confidence", "time", "earlier_turns"]
NOT_STORED: tuple[NotStored, ...] = get_args(NotStored)

_DAY = r"(?:monday|tuesday|wednesday|thursday|friday|saturday|sunday)"
_TIME_QUESTION = re.compile(
    r"\b(today|today's|tonight|tomorrow|yesterday|right now|nowadays|currently|at the moment|"
    rf"(?:this|next|last) (?:morning|afternoon|evening|night|week|weekend|month|year|season|{_DAY})|"
    r"current (date|time|day|year|month|weather|price|news)|what time is it|what day is it|"
    r"what(?:'s| is) the date|what year is it|the latest|latest news|this time of year|"
    r"how (?:many|much) (?:days|weeks|months|years|time) (?:until|till|left|ago|since)|"
    r"(?:what's|what is|how's|how is) the weather|weather (?:like|forecast|in|for)|"
    r"(?:stock|share) price|exchange rate|score of|who won (?:the|last|yesterday))\b",
    re.IGNORECASE,
)
_TIME_ANSWER = re.compile(
    r"\b(as of today|today is|it is currently|it's currently|the current date|the current time|"
    r"right now it|at the time of writing|as of (?:my|the) (?:last|latest) (?:update|knowledge))\b",
    re.IGNORECASE,
)
_EARLIER_QUESTION = re.compile(
    r"\b(you (?:just )?(?:said|mentioned|told me|wrote|suggested)|i (?:just )?(?:said|mentioned|told you|"
    r"asked|wrote)|(?:my|your) (?:last|previous|earlier|first|above) (?:question|message|answer|reply|"
    r"response|point)|earlier in (?:this|our) (?:conversation|chat)|as (?:i|you) said|"
    r"what did (?:i|you) (?:just )?(?:say|ask|write))\b",
    re.IGNORECASE,
)
_EARLIER_ANSWER = re.compile(
    r"\b(as (?:you|i) (?:mentioned|said|noted)|you (?:mentioned|said|asked) (?:earlier|before|previously)|"
    r"(?:in|from) (?:your|my) (?:previous|earlier|last) (?:message|answer|question|reply|response)|"
    r"earlier in (?:this|our) (?:conversation|chat))\b",
    re.IGNORECASE,
)


def unworthy(
    question: str, answer: str, decision: Decision | None, min_confidence: float
) -> NotStored | None:
    """Why the answer to ``question`` should not be kept (``None``: it may be)."""
    if decision is not None and decision.confidence is not None:
        step = next((s for s in decision.steps if s.model == decision.model), None)
        below_step = step is not None and step.bar is not None and decision.confidence < step.bar
        if decision.confidence < min_confidence or below_step:
            return "low_confidence"
    if _TIME_QUESTION.search(question) or _TIME_ANSWER.search(answer):
        return "time"
    if _EARLIER_QUESTION.search(question) or _EARLIER_ANSWER.search(answer):
        return "earlier_turns"
    return None
