"""The CPU training loop: transformers + PEFT LoRA, the loss on the assistant's tokens only.

Everything a step depends on is a function of the seed and the step number: the data order of epoch
``e`` is a permutation seeded by ``(seed, e)`` and optimiser step ``s`` takes micro-batches
``s * grad_accum …`` of the epochs laid end to end. So the data position is the step, and a checkpoint
(adapter, optimiser, scheduler, random states, step) is all ``resume`` needs to carry on exactly as an
uninterrupted run would. ``stop`` (set by SIGINT/SIGTERM or a job's cancel) is looked at after each step:
the run checkpoints and returns ``interrupted``. The finished adapter goes to ``<run>/adapter`` atomically.
"""

from __future__ import annotations

import json
import math
import os
import random
import shutil
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from groupqwen.config import Hyperparameters
from groupqwen.errors import FinetuneError
from groupqwen.finetune.train import checkpoints, data
from groupqwen.finetune.train.base import require_torch
from groupqwen.finetune.train.events import Event, Sink

RESULT_FILE = "result.json"
ADAPTER = "adapter"


@dataclass(frozen=True)
class RunSpec:
    base: Path  # the transformers copy of the base model (train.base.ensure_base)
    train: Path
    out: Path  # the run's folder: checkpoints/, adapter/, result.json
    hyper: Hyperparameters
    validation: Path | None = None
    threads: int = 1
    device: Literal["cpu", "gpu"] = "cpu"  # gpu: QLoRA through Unsloth (train.gpu)


@dataclass(frozen=True)
class Result:
    status: Literal["succeeded", "interrupted"]
    step: int
    total_steps: int
    train_loss: float | None
    val_loss_before: float | None
    val_loss: float | None
    trained_tokens: int
    adapter: Path | None  # the finished adapter (status "succeeded")


def _lr_factor(hyper: Hyperparameters, total: int) -> Any:
    def factor(step: int) -> float:
        if step < hyper.warmup_steps:
            return (step + 1) / hyper.warmup_steps
        if hyper.scheduler == "constant":
            return 1.0
        progress = (step - hyper.warmup_steps) / max(1, total - hyper.warmup_steps)
        if hyper.scheduler == "cosine":
            return 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))
        return max(0.0, 1.0 - progress)

    return factor


class _Run:
    """One run's state: model, optimiser, data, and where it is."""

    def __init__(self, spec: RunSpec, sinks: list[Sink]) -> None:
        import torch
        from transformers import AutoTokenizer

        self.spec, self.hyper, self.sinks = spec, spec.hyper, sinks
        torch.set_num_threads(spec.threads)
        train_conversations = data.check(spec.train)
        val_conversations = data.check(spec.validation, "validation file") if spec.validation else None
        self.tokenizer: Any = AutoTokenizer.from_pretrained(spec.base)
        hyper = self.hyper
        tokenized = data.tokenize(self.tokenizer, train_conversations, hyper.max_seq_length)
        self.train = tokenized.examples
        self.val = (
            data.tokenize(self.tokenizer, val_conversations, hyper.max_seq_length, "validation file").examples
            if val_conversations
            else ()
        )
        self.emit(
            "message",
            f"{len(self.train)} training and {len(self.val)} validation examples "
            f"({tokenized.too_long} longer than {hyper.max_seq_length} tokens left out)",
            examples=len(self.train),
            validation_examples=len(self.val),
            too_long=tokenized.too_long,
        )
        self.pad = self.tokenizer.pad_token_id
        if self.pad is None:
            self.pad = self.tokenizer.eos_token_id or 0
        self.per_epoch = math.ceil(len(self.train) / hyper.batch_size)
        self.micro_total = self.per_epoch * hyper.epochs
        self.total = math.ceil(self.micro_total / hyper.grad_accum)
        if hyper.max_steps is not None:
            self.total = min(self.total, hyper.max_steps)
        self._orders: dict[int, list[int]] = {}
        self.model, self.optimizer, self.scheduler = self._build()

    def emit(self, kind: Literal["message", "metrics"], message: str, **fields: Any) -> None:
        event = Event(kind, message, fields)
        for sink in self.sinks:
            sink(event)

    def _build(self) -> tuple[Any, Any, Any]:
        import torch
        from peft import LoraConfig, get_peft_model
        from transformers import AutoModelForCausalLM

        hyper = self.hyper
        self.emit("message", f"loading the base model from {self.spec.base}")
        if self.spec.device == "gpu":
            from groupqwen.finetune.train.gpu import load_qlora

            torch.manual_seed(hyper.seed)
            random.seed(hyper.seed)
            return self._optimise(load_qlora(self.spec.base, hyper)[0])
        model: Any = AutoModelForCausalLM.from_pretrained(self.spec.base, dtype=torch.float32)
        torch.manual_seed(hyper.seed)
        random.seed(hyper.seed)
        config = LoraConfig(
            r=hyper.lora_r,
            lora_alpha=hyper.lora_alpha,
            lora_dropout=hyper.lora_dropout,
            target_modules=list(hyper.target_modules),
            task_type="CAUSAL_LM",
        )
        try:
            model = get_peft_model(model, config)
        except ValueError as exc:  # e.g. a target module the model does not have
            raise FinetuneError(f"LoRA cannot be applied: {exc}") from None
        return self._optimise(model)

    def _optimise(self, model: Any) -> tuple[Any, Any, Any]:
        import torch

        hyper = self.hyper
        params = [p for p in model.parameters() if p.requires_grad]
        optimizer = torch.optim.AdamW(params, lr=hyper.learning_rate, weight_decay=hyper.weight_decay)
        scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, _lr_factor(hyper, self.total))
        return model, optimizer, scheduler

    def _order(self, epoch: int) -> list[int]:
        if epoch not in self._orders:
            self._orders = {
                epoch: random.Random(f"{self.hyper.seed}:{epoch}").sample(
                    range(len(self.train)), len(self.train)
                )
            }
        return self._orders[epoch]

    def micro_batch(self, index: int) -> list[data.Example]:
        epoch, position = divmod(index, self.per_epoch)
        size = self.hyper.batch_size
        return [self.train[i] for i in self._order(epoch)[position * size : (position + 1) * size]]

    def _tensors(self, batch: list[data.Example] | tuple[data.Example, ...]) -> tuple[Any, Any, Any]:
        import torch

        width = max(len(e.input_ids) for e in batch)
        ids = [list(e.input_ids) + [self.pad] * (width - len(e.input_ids)) for e in batch]
        mask = [[1] * len(e.input_ids) + [0] * (width - len(e.input_ids)) for e in batch]
        labels = [list(e.labels) + [data.IGNORE] * (width - len(e.labels)) for e in batch]
        device = "cuda" if self.spec.device == "gpu" else "cpu"
        return (torch.tensor(ids, device=device), torch.tensor(mask, device=device),
                torch.tensor(labels, device=device))  # fmt: skip

    def _loss_sum(self, batch: list[data.Example] | tuple[data.Example, ...]) -> Any:
        import torch.nn.functional as F

        ids, mask, labels = self._tensors(batch)
        logits = self.model(input_ids=ids, attention_mask=mask).logits
        return F.cross_entropy(
            logits[:, :-1].reshape(-1, logits.shape[-1]),
            labels[:, 1:].reshape(-1),
            ignore_index=data.IGNORE,
            reduction="sum",
        )

    def evaluate(self) -> float | None:
        import torch

        if not self.val:
            return None
        self.model.eval()
        total, tokens = 0.0, 0
        with torch.no_grad():
            for start in range(0, len(self.val), self.hyper.batch_size):
                batch = self.val[start : start + self.hyper.batch_size]
                total += float(self._loss_sum(batch))
                tokens += sum(e.trained_tokens for e in batch)
        return total / max(1, tokens)

    def step(self, step: int) -> tuple[float, int]:
        """One optimiser step: its mean loss per trained token, and the tokens it read."""
        import torch

        self.model.train()
        first = step * self.hyper.grad_accum
        batches = [
            self.micro_batch(i) for i in range(first, min(first + self.hyper.grad_accum, self.micro_total))
        ]
        trained = sum(e.trained_tokens for b in batches for e in b)
        loss = 0.0
        for batch in batches:
            part = self._loss_sum(batch) / max(1, trained)
            part.backward()
            loss += float(part.detach())
        torch.nn.utils.clip_grad_norm_([p for p in self.model.parameters() if p.requires_grad], max_norm=1.0)
        self.optimizer.step()
        self.scheduler.step()
        self.optimizer.zero_grad(set_to_none=True)
        return loss, sum(len(e.input_ids) for b in batches for e in b)

    def save_state(self, folder: Path) -> None:
        import torch

        self.model.save_pretrained(folder)
        torch.save(
            {
                "optimizer": self.optimizer.state_dict(),
                "scheduler": self.scheduler.state_dict(),
                "torch_rng": torch.get_rng_state(),
                "python_rng": random.getstate(),
            },
            folder / "state.pt",
        )

    def load_state(self, folder: Path) -> None:
        import torch
        from peft import set_peft_model_state_dict
        from safetensors.torch import load_file

        set_peft_model_state_dict(self.model, load_file(str(folder / "adapter_model.safetensors")))
        state = torch.load(folder / "state.pt", weights_only=False)
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        torch.set_rng_state(state["torch_rng"])
        random.setstate(state["python_rng"])


def _finish(run: _Run, out: Path) -> Path:
    final = out / ADAPTER
    work = Path(tempfile.mkdtemp(prefix=".adapter.", dir=out))
    try:
        run.model.save_pretrained(work)
        if final.exists():
            shutil.rmtree(final)
        os.replace(work, final)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return final


def train(spec: RunSpec, *, sinks: list[Sink], stop: threading.Event, resume: bool = False) -> Result:
    """Run (or, with ``resume``, continue from the last checkpoint) ``spec``; see the module docstring."""
    require_torch()
    if spec.device == "gpu":
        from groupqwen.finetune.train.gpu import require_gpu

        require_gpu()
    existing = checkpoints.latest(spec.out)
    if existing is not None and not resume:
        raise FinetuneError(f"{spec.out} already holds checkpoints: resume it, or train into a new folder")
    spec.out.mkdir(parents=True, exist_ok=True)
    run = _Run(spec, sinks)
    state: dict[str, Any] = {"val_loss_before": None, "train_loss": None, "val_loss": None, "tokens": 0}
    start = 0
    if existing is not None:
        run.load_state(existing.path)
        state.update(existing.trainer)
        start = existing.step
        run.emit("message", f"resumed from step {start}", step=start)
    else:
        state["val_loss_before"] = run.evaluate()
        run.emit("metrics", "validation loss before training", step=0, val_loss=state["val_loss_before"])
    hyper = run.hyper
    if stop.is_set():  # stopped while loading: nothing new to keep
        run.emit("message", f"interrupted at step {start}", step=start)
        return _result(run, "interrupted", start, state, None)
    started = time.monotonic()
    step = start
    for done_here, step in enumerate(range(start + 1, run.total + 1), 1):
        began = time.monotonic()
        loss, tokens = run.step(step - 1)
        state["train_loss"], state["tokens"] = loss, state["tokens"] + tokens
        metrics: dict[str, Any] = {
            "step": step,
            "total_steps": run.total,
            "train_loss": loss,
            "learning_rate": run.scheduler.get_last_lr()[0],
            "tokens_per_s": tokens / max(1e-9, time.monotonic() - began),
            "eta_s": (time.monotonic() - started) / done_here * (run.total - step),
        }
        if step % hyper.eval_every == 0 or step == run.total:
            state["val_loss"] = metrics["val_loss"] = run.evaluate()
        run.emit("metrics", f"step {step}/{run.total}: train loss {loss:.4f}", **metrics)
        stopping = stop.is_set() and step < run.total
        if step % hyper.checkpoint_every == 0 or stopping:
            path = checkpoints.save(spec.out, step, dict(state), run.save_state, hyper.keep_checkpoints)
            run.emit("message", f"checkpoint at step {step}", step=step, checkpoint=path.name)
        if stopping:
            run.emit("message", f"interrupted at step {step}: resume continues from here", step=step)
            return _result(run, "interrupted", step, state, None)
    adapter = _finish(run, spec.out)
    result = _result(run, "succeeded", step, state, adapter)
    (spec.out / RESULT_FILE).write_text(json.dumps({**state, "step": step}), encoding="utf-8")
    run.emit("message", f"done: {step} steps, adapter in {adapter}", step=step)
    return result


def _result(
    run: _Run,
    status: Literal["succeeded", "interrupted"],
    step: int,
    state: dict[str, Any],
    adapter: Path | None,
) -> Result:
    return Result(
        status,
        step,
        run.total,
        state["train_loss"],
        state["val_loss_before"],
        state["val_loss"],
        state["tokens"],
        adapter,
    )
