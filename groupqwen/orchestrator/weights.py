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


def routing_from_settings(settings: Settings) -> Routing:
    """The configured tiers and routes, with bars set from targets by the model's calibration table."""
    cfg = settings.router
    loaded = load(cfg.weights)
    tiers = []
    for index, tier in enumerate(cfg.tiers):
        last = index == len(cfg.tiers) - 1
        if last:
            bar = None
        elif tier.bar is not None:
            bar = tier.bar
        else:
            bar = loaded.scorer.bar(tier.model, tier.target)
        tiers.append(Tier(tier.model, tier.max_complexity, bar, tier.multilingual))
    policy = RouterPolicy(
        tiers=tuple(tiers),
        routes=dict(cfg.routes),
        thinking_threshold=cfg.thinking_threshold,
        warm_margin=cfg.warm_margin,
    )
    router = Router(policy, loaded.heads if cfg.classifier else None)
    return Routing(router, loaded.scorer, cfg.buffer_tokens)
