"""The GPU path: QLoRA (the base in 4-bit, LoRA on top) through Unsloth, where CUDA is.

``require_gpu`` says, before any work, why this path cannot run here (no CUDA device, Unsloth or
bitsandbytes missing: the ``gpu`` extra). ``load_qlora`` gives the model and tokenizer that the same loop
as the CPU path trains (``trainer``), with Unsloth's 4-bit loading and its LoRA patching; the adapter it
saves is a PEFT adapter like the CPU path's, converted and served the same way.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Any

from groupqwen.config import Hyperparameters
from groupqwen.errors import TrainingUnavailable


def require_gpu() -> None:
    """Raise ``TrainingUnavailable`` naming what is missing for QLoRA on a GPU."""
    missing = [m for m in ("torch", "unsloth", "bitsandbytes") if importlib.util.find_spec(m) is None]
    if missing:
        raise TrainingUnavailable(
            f"QLoRA on a GPU needs {', '.join(missing)}: pip install 'groupqwen[train,gpu]' on a CUDA machine"
        )
    import torch

    if not torch.cuda.is_available():
        raise TrainingUnavailable("QLoRA on a GPU needs a CUDA device, and torch sees none here")


def load_qlora(base: Path, hyper: Hyperparameters) -> tuple[Any, Any]:
    """The 4-bit base at ``base`` (a transformers folder) with LoRA adapters, and its tokenizer."""
    require_gpu()
    from unsloth import FastLanguageModel

    model, tokenizer = FastLanguageModel.from_pretrained(
        model_name=str(base), max_seq_length=hyper.max_seq_length, load_in_4bit=True, dtype=None
    )
    model = FastLanguageModel.get_peft_model(
        model,
        r=hyper.lora_r,
        lora_alpha=hyper.lora_alpha,
        lora_dropout=hyper.lora_dropout,
        target_modules=list(hyper.target_modules),
        random_state=hyper.seed,
        use_gradient_checkpointing="unsloth",
    )
    return model, tokenizer
