"""The gateway's side of fine-tuning jobs: one job at a time, each in its own worker process.

``JobRunner`` never trains in the gateway's process or event loop: it starts ``python -m
groupqwen.finetune.worker <id>`` at a lower priority (``finetune.nice``) with its threads bounded
(``finetune.threads``, also as ``OMP_NUM_THREADS``), waits for it, and takes the next queued job. Its loop
runs only while there are queued jobs. At start, jobs a previous gateway left ``running`` are queued again
(they resume from their last checkpoint). ``cancel`` sends SIGTERM (the worker checkpoints after its
current step) and kills the worker after ``finetune.cancel_grace_s``; ``close`` stops the running job the
same way, leaving it queued for the next start. ``on_model`` hears of each model a job made.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import sys
from collections.abc import Callable

from groupqwen import log
from groupqwen.config import Settings
from groupqwen.finetune.jobs import FINAL, Job, JobStore, job_dir

_log = log.get(__name__)


class JobRunner:
    def __init__(self, settings: Settings, store: JobStore, on_model: Callable[[str], None]) -> None:
        self.settings = settings
        self.store = store
        self._on_model = on_model
        self._task: asyncio.Task[None] | None = None
        self._process: asyncio.subprocess.Process | None = None
        self._running: str | None = None
        self._closing = False
        self._again = False

    async def start(self) -> None:
        """Queue again what a stopped gateway left running, and run the queue if it holds anything; in the
        background, so a slow or absent database does not hold up the gateway's start."""
        self._task = asyncio.create_task(self._resume(), name="finetune-resume")

    async def _resume(self) -> None:
        try:
            requeued = await asyncio.to_thread(self.store.requeue_running)
            pending = await asyncio.to_thread(self.store.queued)
        except Exception as exc:  # the database is down: jobs wait for the next start or the next job
            _log.warning("fine-tuning jobs not resumed", error=f"{type(exc).__name__}: {exc}")
            return
        if requeued:
            _log.info("fine-tuning jobs resume", jobs=",".join(requeued))
        if pending:
            await self._loop()

    def wake(self) -> None:
        """Run the queue (a job was created)."""
        self._again = True  # a loop about to find the queue empty looks once more
        if not self._closing and (self._task is None or self._task.done()):
            self._task = asyncio.create_task(self._loop(), name="finetune-jobs")

    async def _loop(self) -> None:
        while not self._closing:
            self._again = False
            job = await asyncio.to_thread(self.store.next_queued)
            if job is None:
                if self._again:
                    continue
                return
            await self._run(job)

    def _environment(self) -> dict[str, str]:
        s = self.settings
        threads = str(s.finetune.threads)
        env = {name: value for name, value in os.environ.items() if not name.startswith("GROUPQWEN_")}
        env.update(
            GROUPQWEN_DATA_DIR=str(s.data_dir),
            GROUPQWEN_MODELS_DIR=str(s.models_dir),
            GROUPQWEN_FINETUNE=s.finetune.model_dump_json(),
            GROUPQWEN_MODELS=json.dumps(
                {k: m.model_dump(mode="json", exclude_none=True) for k, m in s.models.items()}
            ),
            GROUPQWEN_DEFAULT_MODEL=s.default_model,
            OMP_NUM_THREADS=threads,
            MKL_NUM_THREADS=threads,
            TOKENIZERS_PARALLELISM="false",
        )
        if s.telemetry.database_url:  # else both use the SQLite file in data_dir
            env["GROUPQWEN_TELEMETRY__DATABASE_URL"] = s.telemetry.database_url
        return env

    async def _run(self, job: Job) -> None:
        folder = job_dir(self.settings, job.id)
        folder.mkdir(parents=True, exist_ok=True)
        output = folder / "worker.log"
        self._running = job.id
        with output.open("ab") as sink:
            self._process = await asyncio.create_subprocess_exec(
                "nice", "-n", str(self.settings.finetune.nice),
                sys.executable, "-m", "groupqwen.finetune.worker", job.id,
                env=self._environment(), stdin=asyncio.subprocess.DEVNULL, stdout=sink, stderr=sink,
            )  # fmt: skip
            code = await self._process.wait()
        stderr = output.read_bytes()[-2000:]
        self._process, self._running = None, None
        done = await asyncio.to_thread(self.store.job, job.id)
        if done.status == "running" and done.fine_tuned_model:
            self._on_model(done.fine_tuned_model)
            await asyncio.to_thread(self.store.update, job.id, status="succeeded")
        elif done.status == "running" and not self._closing:  # died without saying why (killed, crashed)
            status = "cancelled" if done.cancel_requested else "failed"
            tail = stderr.decode("utf-8", "replace").strip()[-500:]
            await asyncio.to_thread(
                self.store.update, job.id, status=status, error_code=None if done.cancel_requested else
                "worker_died", error_message=None if done.cancel_requested else f"exit {code}: {tail}",
            )  # fmt: skip
        _log.info("fine-tuning job ended", job=job.id, status=done.status, exit=code)

    async def _stop_worker(self) -> None:
        process = self._process
        if process is None or process.returncode is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            process.send_signal(signal.SIGTERM)
        try:
            await asyncio.wait_for(asyncio.shield(process.wait()), self.settings.finetune.cancel_grace_s)
        except TimeoutError:
            with contextlib.suppress(ProcessLookupError):
                process.kill()
            await process.wait()

    async def cancel(self, job_id: str) -> Job:
        job = await asyncio.to_thread(self.store.job, job_id)
        if job.status in FINAL:
            return job
        await asyncio.to_thread(self.store.update, job_id, cancel_requested=True)
        if self._running == job_id:
            await self._stop_worker()
        job = await asyncio.to_thread(self.store.job, job_id)
        if job.status not in FINAL:
            await asyncio.to_thread(self.store.update, job_id, status="cancelled")
        return await asyncio.to_thread(self.store.job, job_id)

    async def close(self) -> None:
        """Stop the running job (it checkpoints and goes back to the queue) and the loop."""
        self._closing = True
        running = self._running
        await self._stop_worker()
        if self._task is not None:
            with contextlib.suppress(Exception):
                await self._task
        if running is not None:
            job = await asyncio.to_thread(self.store.job, running)
            if job.status == "running":  # killed before it could say: resumed at the next start
                await asyncio.to_thread(self.store.update, running, status="queued")
        await asyncio.to_thread(self.store.close)
