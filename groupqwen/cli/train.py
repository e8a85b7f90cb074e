"""``groupqwen train``: train a LoRA adapter on a built dataset, then serve it as
``ft:<base>:<suffix>:<run>``.

A Rich progress bar shows the loss, learning rate, tokens/s and ETA; every event also goes to the run's
``events.jsonl``. Ctrl-C (or SIGTERM) checkpoints and stops; ``--resume`` carries on from there.
"""

from __future__ import annotations

import json
import signal
import threading
from dataclasses import dataclass
from pathlib import Path
from types import FrameType
from typing import Annotated, Any, Literal

import typer
from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn
from rich.table import Table

from groupqwen.cli.common import ConfigOption, settings_or_exit
from groupqwen.config import Hyperparameters, Settings, cache_home
from groupqwen.errors import FinetuneError, GroupQwenError
from groupqwen.finetune.train.events import Event

DEFAULT_MODEL = "smollm2-135m"
DEFAULT_SUFFIX = "custom"
RUN_FILE = "run.json"  # the settings a run started with, which --resume keeps
_ANY_TIME = ("eval_every", "checkpoint_every", "keep_checkpoints")  # change nothing a step computes


def _console() -> Console:
    return Console(stderr=True)


class ProgressBar:
    """A sink drawing metrics events as a Rich progress bar and messages as lines."""

    def __init__(self, progress: Progress) -> None:
        self.progress = progress
        self.task = progress.add_task("training", total=None, loss="", lr="", speed="")

    def __call__(self, event: Event) -> None:
        data = event.data
        if event.type == "message":
            self.progress.console.print(escape(event.message), highlight=False)
            return
        if "train_loss" not in data:
            if data.get("val_loss") is not None:
                self.progress.console.print(f"validation loss {data['val_loss']:.4f}")
            return
        val = f"  val {data['val_loss']:.4f}" if data.get("val_loss") is not None else ""
        self.progress.update(
            self.task,
            completed=data["step"],
            total=data["total_steps"],
            loss=f"loss {data['train_loss']:.4f}{val}",
            lr=f"lr {data['learning_rate']:.2e}",
            speed=f"{data['tokens_per_s']:.0f} tok/s",
        )


def progress_bar() -> Progress:
    return Progress(
        TextColumn("[bold]training"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[loss]}  {task.fields[lr]}  {task.fields[speed]}"),
        TimeRemainingColumn(),
        console=_console(),
    )


def train(
    train_file: Annotated[
        Path | None, typer.Argument(help="train.jsonl from groupqwen data build (OpenAI messages format)")
    ] = None,
    model: Annotated[
        str | None,
        typer.Option(
            "--model", "-m", help=f"Base model (a catalog id with its GGUF) [default: {DEFAULT_MODEL}]"
        ),
    ] = None,
    out: Annotated[Path | None, typer.Option("--out", "-o", help="Run folder (checkpoints, adapter)")] = None,
    validation: Annotated[Path | None, typer.Option(help="validation.jsonl: validation loss")] = None,
    suffix: Annotated[
        str | None,
        typer.Option(help=f"Served as ft:<model>:<suffix>:<run folder name> [default: {DEFAULT_SUFFIX}]"),
    ] = None,
    resume: Annotated[
        bool,
        typer.Option(
            help="Carry on from the run folder's last checkpoint, with the model, suffix, validation file "
            "and hyperparameters the run started with"
        ),
    ] = False,
    gpu: Annotated[bool, typer.Option(help="QLoRA (4-bit) through Unsloth on a CUDA GPU")] = False,
    prepare: Annotated[
        bool, typer.Option(help="Only fetch the LoRA converter and make the bundled bases' copies")
    ] = False,
    epochs: Annotated[int | None, typer.Option()] = None,
    max_steps: Annotated[int | None, typer.Option()] = None,
    batch_size: Annotated[int | None, typer.Option()] = None,
    grad_accum: Annotated[int | None, typer.Option()] = None,
    learning_rate: Annotated[float | None, typer.Option()] = None,
    lora_r: Annotated[int | None, typer.Option()] = None,
    lora_alpha: Annotated[int | None, typer.Option()] = None,
    lora_dropout: Annotated[float | None, typer.Option()] = None,
    target_modules: Annotated[list[str] | None, typer.Option("--target-module")] = None,
    max_seq_length: Annotated[int | None, typer.Option()] = None,
    seed: Annotated[int | None, typer.Option()] = None,
    eval_every: Annotated[int | None, typer.Option()] = None,
    checkpoint_every: Annotated[int | None, typer.Option()] = None,
    keep_checkpoints: Annotated[int | None, typer.Option()] = None,
    config: ConfigOption = None,
) -> None:
    """Train a LoRA adapter (CPU: transformers + PEFT) and serve it as ft:<model>:<suffix>:<run>.
    Hyperparameters not given come from finetune.hyperparameters in the settings."""
    settings = settings_or_exit(config)
    overrides = {
        k: v for k, v in locals().items()
        if k in Hyperparameters.model_fields and v is not None
    }  # fmt: skip
    try:
        if prepare:
            prepare_command(settings)
            return
        if train_file is None:
            raise typer.BadParameter("give the training file (or --prepare)")
        run_dir = out or train_file.parent / "run"
        train_command(settings, train_file, model, run_dir, validation, suffix, resume, gpu, overrides)
    except GroupQwenError as exc:
        _console().print(f"[red]error:[/red] {escape(exc.message)}", highlight=False, soft_wrap=True)
        raise typer.Exit(1) from None


@dataclass(frozen=True)
class RunSettings:
    """What a run was started with, kept in ``<run>/run.json`` so that ``--resume`` goes on with the same."""

    model: str
    suffix: str
    validation: Path | None
    hyper: Hyperparameters

    def write(self, out: Path) -> None:
        out.mkdir(parents=True, exist_ok=True)
        data = {
            "model": self.model,
            "suffix": self.suffix,
            "validation": str(self.validation.resolve()) if self.validation else None,
            "hyperparameters": self.hyper.model_dump(mode="json"),
        }
        (out / RUN_FILE).write_text(json.dumps(data, indent=1), encoding="utf-8")


def run_settings(
    settings: Settings,
    out: Path,
    resume: bool,
    model: str | None,
    suffix: str | None,
    validation: Path | None,
    overrides: dict[str, Any],
) -> RunSettings:
    """The run's settings: what was given over the defaults; with ``resume`` and a ``run.json``, the run's
    own, which the command line may repeat but not change (but for how often it evaluates and checkpoints)."""
    from groupqwen.catalog import check_suffix

    stored = out / RUN_FILE
    if resume and stored.is_file():
        data = json.loads(stored.read_text(encoding="utf-8"))
        hyper = Hyperparameters(**data["hyperparameters"])
        was = {"model": data["model"], "suffix": data["suffix"], **hyper.model_dump()}
        given = {"model": model, "suffix": suffix, **overrides}
        changed = [
            f"{name} {value!r} (the run has {was[name]!r})"
            for name, value in given.items()
            if value is not None and name not in _ANY_TIME and _same(value) != _same(was[name])
        ]
        if changed:
            raise FinetuneError(
                f"{out} was started with other settings: {', '.join(changed)}; resume with the run's own "
                "(leave them out), or train into a new folder"
            )
        kept = data.get("validation")
        return RunSettings(
            data["model"],
            data["suffix"],
            validation or (Path(kept) if kept else None),
            Hyperparameters(
                **{**hyper.model_dump(), **{k: v for k, v in overrides.items() if k in _ANY_TIME}}
            ),
        )
    try:
        hyper = Hyperparameters(**{**settings.finetune.hyperparameters.model_dump(), **overrides})
        return RunSettings(model or DEFAULT_MODEL, check_suffix(suffix or DEFAULT_SUFFIX), validation, hyper)
    except ValueError as exc:
        raise typer.BadParameter(str(exc)) from None


def _same(value: Any) -> Any:
    return tuple(value) if isinstance(value, list | tuple) else value


def train_command(
    settings: Settings,
    train_file: Path,
    model: str | None,
    out: Path,
    validation: Path | None,
    suffix: str | None,
    resume: bool,
    gpu: bool,
    overrides: dict[str, Any],
) -> None:
    from groupqwen.catalog import finetuned_id, finetuned_record, recorded
    from groupqwen.finetune.train import base, checkpoints, convert, trainer
    from groupqwen.finetune.train.events import JsonlLog

    chosen = run_settings(settings, out, resume, model, suffix, validation, overrides)
    model, suffix, validation, hyper = chosen.model, chosen.suffix, chosen.validation, chosen.hyper
    spec = settings.available().get(model)
    if spec is None or spec.path is None or spec.backend != "llamacpp" or spec.lora_path is not None:
        served = [k for k, s in settings.available().items() if s.path and s.lora_path is None]
        raise typer.BadParameter(
            f"{model!r} is not a base model with its GGUF here; one of: {', '.join(served)}"
        )
    model_id = finetuned_id(model, suffix, out.resolve().name)
    found = recorded(settings.finetuned_dir, model_id)  # (adapter, owner) of a model of that name
    taken = found[0] if found is not None else None
    if taken is not None and taken.is_file() and taken.resolve() != (out / "adapter.gguf").resolve():
        raise FinetuneError(
            f"{model_id} is already the model of another run (its adapter: {taken}): give another --suffix "
            f"or --out folder name, or remove {finetuned_record(settings.finetuned_dir, model_id)}"
        )
    base.require_torch()
    if gpu:
        from groupqwen.finetune.train.gpu import require_gpu

        require_gpu()
    # the data is checked before the base model is converted or loaded
    from groupqwen.finetune.train import data

    data.check(train_file)
    if validation is not None:
        data.check(validation, "validation file")
    fresh = checkpoints.latest(out) is None
    if fresh:  # a run with checkpoints keeps the settings it started with
        chosen.write(out)
    console = _console()
    console.print(f"base model {model}: preparing its transformers copy (once)")
    base_path = base.ensure_base(spec.path, settings.models_dir / "hf")
    stop = threading.Event()

    def on_signal(signum: int, frame: FrameType | None) -> None:
        console.print(f"{signal.Signals(signum).name}: checkpointing after this step, then stopping")
        stop.set()

    previous = {s: signal.signal(s, on_signal) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        device: Literal["cpu", "gpu"] = "gpu" if gpu else "cpu"
        run = trainer.RunSpec(
            base_path, train_file, out, hyper, validation, settings.finetune.threads, device
        )
        with progress_bar() as progress:
            result = trainer.train(
                run, sinks=[JsonlLog(out / "events.jsonl"), ProgressBar(progress)], stop=stop, resume=resume
            )
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    table = Table(title="training")
    for name in (
        "status",
        "step",
        "total_steps",
        "train_loss",
        "val_loss_before",
        "val_loss",
        "trained_tokens",
    ):
        table.add_row(name, str(getattr(result, name)))
    console.print(table)
    if result.adapter is None:
        console.print(f"interrupted: groupqwen train {train_file} --out {out} --resume carries on")
        raise typer.Exit(130)
    convert.publish(
        result.adapter, base_path, model, model_id, settings.finetuned_dir, cache_home() / "llama.cpp"
    )
    console.print(f"served as [bold]{escape(model_id)}[/bold] (a running gateway lists it at once)")
    typer.echo(model_id)


def prepare_command(settings: Settings) -> None:
    """The converter and the bundled bases' transformers copies, made now rather than on first use."""
    from groupqwen.finetune.train import base, convert

    console = _console()
    console.print(f"LoRA converter: {convert.ensure_converter(cache_home() / 'llama.cpp')}")
    for model_id, spec in settings.available().items():
        if spec.bundled is not None and spec.path is not None:
            console.print(f"{model_id}: {base.ensure_base(spec.path, settings.models_dir / 'hf')}")
