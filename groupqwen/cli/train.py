"""``groupqwen train``: train a LoRA adapter on a built dataset, then serve it as
``ft:<base>:<suffix>:<run>``.

A Rich progress bar shows the loss, learning rate, tokens/s and ETA; every event also goes to the run's
``events.jsonl``. Ctrl-C (or SIGTERM) checkpoints and stops; ``--resume`` carries on from there.
"""

from __future__ import annotations

import signal
import threading
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
from groupqwen.errors import GroupQwenError
from groupqwen.finetune.train.events import Event


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
    model: Annotated[str, typer.Option("--model", "-m", help="Base model (a catalog id with its GGUF)")] = (
        "smollm2-135m"
    ),
    out: Annotated[Path | None, typer.Option("--out", "-o", help="Run folder (checkpoints, adapter)")] = None,
    validation: Annotated[Path | None, typer.Option(help="validation.jsonl: validation loss")] = None,
    suffix: Annotated[str, typer.Option(help="Served as ft:<model>:<suffix>:<run folder name>")] = "custom",
    resume: Annotated[bool, typer.Option(help="Carry on from the run folder's last checkpoint")] = False,
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


def train_command(
    settings: Settings,
    train_file: Path,
    model: str,
    out: Path,
    validation: Path | None,
    suffix: str,
    resume: bool,
    gpu: bool,
    overrides: dict[str, Any],
) -> None:
    from groupqwen.catalog import check_suffix, finetuned_id
    from groupqwen.finetune.train import base, convert, trainer
    from groupqwen.finetune.train.events import JsonlLog

    try:
        hyper = Hyperparameters(**{**settings.finetune.hyperparameters.model_dump(), **overrides})
        check_suffix(suffix)
    except ValueError as exc:
        raise typer.BadParameter(str(exc)) from None
    spec = settings.available().get(model)
    if spec is None or spec.path is None or spec.backend != "llamacpp" or spec.lora_path is not None:
        served = [k for k, s in settings.available().items() if s.path and s.lora_path is None]
        raise typer.BadParameter(
            f"{model!r} is not a base model with its GGUF here; one of: {', '.join(served)}"
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
    model_id = finetuned_id(model, suffix, out.resolve().name)
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
