"""``finetune:``: training hyperparameters (their defaults) and how fine-tuning jobs run
(docs/finetune.md)."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

DEFAULT_TARGETS = ("q_proj", "k_proj", "v_proj", "o_proj")


class Hyperparameters(BaseModel):
    """One training run's settings; every field has a default, every value is checked."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    epochs: int = Field(3, ge=1, le=100, description="Passes over the training set")
    max_steps: int | None = Field(
        None, ge=1, description="Stop after this many optimiser steps (null: as many as the epochs make)"
    )
    batch_size: int = Field(4, ge=1, le=256, description="Examples per forward pass")
    grad_accum: int = Field(1, ge=1, le=256, description="Forward passes per optimiser step")
    learning_rate: float = Field(2e-4, gt=0, le=1, description="Peak learning rate (AdamW)")
    weight_decay: float = Field(0.0, ge=0, le=1, description="AdamW weight decay")
    warmup_steps: int = Field(0, ge=0, description="Steps of linear warm-up to the peak learning rate")
    scheduler: Literal["linear", "cosine", "constant"] = Field(
        "linear", description="Learning rate after the warm-up: linear | cosine decay to 0, or constant"
    )
    lora_r: int = Field(8, ge=1, le=512, description="LoRA rank")
    lora_alpha: int = Field(16, ge=1, le=4096, description="LoRA alpha (scale = alpha / r)")
    lora_dropout: float = Field(0.05, ge=0, lt=1, description="Dropout on the LoRA input")
    target_modules: tuple[str, ...] = Field(
        DEFAULT_TARGETS, min_length=1, description="Module names that get LoRA weights"
    )
    max_seq_length: int = Field(
        1024, ge=16, le=131_072, description="Longest example in tokens; longer ones are left out, counted"
    )
    seed: int = Field(0, ge=0, le=2**32 - 1, description="Seeds the data order, LoRA init and dropout")
    eval_every: int = Field(50, ge=1, description="Steps between validation-loss evaluations")
    checkpoint_every: int = Field(50, ge=1, description="Steps between checkpoints")
    keep_checkpoints: int = Field(3, ge=1, le=100, description="Most recent checkpoints kept (plus the best)")

    @field_validator("target_modules")
    @classmethod
    def _names(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        for name in value:
            if not name or not name.replace("_", "").replace(".", "").isalnum():
                raise ValueError(f"{name!r} is not a module name")
        return value


class FinetuneConfig(BaseModel):
    """How training runs on this machine, and the jobs the gateway runs."""

    model_config = ConfigDict(extra="forbid")

    threads: int = Field(
        1, ge=1, le=256, description="CPU threads a training run uses (torch intra-op and inter-op)"
    )
    nice: int = Field(10, ge=0, le=19, description="Scheduling priority added to job processes (nice)")
    max_queued: int = Field(16, ge=1, description="Jobs that may wait for the one running; beyond: 503")
    max_upload_mb: int = Field(512, ge=1, description="Largest file POST /v1/files accepts (MiB)")
    cancel_grace_s: float = Field(
        4.0, gt=0, le=60, description="Seconds a cancelled job has to checkpoint before it is killed"
    )
    hyperparameters: Hyperparameters = Field(
        default_factory=Hyperparameters,  # type: ignore[arg-type]
        description="Defaults for runs that do not set their own",
    )
