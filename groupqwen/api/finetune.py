"""Fine-tuning jobs, in OpenAI's shape (docs/finetune.md, "Jobs API"); their files are ``api/files.py``'s.

``/v1/fine_tuning/jobs`` creates, lists, shows and cancels jobs, with their events and checkpoints;
``POST /v1/finetune/start`` is the same as creating a job. Jobs run one at a time in a worker process
(``finetune.runner``). Every route here is in ``router``, so access control can map them as one.

Files and jobs are the key's tenant's (``auth.dataset_tenant``): another tenant's are "not found" (404),
and a job trains only on its own tenant's files; the gateway's own keys see every tenant's.
"""

from __future__ import annotations

import asyncio
from typing import Any

from fastapi import APIRouter, Request
from pydantic import BaseModel, ConfigDict, ValidationError

from groupqwen.api import auth
from groupqwen.api.body import json_object, read
from groupqwen.api.openapi import body, errors
from groupqwen.api.services import Services
from groupqwen.catalog import check_suffix
from groupqwen.config import Hyperparameters
from groupqwen.errors import InvalidRequest, ModelNotFound, Overloaded, TrainingUnavailable
from groupqwen.finetune.jobs import Job, job_dir, new_id
from groupqwen.finetune.runner import JobRunner
from groupqwen.finetune.train import checkpoints

router = APIRouter(tags=["fine-tuning"])
_OPENAI_NAMES = {"n_epochs": "epochs", "batch_size": "batch_size"}


def jobs_of(request: Request) -> tuple[Services, JobRunner]:
    services: Services = request.app.state.services
    if services.jobs is None:
        raise TrainingUnavailable("fine-tuning jobs are not available on this gateway")
    return services, services.jobs


def owner_of(request: Request) -> str:
    """The tenant a new file or job belongs to (``""``: the gateway's own)."""
    return auth.dataset_tenant(request) or ""


def job_json(job: Job) -> dict[str, Any]:
    error = {"code": job.error_code, "message": job.error_message, "param": None} if job.error_code else None
    return {
        "id": job.id,
        "object": "fine_tuning.job",
        "created_at": job.created_at,
        "finished_at": job.finished_at,
        "model": job.model,
        "fine_tuned_model": job.fine_tuned_model,
        "organization_id": "groupqwen",
        "status": job.status,
        "training_file": job.training_file,
        "validation_file": job.validation_file,
        "hyperparameters": {
            "n_epochs": job.hyperparameters["epochs"],
            "batch_size": job.hyperparameters["batch_size"],
            "learning_rate_multiplier": 1.0,
            **job.hyperparameters,
        },
        "result_files": [],
        "trained_tokens": job.trained_tokens,
        "error": error,
        "seed": job.hyperparameters["seed"],
        "suffix": job.suffix,
        "estimated_finish": None,
        "integrations": [],
        "metadata": None,
    }


class JobRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    model: str
    training_file: str
    validation_file: str | None = None
    suffix: str | None = None
    seed: int | None = None
    hyperparameters: dict[str, Any] | None = None
    metadata: dict[str, str] | None = None


def hyperparameters(services: Services, given: dict[str, Any] | None, seed: int | None) -> Hyperparameters:
    """OpenAI's names (``n_epochs``, ``batch_size``, ``learning_rate_multiplier``, ``"auto"``) and ours."""
    defaults = services.settings.finetune.hyperparameters
    values: dict[str, Any] = {}
    for name, value in (given or {}).items():
        if value == "auto":
            continue
        if name == "learning_rate_multiplier":
            if not isinstance(value, int | float) or isinstance(value, bool):
                raise InvalidRequest("must be a number", param="hyperparameters.learning_rate_multiplier")
            values["learning_rate"] = defaults.learning_rate * value
        else:
            values[_OPENAI_NAMES.get(name, name)] = value
    if seed is not None:
        values["seed"] = seed
    try:
        return Hyperparameters(**{**defaults.model_dump(), **values})
    except ValidationError as exc:
        first = exc.errors()[0]
        field = ".".join(str(p) for p in first["loc"])
        raise InvalidRequest(
            f"hyperparameters.{field}: {first['msg']}", param=f"hyperparameters.{field}"
        ) from None


@router.post("/v1/fine_tuning/jobs", responses=errors(400, 404, 503), openapi_extra=body())
@router.post("/v1/finetune/start", responses=errors(400, 404, 503), openapi_extra=body())
async def create_job(request: Request) -> dict[str, Any]:
    """Queue a LoRA fine-tuning job on a base model whose GGUF is on this machine; the result is served
    as `ft:<model>:<suffix>:<id>`. `/v1/finetune/start` is the same call."""
    services, jobs = jobs_of(request)
    try:
        body = JobRequest(**json_object(await read(request)))
    except ValidationError as exc:
        first = exc.errors()[0]
        field = ".".join(str(p) for p in first["loc"])
        raise InvalidRequest(f"{field}: {first['msg']}", param=field) from None
    spec = services.settings.available().get(body.model)
    if spec is None or spec.path is None or spec.backend != "llamacpp" or spec.lora_path is not None:
        raise ModelNotFound(
            f"{body.model!r} cannot be fine-tuned here: name a base model whose GGUF is on this machine",
            param="model",
        )
    try:
        suffix = check_suffix(body.suffix or "custom")
    except ValueError as exc:
        raise InvalidRequest(str(exc), param="suffix") from None
    hyper = hyperparameters(services, body.hyperparameters, body.seed)
    for name in ("training_file", "validation_file"):
        file_id = getattr(body, name)
        if file_id is not None:
            try:
                await asyncio.to_thread(jobs.store.file, file_id, auth.dataset_tenant(request))
            except Exception as exc:
                raise InvalidRequest(f"{name}: no file {file_id!r}", param=name) from exc
    if await asyncio.to_thread(jobs.store.queued) >= services.settings.finetune.max_queued:
        raise Overloaded("too many fine-tuning jobs are waiting (finetune.max_queued)", retry_after=60)
    job = await asyncio.to_thread(
        jobs.store.create,
        id=new_id("ftjob"),
        model=body.model,
        suffix=suffix,
        training_file=body.training_file,
        validation_file=body.validation_file,
        hyperparameters=hyper.model_dump(mode="json"),
        tenant=owner_of(request),
    )
    jobs.wake()
    return job_json(job)


@router.get("/v1/fine_tuning/jobs", responses=errors(400, 404, 503))
async def list_jobs(request: Request, after: str | None = None, limit: int = 20) -> dict[str, Any]:
    """The caller's fine-tuning jobs, newest first, `limit` (1–100) at a time; `after`: those older than
    that job."""
    _, jobs = jobs_of(request)
    limit = max(1, min(limit, 100))
    found = await asyncio.to_thread(jobs.store.jobs, after, limit + 1, auth.dataset_tenant(request))
    return {"object": "list", "data": [job_json(j) for j in found[:limit]], "has_more": len(found) > limit}


@router.get("/v1/fine_tuning/jobs/{job_id}", responses=errors(404, 503))
async def retrieve_job(request: Request, job_id: str) -> dict[str, Any]:
    """One fine-tuning job: status, hyperparameters, trained tokens, the fine-tuned model's id once it
    succeeded."""
    _, jobs = jobs_of(request)
    return job_json(await asyncio.to_thread(jobs.store.job, job_id, auth.dataset_tenant(request)))


@router.post("/v1/fine_tuning/jobs/{job_id}/cancel", responses=errors(404, 503))
async def cancel_job(request: Request, job_id: str) -> dict[str, Any]:
    """Cancel a queued or running job; its checkpoints are kept."""
    _, jobs = jobs_of(request)
    await asyncio.to_thread(jobs.store.job, job_id, auth.dataset_tenant(request))
    return job_json(await jobs.cancel(job_id))


@router.get("/v1/fine_tuning/jobs/{job_id}/events", responses=errors(400, 404, 503))
async def list_events(
    request: Request, job_id: str, after: str | None = None, limit: int = 20
) -> dict[str, Any]:
    """A job's events (progress, losses, errors), newest first, `limit` (1–1000) at a time; `after`: those
    older than that event."""
    _, jobs = jobs_of(request)
    await asyncio.to_thread(jobs.store.job, job_id, auth.dataset_tenant(request))
    limit = max(1, min(limit, 1000))
    before = (
        int(after.removeprefix("ftevent-")) if after and after.removeprefix("ftevent-").isdigit() else None
    )
    rows = await asyncio.to_thread(jobs.store.events, job_id, before, limit + 1)
    events = [
        {
            "id": f"ftevent-{row['seq']}",
            "object": "fine_tuning.job.event",
            "created_at": row["created_at"],
            "level": row["level"],
            "message": row["message"],
            "type": row["type"],
            "data": row["data"],
        }
        for row in rows[:limit]
    ]
    return {"object": "list", "data": events, "has_more": len(rows) > limit}


@router.get("/v1/fine_tuning/jobs/{job_id}/checkpoints", responses=errors(404, 503))
async def list_checkpoints(request: Request, job_id: str) -> dict[str, Any]:
    """A job's saved checkpoints, newest first, with their step and losses; a resumed job continues from
    the last."""
    services, jobs = jobs_of(request)
    job = await asyncio.to_thread(jobs.store.job, job_id, auth.dataset_tenant(request))
    found = await asyncio.to_thread(checkpoints.listed, job_dir(services.settings, job_id))
    items = [
        {
            "id": f"ftckpt-{job_id}-{c.step}",
            "object": "fine_tuning.job.checkpoint",
            "created_at": int(c.path.stat().st_mtime),
            "fine_tuning_job_id": job.id,
            "fine_tuned_model_checkpoint": str(c.path),
            "step_number": c.step,
            "metrics": {"step": c.step, "train_loss": c.train_loss, "valid_loss": c.val_loss},
        }
        for c in reversed(found)
    ]
    return {"object": "list", "data": items, "has_more": False}
