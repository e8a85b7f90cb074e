"""A tiny Qwen2-VL model with random weights, built once and cached, for the real vision path.

No vision-language model's weights ship in any package reachable here, so the tests build one: a
``Qwen2VLForConditionalGeneration`` with small dimensions (2 text layers of width 64, a 3-block vision
encoder of width 32 with Qwen2-VL's 14-pixel patches merged 2 × 2) and Qwen2.5's tokenizer (read from the
bundled Qwen2.5-Coder GGUF: the same vocabulary, ``<|vision_start|>``, ``<|image_pad|>`` and
``<|box_start|>`` included), saved as safetensors, then converted by llama.cpp's own
``convert_hf_to_gguf.py`` (from the installed llama-cpp-python's sdist, as the LoRA converter is) into the
text GGUF and, with ``--mmproj``, the projector GGUF. Its answers are noise; what the tests check is that an
image really travels decode → preprocess → vision encoder → projector → generation (different images give
different logits).

The build runs in a subprocess (torch and transformers are heavy imports) under ``nice``, and lands in
``<cache>/models/tiny-qwen2-vl-<version>/`` (``model.gguf``, ``mmproj.gguf``): a folder made whole, then
renamed, so a half-built model is never found.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

VERSION = 1
CONFIG = {
    "text_config": {
        "vocab_size": 151936,
        "hidden_size": 64,
        "intermediate_size": 128,
        "num_hidden_layers": 2,
        "num_attention_heads": 4,
        "num_key_value_heads": 2,
        "max_position_embeddings": 4096,
        # M-RoPE over the 16-wide heads: temporal, height and width sections (8 rotary pairs)
        "rope_parameters": {"rope_type": "default", "mrope_section": [2, 3, 3], "rope_theta": 1e6},
        "tie_word_embeddings": True,
    },
    # 3 blocks at least: llama.cpp's tensor map numbers the merger's layers (mlp.0, mlp.2) as blocks
    "vision_config": {
        "depth": 3,
        "embed_dim": 32,
        "hidden_size": 64,
        "num_heads": 2,
        "mlp_ratio": 2,
        "patch_size": 14,
        "spatial_merge_size": 2,
        "temporal_patch_size": 2,
    },
    "tie_word_embeddings": True,
}
# Qwen2-VL's image processor settings, which the projector converter copies into the mmproj GGUF
PREPROCESSOR = {
    "image_processor_type": "Qwen2VLImageProcessor",
    "image_mean": [0.48145466, 0.4578275, 0.40821073],
    "image_std": [0.26862954, 0.26130258, 0.27577711],
    "min_pixels": 3136,
    "max_pixels": 12845056,
    "patch_size": 14,
    "merge_size": 2,
    "temporal_patch_size": 2,
}


# Qwen2-VL's chat template (without video): a message's content is a string or a list of parts
TEMPLATE = (
    "{% for message in messages %}{% if loop.first and message['role'] != 'system' %}<|im_start|>system\n"
    "You are a helpful assistant.<|im_end|>\n{% endif %}<|im_start|>{{ message['role'] }}\n"
    "{% if message['content'] is string %}{{ message['content'] }}<|im_end|>\n{% else %}"
    "{% for content in message['content'] %}{% if content['type'] == 'image' or 'image_url' in content %}"
    "<|vision_start|><|image_pad|><|vision_end|>{% elif 'text' in content %}{{ content['text'] }}{% endif %}"
    "{% endfor %}<|im_end|>\n{% endif %}{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n"
    "{% endif %}"
)


def _cache() -> Path:
    return Path(os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")) / "groupqwen"


def tiny_vlm(tokenizer_gguf: Path) -> tuple[Path, Path]:
    """``(model.gguf, mmproj.gguf)`` of the tiny Qwen2-VL model, built on first use."""
    from groupqwen.finetune.train.convert import ensure_converter

    folder = _cache() / "models" / f"tiny-qwen2-vl-{VERSION}"
    model, mmproj = folder / "model.gguf", folder / "mmproj.gguf"
    if model.is_file() and mmproj.is_file():
        return model, mmproj
    converter = ensure_converter(_cache() / "llama.cpp") / "convert_hf_to_gguf.py"
    folder.parent.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=f".{folder.name}.", dir=folder.parent))
    try:
        hf = work / "hf"
        _run([sys.executable, __file__, str(hf), str(tokenizer_gguf)])
        for extra, out in (([], work / "model.gguf"), (["--mmproj"], work / "mmproj.gguf")):
            _run([sys.executable, str(converter), str(hf), *extra, "--outtype", "f16", "--outfile", str(out)])
        shutil.rmtree(hf)
        try:
            os.replace(work, folder)
        except OSError:
            if not model.is_file():
                raise
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return model, mmproj


def _run(command: list[str]) -> None:
    done = subprocess.run(["nice", *command], capture_output=True, text=True, timeout=1800)
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(command[:3])} failed: {done.stderr[-2000:]}")


def _build(out: Path, tokenizer_gguf: Path) -> None:
    """The transformers model (random weights, fixed seed) and its tokenizer, saved in ``out``."""
    import torch
    from transformers import AutoTokenizer, Qwen2VLConfig, Qwen2VLForConditionalGeneration

    tokenizer = AutoTokenizer.from_pretrained(str(tokenizer_gguf.parent), gguf_file=tokenizer_gguf.name)
    tokenizer.chat_template = TEMPLATE
    torch.manual_seed(0)
    model = Qwen2VLForConditionalGeneration(Qwen2VLConfig(**CONFIG)).eval()
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    (out / "preprocessor_config.json").write_text(json.dumps(PREPROCESSOR), encoding="utf-8")


if __name__ == "__main__":
    _build(Path(sys.argv[1]), Path(sys.argv[2]))
