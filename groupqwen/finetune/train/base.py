"""The base model as transformers reads it: a bundled GGUF dequantised once into a cached safetensors copy.

Loading a GGUF with transformers (``gguf_file=``) dequantises every tensor, which takes minutes on a busy
CPU; the copy (``config.json`` listing the architecture, ``model.safetensors`` in float32, the tokenizer
and chat template) loads in seconds and is what llama.cpp's LoRA converter reads as ``--base``. It is
built in a temporary folder beside its final place and renamed, so a copy is there whole or not at all.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

from groupqwen.errors import TrainingUnavailable


def require_torch() -> None:
    """Raise ``TrainingUnavailable`` naming what to install when the ``train`` extra is missing."""
    missing = []
    for module in ("torch", "transformers", "peft", "safetensors"):
        try:
            __import__(module)
        except ImportError:
            missing.append(module)
    if missing:
        raise TrainingUnavailable(
            f"training needs {', '.join(missing)}: pip install 'groupqwen[train]' (torch==2.13.0 for the CPU)"
        )


def base_dir(gguf: Path, cache: Path) -> Path:
    """Where the transformers copy of ``gguf`` lives (keyed by its file name and size)."""
    return cache / f"{gguf.stem}-{gguf.stat().st_size}"


def ensure_base(gguf: Path, cache: Path) -> Path:
    """The folder of ``gguf``'s transformers copy in ``cache``, made first if it is not there."""
    final = base_dir(gguf, cache)
    if (final / "config.json").is_file():
        return final
    require_torch()
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    cache.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=f".{final.name}.", dir=cache))
    try:
        tokenizer: Any = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
        model: Any = AutoModelForCausalLM.from_pretrained(
            gguf.parent, gguf_file=gguf.name, dtype=torch.float32
        )
        # a model read from GGUF carries its quantizer: without it, it saves as the plain float32 model
        model.hf_quantizer = None
        if hasattr(model.config, "quantization_config"):
            del model.config.quantization_config
        model.save_pretrained(work)
        tokenizer.save_pretrained(work)
        try:
            os.replace(work, final)
        except OSError:
            if not (final / "config.json").is_file():  # else another process made it meanwhile
                raise
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return final
