"""Build a training set: split by conversation, fit the token budget, augment, render, write a manifest.

The split is decided per conversation id from a hash of ``seed`` and the id, so a conversation (all its
branches and pieces) lands in one split and the same seed gives the same split on every run. Over-long
conversations are truncated to their first exchanges that fit, split into several samples at exchange
boundaries, or dropped. The manifest records the settings, the hashes of the source and of each output,
counts and token statistics, and no timestamps: building twice gives byte-identical files.
"""

from __future__ import annotations

import hashlib
import json
import statistics
from collections import Counter
from collections.abc import Iterator
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any, Literal

from groupqwen.finetune.formats import Format, Thinking, chatml, render
from groupqwen.finetune.records import Conversation, Turn, read_jsonl
from groupqwen.finetune.tokens import ApproxCounter, TokenCounter

Overflow = Literal["truncate", "split", "drop"]
MANIFEST_VERSION = 1


@dataclass(frozen=True)
class BuildConfig:
    format: Format = "openai"
    thinking: Thinking = "drop"  # non-thinking by default; "keep" trains on the reasoning too
    val_fraction: float = 0.1
    seed: int = 0
    max_tokens: int | None = None
    overflow: Overflow = "truncate"
    system_prompts: tuple[str, ...] = ()  # variants: each sample gets one, chosen from the seed and its id
    augment: int = 1  # training copies per conversation, each with another system-prompt variant
    attachments: bool = True  # attachments' text goes before the user's words

    def __post_init__(self) -> None:
        if not 0.0 <= self.val_fraction < 1.0:
            raise ValueError("val_fraction must be in [0, 1)")
        if self.augment < 1 or (self.augment > 1 and len(self.system_prompts) < 2):
            raise ValueError("augment > 1 needs at least two system prompts to vary")
        if self.max_tokens is not None and self.max_tokens < 16:
            raise ValueError("max_tokens must be at least 16")


def _fraction(seed: int, key: str) -> float:
    return int(hashlib.sha256(f"{seed}:{key}".encode()).hexdigest()[:13], 16) / 16**13


def split_of(conv_id: str, seed: int, val_fraction: float) -> str:
    return "validation" if _fraction(seed, conv_id) < val_fraction else "train"


def exchanges(turns: tuple[Turn, ...]) -> tuple[tuple[Turn, ...], list[tuple[Turn, ...]]]:
    """The leading system turns, and the rest grouped as question(s) + answer."""
    head = 0
    while head < len(turns) and turns[head].role == "system":
        head += 1
    groups: list[tuple[Turn, ...]] = []
    current: list[Turn] = []
    for turn in turns[head:]:
        current.append(turn)
        if turn.role == "assistant":
            groups.append(tuple(current))
            current = []
    return turns[:head], groups


def fit(turns: tuple[Turn, ...], config: BuildConfig, counter: TokenCounter) -> list[tuple[Turn, ...]]:
    """The samples one conversation gives under ``max_tokens`` (none when nothing fits)."""
    if config.max_tokens is None:
        return [turns]

    def size(ts: tuple[Turn, ...]) -> int:
        return counter.count(chatml(ts, config.thinking, config.attachments))

    if size(turns) <= config.max_tokens:
        return [turns]
    if config.overflow == "drop":
        return []
    system, groups = exchanges(turns)
    pieces: list[tuple[Turn, ...]] = []
    current: tuple[Turn, ...] = system
    for group in groups:
        if size(current + group) <= config.max_tokens:
            current += group
            continue
        if len(current) > len(system):
            pieces.append(current)
            if config.overflow == "truncate":
                return pieces
        current = system + group if size(system + group) <= config.max_tokens else system
    if len(current) > len(system):
        pieces.append(current)
    return pieces[:1] if config.overflow == "truncate" else pieces


def _with_system(turns: tuple[Turn, ...], prompt: str) -> tuple[Turn, ...]:
    if turns and turns[0].role == "system":
        return turns
    return (Turn("system", prompt), *turns)


@dataclass(frozen=True)
class Sample:
    split: str
    conversation: str
    record: dict[str, Any]
    tokens: int


def samples(
    conversations: Iterator[Conversation], config: BuildConfig, counter: TokenCounter, dropped: Counter[str]
) -> Iterator[Sample]:
    for conv in conversations:
        split = split_of(conv.id, config.seed, config.val_fraction)
        pieces = fit(conv.turns, config, counter)
        if not pieces:
            dropped["over max_tokens"] += 1
            continue
        copies = config.augment if split == "train" else 1
        for piece in pieces:
            for copy in range(copies):
                turns = piece
                if config.system_prompts:
                    start = int(_fraction(config.seed, conv.id + ":system") * len(config.system_prompts))
                    turns = _with_system(
                        piece, config.system_prompts[(start + copy) % len(config.system_prompts)]
                    )
                variant = replace(conv, turns=turns)
                tokens = counter.count(chatml(turns, config.thinking, config.attachments))
                yield Sample(
                    split,
                    conv.id,
                    render(variant, config.format, config.thinking, config.attachments),
                    tokens,
                )


def _stats(values: list[int]) -> dict[str, float | int]:
    if not values:
        return {"samples": 0, "total": 0}
    ordered = sorted(values)
    return {
        "samples": len(values),
        "total": sum(values),
        "min": ordered[0],
        "mean": round(statistics.fmean(values), 1),
        "p50": ordered[len(ordered) // 2],
        "p95": ordered[min(len(ordered) - 1, int(len(ordered) * 0.95))],
        "max": ordered[-1],
    }


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(2**20), b""):
            digest.update(block)
    return digest.hexdigest()


def build_dataset(
    source: Path, out_dir: Path, config: BuildConfig, counter: TokenCounter | None = None
) -> dict[str, Any]:
    """Write ``train.jsonl``, ``validation.jsonl`` and ``manifest.json`` into ``out_dir``."""
    counter = counter or ApproxCounter()
    out_dir.mkdir(parents=True, exist_ok=True)
    dropped: Counter[str] = Counter()
    tokens: dict[str, list[int]] = {"train": [], "validation": []}
    conversations: dict[str, set[str]] = {"train": set(), "validation": set()}
    paths = {split: out_dir / f"{split}.jsonl" for split in tokens}
    files = {split: path.open("w", encoding="utf-8") for split, path in paths.items()}
    try:
        for sample in samples(read_jsonl(source), config, counter, dropped):
            files[sample.split].write(json.dumps(sample.record, ensure_ascii=False) + "\n")
            tokens[sample.split].append(sample.tokens)
            conversations[sample.split].add(sample.conversation)
    finally:
        for f in files.values():
            f.close()
    manifest: dict[str, Any] = {
        "version": MANIFEST_VERSION,
        "settings": {**asdict(config), "system_prompts": list(config.system_prompts)},
        "tokenizer": counter.name,
        "source": {"path": source.name, "sha256": sha256_file(source)},
        "files": {
            path.name: {
                "sha256": sha256_file(path),
                "samples": len(tokens[split]),
                "conversations": len(conversations[split]),
                "tokens": _stats(tokens[split]),
            }
            for split, path in paths.items()
        },
        "dropped": dict(sorted(dropped.items())),
    }
    (out_dir / "manifest.json").write_text(json.dumps(manifest, indent=2, ensure_ascii=False) + "\n")
    return manifest
