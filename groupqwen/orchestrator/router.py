"""Pure routing decisions: request features + what the pool holds → a ``Route``. No I/O here.

Named routes (the request's ``model``):

- ``auto`` — the learned complexity score picks the first tier to try (the smallest whose
  ``max_complexity`` covers it); the cascade then escalates up the remaining tiers while confidence is
  below each tier's bar. A warm tier just below the pick beats a cold pick when the score is within
  ``warm_margin`` of that tier's edge. Tiers whose context is too short (by an estimate of the prompt's
  tokens; when it is over every tier's, the largest context's tiers are tried, their model counting), or
  English-only tiers for a non-English prompt, are skipped. An explicit translation request goes to
  ``auto:translate`` when that route is configured; a request with images to ``auto:vision``, else to the
  tiers that take images.
- ``auto:cascade`` — always start at the smallest eligible tier and escalate (at each tier's
  ``cascade_bar`` when set: a bar chosen for the cascade alone, without the classifier's skip).
- ``auto:fast`` — the smallest eligible tier, never escalated. ``auto:best`` — the largest, alone.
- ``auto:<name>`` from ``RouterPolicy.routes`` — a plain model (translation, vision, …).

Images are never dropped: a request with images that would reach a model that cannot take them is a 400
(``images_refused``) that says what to configure.

Thinking (Qwen3) is a second axis: what the request says (``enable_thinking``, ``/think``, ``/no_think``)
wins; otherwise the thinking head decides. Without learned heads, transparent rules stand in.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field

from groupqwen.config import AUTO_MODEL
from groupqwen.errors import ContextLengthExceeded, InvalidRequest, ModelNotFound, UnsupportedParameter
from groupqwen.messages import CascadeStep, ChatRequest, Decision
from groupqwen.orchestrator.classifier import Logistic
from groupqwen.orchestrator.features import DENSE, Features, extract, vector
from groupqwen.orchestrator.thinking import wants_thinking

FIXED_ROUTES = ("auto", "auto:cascade", "auto:fast", "auto:best")
TRANSLATE = "auto:translate"  # a named route (``RouterPolicy.routes``) that translates


@dataclass(frozen=True)
class Tier:
    model: str
    max_complexity: float = 1.0  # tried first for requests scoring up to this
    bar: float | None = None  # confidence below which its answers escalate; None: never
    multilingual: bool = True
    cascade_bar: float | None = None  # the bar under ``auto:cascade`` (no classifier skip); None: ``bar``


@dataclass(frozen=True)
class RouterPolicy:
    tiers: tuple[Tier, ...]  # smallest first
    routes: Mapping[str, str] = field(default_factory=dict)  # "auto:translate" → a plain model
    thinking_threshold: float = 0.5
    warm_margin: float = 0.1


@dataclass(frozen=True)
class ModelView:
    """One servable model as the router sees it (from the catalog and the pool)."""

    warm: bool
    context_length: int
    thinking: bool = False
    vision: bool = False  # takes images


@dataclass(frozen=True)
class Heads:
    """The learned classifier: probability that a request needs more than the fast tier, and that
    reasoning (thinking) helps."""

    complexity: Logistic
    thinking: Logistic


@dataclass(frozen=True)
class Route:
    name: str
    steps: tuple[CascadeStep, ...]  # each step's ``thinking``: wished for and supported by its model
    thinking: bool  # wished for
    reason: str
    complexity: float | None = None

    @property
    def model(self) -> str:
        return self.steps[0].model

    def decision(self) -> Decision:
        first = self.steps[0]
        steps = self.steps if len(self.steps) > 1 else ()
        return Decision(first.model, self.name, self.reason, first.thinking, steps=steps)


def images_refused(what: str, model: str | None) -> UnsupportedParameter:
    """The 400 for images that the chosen ``model`` (or none) could not take: ``what`` went wrong, then
    what to configure."""
    fix = (
        "name a model that takes images (capabilities.vision in GET /v1/models), or send model 'auto' with "
        "router.routes.auto:vision set to one (a Qwen3-VL model such as qwen3-vl-8b, served by an "
        "OpenAI-compatible server like vLLM: backend openai_http)"
    )
    if model is not None:
        fix += f"; if {model!r} does take images, set models.{model}.vision: true"
    return UnsupportedParameter(f"{what}. To send images, {fix}.", param="model")


def _rules_complexity(f: Features) -> tuple[float, str]:
    fired = [
        (1.4, "code", f.code_markers > 0),
        (1.0, "math", f.math_markers > 0 or f.operators > 0),
        (0.8, "reasoning", f.reasoning_markers > 0),
        (0.8, "long output", f.long_output_markers > 0 or (f.max_tokens or 0) > 1024),
        (0.6, "long prompt", len(f.words) > 80),
        (0.5, "JSON schema", f.json_schema),
        (0.4, "deep conversation", f.turns > 4),
    ]
    z = -1.2 + sum(w for w, _, on in fired if on)
    names = [name for _, name, on in fired if on]
    return 1 / (1 + math.exp(-z)), "rules: " + (", ".join(names) if names else "no complexity markers")


def _rules_thinking(f: Features) -> bool:
    return f.math_markers + f.reasoning_markers >= 2


@dataclass(frozen=True)
class Router:
    policy: RouterPolicy
    heads: Heads | None = None

    def names(self) -> tuple[str, ...]:
        return (*FIXED_ROUTES, *sorted(self.policy.routes))

    def route(self, request: ChatRequest, models: Mapping[str, ModelView]) -> Route:
        """``request.model`` is ``auto`` or ``auto:…``; ``models``: the servable models."""
        name = request.model
        if name not in self.names():
            raise ModelNotFound(
                f"Unknown route {name!r}: the routes here are {', '.join(self.names())}, or name a model "
                "(GET /v1/models).",
                param="model",
            )
        features = extract(request)
        if name in self.policy.routes:
            route = self._plain(name, request, models, features, f"route {name} is served by a plain model")
            if name == TRANSLATE and request.translation is None:
                raise InvalidRequest(
                    f"Route {TRANSLATE!r} translates the one user message with Qwen-MT's "
                    'translation_options: send them, e.g. {"target_lang": "French"} (source_lang '
                    "defaults to 'auto').",
                    param="translation_options",
                )
            return route
        if name == AUTO_MODEL and features.images and "auto:vision" in self.policy.routes:
            reason = f"the request carries {features.images} image{'s' if features.images > 1 else ''}"
            return self._plain("auto:vision", request, models, features, reason)
        if name == AUTO_MODEL and request.translation is not None and TRANSLATE in self.policy.routes:
            options = request.translation
            reason = f"translation_options ({options.source} → {options.target})"
            return self._plain(TRANSLATE, request, models, features, reason)
        if name == AUTO_MODEL and features.translate_to and TRANSLATE in self.policy.routes:
            reason = f"explicit translation request (into {features.translate_to})"
            return self._plain(TRANSLATE, request, models, features, reason)
        tiers, skipped = self._eligible(name, features, models)
        complexity, why = self._complexity(features)
        think_default = self._thinking(features)
        thinking = wants_thinking(request.messages, request.enable_thinking, think_default)

        def step(model: str, bar: float | None) -> CascadeStep:
            return CascadeStep(model, bar, thinking and models[model].thinking)

        if name == "auto:best":
            return Route(name, (step(tiers[-1].model, None),), thinking, "the largest tier" + skipped)
        if name == "auto:fast":
            return Route(name, (step(tiers[0].model, None),), thinking, "the smallest tier" + skipped)
        start = 0
        reason = f"complexity {complexity:.2f} ({why})"
        if name == AUTO_MODEL:
            start = next((i for i, t in enumerate(tiers) if complexity <= t.max_complexity), len(tiers) - 1)
            below = tiers[start - 1] if start > 0 else None
            if (
                below is not None
                and not models[tiers[start].model].warm
                and models[below.model].warm
                and complexity - below.max_complexity <= self.policy.warm_margin
            ):
                start -= 1
                reason += f"; {tiers[start + 1].model} is cold and {below.model} warm and nearly adequate"
        else:
            reason = "cascade from the smallest tier"

        def bar_of(t: Tier) -> float | None:
            return t.cascade_bar if name == "auto:cascade" and t.cascade_bar is not None else t.bar

        steps = tuple(
            step(t.model, bar_of(t) if i < len(tiers) - 1 else None)
            for i, t in enumerate(tiers)
            if i >= start
        )
        bar = steps[0].bar
        reason += f" → {steps[0].model}" + (
            f", escalates below confidence {bar:.2f}" if bar is not None else ""
        )
        return Route(name, steps, thinking, reason + skipped, complexity)

    def _plain(
        self, name: str, request: ChatRequest, models: Mapping[str, ModelView], f: Features, reason: str
    ) -> Route:
        model = self.policy.routes[name]
        if model not in models:
            raise ModelNotFound(
                f"Route {name!r} is configured to model {model!r}, which is not servable here.", param="model"
            )
        if f.images and not models[model].vision:
            raise images_refused(
                f"This request carries images, but route {name!r} is served by {model!r}, which does not "
                "take them",
                model,
            )
        thinking = wants_thinking(request.messages, request.enable_thinking, False)
        step = CascadeStep(model, None, thinking and models[model].thinking)
        return Route(name, (step,), thinking, reason + f" → {model}")

    def _eligible(self, name: str, f: Features, models: Mapping[str, ModelView]) -> tuple[list[Tier], str]:
        needed = f.est_prompt_tokens + (f.max_tokens or 0)
        tiers, notes, short = [], [], []
        for tier in self.policy.tiers:
            view = models.get(tier.model)
            if view is None:
                notes.append(f"{tier.model} unavailable")
            elif f.non_english and not tier.multilingual:
                notes.append(f"{tier.model} is English-only")
            elif f.images and not view.vision:
                notes.append(f"{tier.model} takes no images")
            elif view.context_length < needed:
                notes.append(f"{tier.model} context too short")
                short.append((view.context_length, tier))
            else:
                tiers.append(tier)
        if not tiers and short:
            # The prompt's size is an estimate (characters / 3, on the safe side): over every tier's
            # context, the tiers with the largest one are tried, and their models count exactly (a
            # prompt that does not fit is their 400 context_length_exceeded).
            largest = max(context for context, _ in short)
            widest = next(tier.model for context, tier in short if context == largest)
            if (f.max_tokens or 0) >= largest:
                raise ContextLengthExceeded(
                    f"The request asks for {f.max_tokens} completion tokens (max_tokens or "
                    f"max_completion_tokens), but the largest context among the tiers of {name!r} is "
                    f"{largest} tokens ({widest}), prompt included: ask for fewer.",
                    param="max_tokens",
                )
            tiers = [tier for context, tier in short if context == largest]
            kept = {f"{tier.model} context too short" for tier in tiers}
            notes = [note for note in notes if note not in kept]
            notes.append(f"the prompt, estimated at {f.est_prompt_tokens} tokens, left to the model to count")
        if not tiers:
            if not self.policy.tiers:
                raise ModelNotFound("No routing tiers are configured (router.tiers).", param="model")
            if f.images:
                why = f"This request carries images, but no configured tier can serve it ({'; '.join(notes)})"
                if "auto:vision" not in self.policy.routes:
                    why += ", and router.routes.auto:vision is not set"
                raise images_refused(why, None)
            raise InvalidRequest(
                "No configured tier can serve this request: " + "; ".join(notes), param="model"
            )
        return tiers, (f" (skipped: {'; '.join(notes)})" if notes else "")

    def _complexity(self, f: Features) -> tuple[float, str]:
        if self.heads is None:
            return _rules_complexity(f)
        x = vector(f)
        top = [
            f"{n} {c:+.1f}" for n, c in self.heads.complexity.contributions(x, DENSE)[:3] if abs(c) >= 0.05
        ]
        return self.heads.complexity.probability(x), "classifier: " + (", ".join(top) or "no strong signal")

    def _thinking(self, f: Features) -> bool:
        if self.heads is None:
            return _rules_thinking(f)
        return self.heads.thinking.probability(vector(f)) >= self.policy.thinking_threshold
