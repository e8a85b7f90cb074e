"""``router:``: the ``auto`` ladder and the named routes (docs/routing.md)."""

from __future__ import annotations

from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field, field_validator

AUTO_MODEL = "auto"


class TierConfig(BaseModel):
    """One tier of the ``auto`` ladder (docs/routing.md). The bar comes from ``bar`` if set, else from
    ``target`` through the model's calibration table; ``max_complexity`` likewise (the pair measured
    together for ``target``). The last tier is never escalated."""

    model_config = ConfigDict(extra="forbid")

    model: str = Field(description="A model id from the catalog or models")
    max_complexity: float | None = Field(
        None,
        ge=0,
        le=1,
        description="Tried first for requests scoring up to this; default: from the calibration for "
        "`target` (1.0 without one)",
    )
    target: float = Field(
        0.02,
        ge=0,
        le=1,
        description="At most this share of answers may be worse than the top tier's: sets max_complexity "
        "and bar",
    )
    bar: float | None = Field(
        None, ge=0, le=1, description="Answers less confident than this escalate; null: from target"
    )
    multilingual: bool = Field(True, description="false: skipped for non-English prompts")


def _default_tiers() -> list[TierConfig]:
    return [
        TierConfig(model="qwen2.5-coder-0.5b"),  # type: ignore[call-arg]
        TierConfig(model="qwen2.5-coder-1.5b"),  # type: ignore[call-arg]
    ]


class RouterConfig(BaseModel):
    """``model: auto`` and the named routes ``auto:…`` (docs/routing.md)."""

    model_config = ConfigDict(extra="forbid")

    tiers: list[TierConfig] = Field(
        default_factory=_default_tiers,
        description="The ladder of model 'auto', smallest first; the last tier is never escalated",
    )
    routes: dict[str, str] = Field(
        default_factory=lambda: {"auto:translate": "qwen2.5-coder-1.5b", "auto:tiny": "smollm2-135m"},
        description="Named routes auto:<name> served by a plain model; auto:vision takes the requests with "
        "images (model 'auto') and needs a model that takes images",
        examples=[{"auto:translate": "qwen2.5-coder-0.5b", "auto:vision": "qwen3-vl-8b"}],
    )
    classifier: bool = Field(
        True, description="Use the learned complexity classifier (false: explainable rules instead)"
    )
    weights: Path | None = Field(
        None, description="Router weights JSON; null: the shipped weights (scripts/train_router.py)"
    )
    thinking_threshold: float = Field(
        0.5, ge=0, le=1, description="The thinking head's probability above which 'auto' thinks"
    )
    warm_margin: float = Field(
        0.1, ge=0, le=1, description="A warm lower tier beats a cold pick within this complexity margin"
    )
    buffer_tokens: int = Field(
        48, ge=1, le=4096, description="Tokens held back while a tier's confidence is unknown (stream policy)"
    )
    min_tokens: int = Field(
        8,
        ge=1,
        le=4096,
        description="A held answer's running confidence is checked against the tier's bar at every token "
        "from this many on (before that, against its calibration's early bar for that length, where "
        "trained); below, its generation is aborted and the next tier starts",
    )

    @field_validator("routes")
    @classmethod
    def _route_names(cls, value: dict[str, str]) -> dict[str, str]:
        for name in value:
            if not name.startswith("auto:") or name in ("auto:fast", "auto:best", "auto:cascade"):
                raise ValueError(f"{name!r}: a route name starts with 'auto:' and is not a built-in route")
        return value
