"""A tiny Qwen3-like GGUF written in the test: a llama-architecture model with hand-set weights whose
every answer is known, and Qwen3's chat template (with ``enable_thinking``).

The weights make a *bigram* model: attention and feed-forward weights are zero, so the last position's
logits depend on its own token alone (embedding → RMS norm → output matrix). Each token of ``CHAIN`` gets
its own embedding direction, and the output matrix sends it to the next one; so after the prompt's last
token (the newline of ``<|im_start|>assistant\\n``) the model writes ``<think>``, ``Let me think.``,
``</think>``, ``Paris.`` and ends. The vocabulary is GPT-2's 256 byte tokens (any prompt tokenizes), Qwen's
control tokens, and the chain's words as added tokens (as Qwen3's ``<think>`` is).
"""

from __future__ import annotations

import itertools
from pathlib import Path

import numpy as np

# Qwen3's template as it bears on a plain conversation: the thinking switch closes an empty <think> block
QWEN3_TEMPLATE = (
    "{%- for message in messages %}{{- '<|im_start|>' + message.role + '\\n' + message.content + '<|im_end|>'"
    " + '\\n' }}{%- endfor %}{%- if add_generation_prompt %}{{- '<|im_start|>assistant\\n' }}"
    "{%- if enable_thinking is defined and enable_thinking is false %}{{- '<think>\\n\\n</think>\\n\\n' }}"
    "{%- endif %}{%- endif %}"
)
# the Qwen3-2507 "thinking" variant: the generation prompt itself opens the block
OPENING_TEMPLATE = QWEN3_TEMPLATE.replace(
    "'<|im_start|>assistant\\n' }}", "'<|im_start|>assistant\\n<think>' }}"
)

REASONING, ANSWER = "Let me think.", "Paris."
CHAIN = ["Ċ", "<think>", REASONING, "</think>", ANSWER, "<|im_end|>"]  # Ċ: GPT-2's byte token for "\n"
CONTROL = ["<|im_start|>", "<|im_end|>", "<|endoftext|>"]
ADDED = ["<think>", "</think>", REASONING, ANSWER]


def _byte_tokens() -> list[str]:
    """GPT-2's printable stand-ins for the 256 bytes."""
    printable = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1))
    printable += list(range(ord("®"), ord("ÿ") + 1))
    chars, extra = [], 0
    for b in range(256):
        if b in printable:
            chars.append(chr(b))
        else:
            chars.append(chr(256 + extra))
            extra += 1
    return chars


def write_thinking_gguf(path: Path, template: str = QWEN3_TEMPLATE) -> Path:
    import gguf

    tokens = [*_byte_tokens(), *CONTROL, *ADDED]
    types = [gguf.TokenType.NORMAL] * 256 + [gguf.TokenType.CONTROL] * len(CONTROL)
    types += [gguf.TokenType.USER_DEFINED] * len(ADDED)
    n_vocab, dim = len(tokens), 16
    index = {t: i for i, t in enumerate(tokens)}
    embeddings = np.zeros((n_vocab, dim), dtype=np.float32)
    output = np.zeros((n_vocab, dim), dtype=np.float32)
    for slot, (token, following) in enumerate(itertools.pairwise(CHAIN)):
        embeddings[index[token], slot] = 1.0
        output[index[following], slot] = 10.0

    writer = gguf.GGUFWriter(str(path), "llama")
    writer.add_name("tiny-qwen3-thinking")
    writer.add_context_length(512)
    writer.add_embedding_length(dim)
    writer.add_block_count(1)
    writer.add_feed_forward_length(dim)
    writer.add_head_count(1)
    writer.add_head_count_kv(1)
    writer.add_rope_dimension_count(dim)
    writer.add_layer_norm_rms_eps(1e-6)
    writer.add_file_type(gguf.LlamaFileType.ALL_F32)
    writer.add_tokenizer_model("gpt2")
    writer.add_tokenizer_pre("default")
    writer.add_token_list(tokens)
    writer.add_token_types(types)
    writer.add_token_merges(["Ġ Ġ"])
    writer.add_bos_token_id(index["<|endoftext|>"])
    writer.add_eos_token_id(index["<|im_end|>"])
    writer.add_add_bos_token(False)
    writer.add_chat_template(template)
    zeros = np.zeros((dim, dim), dtype=np.float32)
    ones = np.ones(dim, dtype=np.float32)
    writer.add_tensor("token_embd.weight", embeddings)
    writer.add_tensor("output_norm.weight", ones)
    writer.add_tensor("output.weight", output)
    for name in ("attn_q", "attn_k", "attn_v", "attn_output", "ffn_gate", "ffn_up", "ffn_down"):
        writer.add_tensor(f"blk.0.{name}.weight", zeros)
    writer.add_tensor("blk.0.attn_norm.weight", ones)
    writer.add_tensor("blk.0.ffn_norm.weight", ones)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path
