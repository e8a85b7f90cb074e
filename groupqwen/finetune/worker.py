"""One fine-tuning job in its own process: ``python -m groupqwen.finetune.worker <job-id>``.

Started by the gateway's ``JobRunner`` (at a lower priority, with bounded threads). It reads the job and
the settings (the environment the runner passes), trains into ``data_dir/finetune/jobs/<id>/``, resuming
from the last checkpoint when there is one, writes its events to the job's rows, and on success converts
and records the adapter as ``ft:<base>:<suffix>:<id>`` (the gateway then serves it and marks the job
``succeeded``). SIGTERM (cancel, or the gateway stopping)
checkpoints after the current step and exits: ``cancelled`` if a cancel was asked, else ``queued`` again.
A failure is recorded with ``error.code`` and ``error.message``; nothing is recorded as a model then.
"""

from __future__ import annotations

import signal
import sys
import threading
from types import FrameType

from groupqwen.catalog import finetuned_id
from groupqwen.config import Hyperparameters, Settings, cache_home, load_settings
from groupqwen.errors import GroupQwenError
from groupqwen.finetune.jobs import Job, JobStore, job_dir
from groupqwen.finetune.train import base, convert, trainer
from groupqwen.finetune.train.events import Event
from groupqwen.telemetry.database import database_url


def run_job(settings: Settings, store: JobStore, job: Job, stop: threading.Event) -> str:
    """Train ``job`` to its end (or until ``stop``); returns the status it was left in."""

    def sink(event: Event) -> None:
        store.add_event(job.id, event.level, event.type, event.message, event.data)

    spec = settings.available().get(job.model)
    if spec is None or spec.path is None:
        raise GroupQwenError(f"the base model {job.model!r} is not on this machine")
    out = job_dir(settings, job.id)
    train_file = store.file(job.training_file).path
    validation = store.file(job.validation_file).path if job.validation_file else None
    sink(Event("message", f"preparing the base model {job.model}"))
    base_path = base.ensure_base(spec.path, settings.models_dir / "hf")
    run = trainer.RunSpec(
        base_path,
        train_file,
        out,
        Hyperparameters(**job.hyperparameters),
        validation,
        settings.finetune.threads,
    )
    result = trainer.train(run, sinks=[sink], stop=stop, resume=True)
    if result.adapter is None:
        cancelled = store.job(job.id).cancel_requested
        status = "cancelled" if cancelled else "queued"
        store.update(job.id, status=status)
        return status
    model_id = finetuned_id(job.model, job.suffix, job.id)
    sink(Event("message", "converting the adapter to GGUF"))
    convert.publish(
        result.adapter, base_path, job.model, model_id, settings.finetuned_dir, cache_home() / "llama.cpp",
        owner=job.tenant,  # trained on the tenant's data: the tenant's model
    )  # fmt: skip
    # the gateway serves it, then marks the job succeeded: a client never sees a model it cannot use yet
    store.update(job.id, fine_tuned_model=model_id, trained_tokens=result.trained_tokens)
    sink(Event("message", f"the model {model_id} is ready"))
    return "running"


def main(job_id: str) -> int:
    settings = load_settings()
    store = JobStore(database_url(settings))
    stop = threading.Event()

    def on_signal(signum: int, frame: FrameType | None) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    job = store.job(job_id)
    if not store.start(job_id):  # cancelled between the runner picking it and this process starting
        store.close()
        return 0
    try:
        run_job(settings, store, job, stop)
    except GroupQwenError as exc:
        store.update(job_id, status="failed", error_code=exc.code, error_message=exc.message)
        store.add_event(job_id, "error", "message", f"failed: {exc.message}", {})
        return 1
    except Exception as exc:  # a bug or a broken environment: still a failed job that says why
        message = f"{type(exc).__name__}: {exc}"
        store.update(job_id, status="failed", error_code="training_failed", error_message=message)
        store.add_event(job_id, "error", "message", f"failed: {message}", {})
        return 1
    finally:
        store.close()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
