"""A PEFT LoRA adapter → a GGUF LoRA that llama.cpp applies (``Llama(model_path=…, lora_path=…)``).

The converter is llama.cpp's own ``convert_lora_to_gguf.py``, with the ``conversion`` package and the
``gguf-py`` it imports. They ship in the llama-cpp-python source distribution on PyPI (not in its wheel),
so ``ensure_converter`` downloads the sdist of the *installed* llama-cpp-python version with pip (the same
code that built the llama.cpp that will load the adapter), extracts just those files into
``<cache>/llama.cpp-<version>/`` (temporary folder + rename) and reuses them afterwards. ``make models``
does it once. The conversion runs in a subprocess (it imports torch and transformers at module level).
"""

from __future__ import annotations

import importlib.metadata
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
from collections.abc import Sequence
from pathlib import Path

from groupqwen.errors import FinetuneError, TrainingUnavailable

SCRIPT = "convert_lora_to_gguf.py"
_WANTED = ("convert_lora_to_gguf.py", "convert_hf_to_gguf.py", "conversion/", "gguf-py/")
PIP_TIMEOUT_S = 1800.0
CONVERT_TIMEOUT_S = 1800.0


def llama_cpp_version() -> str:
    try:
        return importlib.metadata.version("llama-cpp-python")
    except importlib.metadata.PackageNotFoundError:
        raise TrainingUnavailable("converting an adapter needs llama-cpp-python installed") from None


def converter_dir(cache: Path) -> Path:
    return cache / f"llama.cpp-{llama_cpp_version()}"


def extract(sdist: Path, dest: Path) -> Path:
    """Copy the converter's files out of a llama-cpp-python sdist into ``dest`` (made whole or not at all)."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=f".{dest.name}.", dir=dest.parent))
    try:
        with tarfile.open(sdist) as tar:
            for member in tar.getmembers():
                _, _, inner = member.name.partition("/vendor/llama.cpp/")
                if not inner or not inner.startswith(_WANTED) or not (member.isfile() or member.isdir()):
                    continue
                target = work / inner
                if member.isdir():
                    target.mkdir(parents=True, exist_ok=True)
                    continue
                target.parent.mkdir(parents=True, exist_ok=True)
                source = tar.extractfile(member)
                if source is None:
                    continue
                with source, target.open("wb") as out:
                    shutil.copyfileobj(source, out)
        if not (work / SCRIPT).is_file():
            raise FinetuneError(f"{sdist.name} holds no vendor/llama.cpp/{SCRIPT}")
        try:
            os.replace(work, dest)
        except OSError:
            if not (dest / SCRIPT).is_file():
                raise
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return dest


def ensure_converter(cache: Path, pip_args: Sequence[str] = ()) -> Path:
    """The folder holding ``convert_lora_to_gguf.py`` for the installed llama-cpp-python, fetched once."""
    dest = converter_dir(cache)
    if (dest / SCRIPT).is_file():
        return dest
    version = llama_cpp_version()
    cache.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=".sdist.", dir=cache) as download:
        command = [sys.executable, "-m", "pip", "download", "--quiet", "--no-deps", "--no-binary", ":all:"]
        command += [*pip_args, "--dest", download, f"llama-cpp-python=={version}"]
        try:
            subprocess.run(command, check=True, capture_output=True, text=True, timeout=PIP_TIMEOUT_S)
        except subprocess.CalledProcessError as exc:
            raise TrainingUnavailable(
                f"could not download the llama-cpp-python {version} source for its LoRA converter: "
                f"{exc.stderr.strip()[-500:]}"
            ) from None
        except subprocess.TimeoutExpired:
            raise TrainingUnavailable(f"downloading llama-cpp-python {version}'s source timed out") from None
        sdists = sorted(Path(download).glob("llama_cpp_python-*.tar.gz"))
        if not sdists:
            raise TrainingUnavailable(f"pip gave no llama-cpp-python {version} source distribution")
        return extract(sdists[0], dest)


def to_gguf(adapter: Path, base: Path, out: Path, cache: Path) -> Path:
    """Convert the PEFT adapter folder ``adapter`` (trained on the transformers copy ``base``) to ``out``."""
    script = ensure_converter(cache) / SCRIPT
    out.parent.mkdir(parents=True, exist_ok=True)
    partial = out.with_name(f".{out.name}.partial")
    command = [sys.executable, str(script), "--base", str(base), "--outtype", "f32"]
    command += ["--outfile", str(partial), str(adapter)]
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=CONVERT_TIMEOUT_S)
        if done.returncode != 0 or not partial.is_file():
            raise FinetuneError(f"converting the adapter to GGUF failed: {done.stderr.strip()[-800:]}")
        os.replace(partial, out)
    except subprocess.TimeoutExpired:
        raise FinetuneError("converting the adapter to GGUF timed out") from None
    finally:
        partial.unlink(missing_ok=True)
    return out


def publish(
    adapter: Path, base: Path, base_id: str, model_id: str, registry: Path, cache: Path, owner: str = ""
) -> Path:
    """Convert a finished adapter (beside it, ``adapter.gguf``) and record it as the model ``model_id``
    (``owner``'s: see ``register_finetuned``); until both succeed nothing is served."""
    from groupqwen.catalog import register_finetuned

    gguf = to_gguf(adapter, base, adapter.parent / "adapter.gguf", cache)
    register_finetuned(registry, model_id, base_id, gguf, owner)
    return gguf
