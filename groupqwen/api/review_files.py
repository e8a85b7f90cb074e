"""Chat exports in, training sets out, for the web UI's data page (docs/finetune.md, "Review over HTTP").

``POST /v1/review/{name}/import`` streams an export to disk and runs the CLI's import and curation into the
review dataset; ``GET /v1/review/{name}/build`` runs ``data build`` on what the review kept and answers a
ZIP of ``train.jsonl``, ``validation.jsonl`` and ``manifest.json``; ``POST /v1/review/{name}/files`` keeps
the same build (OpenAI messages) as ``fine-tune`` files, to start a job with. Included before
``review.router``, whose ``/v1/review/{name:path}`` would otherwise take these paths.
"""

from __future__ import annotations

import asyncio
import io
import os
import re
import tempfile
import zipfile
from pathlib import Path, PurePath
from typing import TYPE_CHECKING, Any, Literal

from fastapi import APIRouter, Query, Request
from fastapi.responses import Response

from groupqwen.api.files import files_folder, keep_file
from groupqwen.api.openapi import errors
from groupqwen.api.review import Dataset, dataset_at, dataset_lock, storage_errors
from groupqwen.config import Settings
from groupqwen.errors import GroupQwenError, InvalidExport, InvalidRequest, PayloadTooLarge
from groupqwen.finetune.records import dumps, read_jsonl
from groupqwen.finetune.review import ReviewStore

if TYPE_CHECKING:
    from groupqwen.finetune.dataset import BuildConfig

router = APIRouter()
UPLOAD_PATH = re.compile(r"^/v1/review/[^/]+/import$")  # api/app.py caps these bodies at ui.max_upload_mb
_EXPORT_SUFFIXES = (".zip", ".json", ".md", ".markdown")
_SAFE_NAME = re.compile(r"[^\w .()+-]")  # the upload keeps its name, made safe to lie on disk


def _scratch(settings: Settings) -> Path:
    """Where uploads and builds are worked on: ``data_dir``'s disk, which the operator sized (a full one is
    a 507); each request's own temporary folder in it is removed after."""
    folder = settings.data_dir / "review" / ".work"
    folder.mkdir(parents=True, exist_ok=True)
    return folder


@router.post("/v1/review/{name:path}/import", responses=errors(400, 413, 507))
async def import_export(
    request: Request,
    name: str,
    filename: str = Query(..., min_length=1, max_length=255, description="The export's file name"),
    languages: str = Query("en", description="ISO 639-1 codes curation keeps, comma-separated; '': any"),
) -> dict[str, Any]:
    """The body is a ChatGPT / Claude / Perplexity export (ZIP, JSON or Markdown), streamed to disk, then
    imported and curated as ``groupqwen data import`` and ``data curate`` do; the curated conversations
    replace the dataset's (decisions are kept)."""
    dataset = dataset_at(request, name)
    suffix = PurePath(filename).suffix.lower()
    if suffix not in _EXPORT_SUFFIXES:
        raise InvalidRequest(
            f"Invalid value for 'filename': an export is a {', '.join(_EXPORT_SUFFIXES)} file",
            param="filename",
        )
    codes = tuple(c.strip().lower() for c in languages.split(",") if c.strip())
    settings: Settings = request.app.state.services.settings
    with storage_errors(), tempfile.TemporaryDirectory(dir=_scratch(settings)) as folder:
        upload = Path(folder) / _SAFE_NAME.sub("_", PurePath(filename).name)
        size = await _receive(request, upload, settings.ui.max_upload_mb * 2**20)
        try:
            report = await asyncio.to_thread(_import_and_curate, upload, codes)
        except GroupQwenError as exc:  # the messages name the upload as the client did, not where it lay
            exc.message = exc.message.replace(f"{folder}{os.sep}", "")
            raise
        async with dataset_lock(request, dataset):
            await asyncio.to_thread(_install, Path(folder) / "curated.jsonl", dataset, report["warnings"])
    return {"object": "review.import", "name": dataset.name, "bytes": size, **report}


async def _receive(request: Request, path: Path, limit: int) -> int:
    size = 0
    with path.open("wb") as f:
        async for chunk in request.stream():
            size += len(chunk)
            if size > limit:  # the middleware's cap already holds; a chunked body is counted here too
                raise PayloadTooLarge(f"The export is larger than {limit} bytes (ui.max_upload_mb)")
            f.write(chunk)
    if size == 0:
        raise InvalidRequest("The body is empty: send the export's bytes", param="body")
    return size


def _import_and_curate(upload: Path, languages: tuple[str, ...]) -> dict[str, Any]:
    from groupqwen.finetune.curate import CurateConfig, curate_file
    from groupqwen.finetune.importers import import_paths
    from groupqwen.finetune.quality import QualityConfig

    imported = upload.with_name("imported.jsonl")
    report = import_paths([upload], imported)
    try:
        curated = curate_file(
            imported,
            upload.with_name("curated.jsonl"),
            CurateConfig(quality=QualityConfig(languages=languages)),
        )
    except ValueError as exc:  # an unknown language code
        raise InvalidRequest(f"Invalid value for 'languages': {exc}", param="languages") from None
    if not curated.kept:  # replacing the dataset with nothing would lose it
        reasons = ", ".join(f"{reason}: {n}" for reason, n in curated.rejected)
        hint = "; 'languages' names the languages kept ('' for any)" if "language" in reasons else ""
        raise InvalidExport(
            f"curation kept none of the {report.written} conversation(s) imported ({reasons}); "
            f"the dataset is unchanged{hint}"
        )
    return {
        "formats": sorted({f.format for f in report.files}),
        "imported": report.written,
        "conversations": curated.kept,
        "rejected": dict(curated.rejected),
        "warnings": [f"{f.name}: {f.error}" for f in report.files if f.error],
    }


def _install(curated: Path, dataset: Dataset, stopped_early: list[str]) -> None:
    """The curated conversations become the dataset's; not those of an export that broke off midway over
    a dataset that has conversations: they would replace them with what was read before the break."""
    if stopped_early and dataset.conversations.is_file() and dataset.conversations.stat().st_size:
        raise InvalidExport(
            f"{'; '.join(stopped_early)}: the export broke off, and the dataset, which has conversations, is "
            "unchanged (import it into a new dataset to review what was read)"
        )
    dataset.folder.mkdir(parents=True, exist_ok=True)
    os.replace(curated, dataset.conversations)


def _build(dataset: Dataset, config: BuildConfig, keep_pending: bool, folder: Path) -> Path:
    """``data build`` over what the review of ``dataset`` kept, into ``folder / "out"``."""
    from groupqwen.finetune.dataset import build_dataset

    dataset.require()
    kept = ReviewStore(dataset.decisions).apply(list(read_jsonl(dataset.conversations)), keep_pending)
    source = folder / "reviewed.jsonl"
    source.write_text("".join(dumps(c) + "\n" for c in kept), encoding="utf-8")
    build_dataset(source, folder / "out", config)
    return folder / "out"


@router.get("/v1/review/{name:path}/build", responses=errors(404, 507))
async def build(
    request: Request,
    name: str,
    format: Literal["openai", "sharegpt", "chatml"] = Query("openai", description="The samples' format"),
    thinking: Literal["drop", "keep"] = Query("drop", description="Train on the reasoning too (keep)"),
    val_fraction: float = Query(0.1, ge=0, lt=1, description="Share of conversations for validation"),
    seed: int = Query(0, description="The split's seed: the same seed gives the same split"),
    keep_pending: bool = Query(True, description="Include the conversations not reviewed yet"),
) -> Response:
    """``data build`` over what the review kept (as the export): a ZIP of the training set."""
    from groupqwen.finetune.dataset import BuildConfig

    dataset = dataset_at(request, name)
    config = BuildConfig(format=format, thinking=thinking, val_fraction=val_fraction, seed=seed)

    def run(folder: Path) -> bytes:
        out = _build(dataset, config, keep_pending, folder)
        buffer = io.BytesIO()
        with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
            for file in ("train.jsonl", "validation.jsonl", "manifest.json"):
                archive.write(out / file, file)
        return buffer.getvalue()

    settings: Settings = request.app.state.services.settings
    with storage_errors(), tempfile.TemporaryDirectory(dir=_scratch(settings)) as folder:
        async with dataset_lock(request, dataset):
            body = await asyncio.to_thread(run, Path(folder))
    disposition = f'attachment; filename="{dataset.name}-{format}.zip"'
    return Response(body, media_type="application/zip", headers={"content-disposition": disposition})


@router.post("/v1/review/{name:path}/files", responses=errors(400, 404, 503, 507))
async def build_files(
    request: Request,
    name: str,
    thinking: Literal["drop", "keep"] = Query("drop", description="Train on the reasoning too (keep)"),
    val_fraction: float = Query(0.1, ge=0, lt=1, description="Share of conversations for validation"),
    seed: int = Query(0, description="The split's seed: the same seed gives the same split"),
    keep_pending: bool = Query(True, description="Include the conversations not reviewed yet"),
) -> dict[str, Any]:
    """``data build`` over what the review kept, in OpenAI's messages format, kept as ``fine-tune`` files
    of the caller's tenant (as ``POST /v1/files`` keeps an upload): ``training_file`` and
    ``validation_file`` (``null`` when the split left it empty) are what a job is created with. A review
    that kept nothing is a 400, as an empty upload is."""
    from groupqwen.finetune.dataset import BuildConfig

    services = request.app.state.services
    dataset = dataset_at(request, name)
    config = BuildConfig(format="openai", thinking=thinking, val_fraction=val_fraction, seed=seed)
    with storage_errors(), tempfile.TemporaryDirectory(dir=files_folder(services)) as folder:
        async with dataset_lock(request, dataset):
            out = await asyncio.to_thread(_build, dataset, config, keep_pending, Path(folder))
        train, validation = out / "train.jsonl", out / "validation.jsonl"
        sizes = await asyncio.to_thread(lambda: (train.stat().st_size, validation.stat().st_size))
        if sizes[1] and not sizes[0]:  # a few conversations, and the split's hash sent all to validation
            raise InvalidRequest(
                "The split left no training conversation: it put every one in validation; lower "
                "'val_fraction' or try another 'seed'",
                param="val_fraction",
            )
        kept: dict[str, Any] = {"object": "review.files", "name": dataset.name}
        kept["training_file"] = await keep_file(request, train, f"{dataset.name}-train.jsonl")
        kept["validation_file"] = (
            await keep_file(request, validation, f"{dataset.name}-validation.jsonl") if sizes[1] else None
        )
    return kept
