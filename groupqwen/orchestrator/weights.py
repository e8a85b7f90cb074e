"""Read the shipped (or configured) router weights once, at start-up: the classifier heads and the
confidence calibrations (``scripts/train_router.py`` writes them)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from groupqwen.config import Settings
from groupqwen.errors import ConfigError
from groupqwen.orchestrator import features
from groupqwen.orchestrator.classifier import DATA_DIR, Logistic, load_json
from groupqwen.orchestrator.confidence import Scorer
from groupqwen.orchestrator.router import Heads, Router, RouterPolicy, Tier

SHIPPED = DATA_DIR / "router.json"
RULES_EDGE = 0.5  # max_complexity under the rules when not configured (code, or two other markers, is over)


@dataclass(frozen=True)
class Weights:
    heads: Heads
    scorer: Scorer


def load(path: Path | None = None) -> Weights:
    """``path`` (default: the shipped file); a file trained on other features is a ``ConfigError``."""
    path = path or SHIPPED
    data = load_json(path)
    try:
        spec = data["features"]
        if list(spec["dense"]) != list(features.DENSE) or spec["hash_buckets"] != features.HASH_BUCKETS:
            raise ValueError("it was trained on other request features; rerun scripts/train_router.py")
        heads = Heads(Logistic.from_json(data["complexity"]), Logistic.from_json(data["thinking"]))
        for head in (heads.complexity, heads.thinking):
            if len(head.weights) != features.size():
                raise ValueError(f"a head has {len(head.weights)} weights, not {features.size()}")
        scorer = Scorer.from_json(data.get("confidence", {}))
    except (KeyError, TypeError, ValueError) as exc:
        raise ConfigError([("router.weights", f"{path}: {exc}")]) from exc
    return Weights(heads, scorer)


@dataclass(frozen=True)
class Routing:
    """Everything ``auto`` routes need: the router (policy + heads) and the confidence scorer."""

    router: Router
    scorer: Scorer
    buffer_tokens: int
    min_tokens: int = 8  # running confidence is checked against the bar from this many tokens on

    def bar_at(self, model: str, bar: float, tokens: int) -> float | None:
        """What a held answer of ``model`` (a tier held to ``bar``) is checked against after ``tokens``
        tokens, before its end: ``bar`` from ``min_tokens`` on, the calibration's early bar before that
        (at most ``bar``); None: not checked at this length."""
        return bar if tokens >= self.min_tokens else self.scorer.early_bar(model, bar, tokens)


def routing_from_settings(settings: Settings) -> Routing:
    """The configured tiers and routes. A tier's ``max_complexity`` and bar not set in the configuration
    come from its calibration's ``auto`` table at the tier's ``target`` (the pair that met the target on the
    calibration data); a bar alone comes from the ``bars`` table (the cascade's), and so does the bar
    ``auto:cascade`` uses unless ``bar`` is configured."""
    cfg = settings.router
    loaded = load(cfg.weights)
    tiers = []
    for index, tier in enumerate(cfg.tiers):
        last = index == len(cfg.tiers) - 1
        # the pair measured together for the target (classifier edge, confidence bar), when trained; the
        # rules (classifier off) score on another scale: their edge stays RULES_EDGE, the bar the cascade's
        pair = None if last or not cfg.classifier else loaded.scorer.auto(tier.model, tier.target)
        if last:
            bar = None
        elif tier.bar is not None:
            bar = tier.bar
        elif pair is not None and tier.max_complexity is None:
            bar = pair[1]
        else:
            bar = loaded.scorer.bar(tier.model, tier.target)
        edge = tier.max_complexity
        if edge is None:
            edge = pair[0] if pair is not None else RULES_EDGE if not cfg.classifier else 1.0
        # auto:cascade skips nothing, so it escalates at the cascade-alone bar for the same target
        cascade_bar = None if last or tier.bar is not None else loaded.scorer.bar(tier.model, tier.target)
        tiers.append(Tier(tier.model, edge, bar, tier.multilingual, cascade_bar))
    policy = RouterPolicy(
        tiers=tuple(tiers),
        routes=dict(cfg.routes),
        thinking_threshold=cfg.thinking_threshold,
        warm_margin=cfg.warm_margin,
    )
    router = Router(policy, loaded.heads if cfg.classifier else None)
    return Routing(router, loaded.scorer, cfg.buffer_tokens, cfg.min_tokens)
