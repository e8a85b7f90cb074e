"""``groupqwen data``: import chat exports, curate them, review, build training sets, validate them.

Thin commands over :mod:`groupqwen.finetune`; each prints a Rich progress bar while it works and a summary
table when done. Errors of the input print one clear line and exit 1.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, NoReturn

import typer
from rich.console import Console
from rich.markup import escape
from rich.progress import (
    BarColumn,
    DownloadColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
)
from rich.table import Table

if TYPE_CHECKING:  # heavy imports (datasketch, language ID): commands import them when run
    from groupqwen.finetune.importers import ImportReport

data_app = typer.Typer(
    help="Fine-tuning data: import chat exports, curate, review, build and validate training sets.",
    no_args_is_help=True,
)


def _console() -> Console:
    return Console(stderr=True)


@contextmanager
def _errors() -> Iterator[None]:
    """One ``error: …`` line and exit status 1 for the input's problems, files that cannot be opened
    included (``OSError``: missing, a folder, no permission, an output folder that does not exist)."""
    from groupqwen.errors import FinetuneError

    try:
        yield
    except (FinetuneError, ValueError, RuntimeError) as exc:
        _fail(str(getattr(exc, "message", exc)))
    except OSError as exc:
        _fail(_os_message(exc))


def _fail(message: str) -> NoReturn:
    _console().print(f"[red]error:[/red] {escape(message)}", highlight=False, soft_wrap=True)
    raise typer.Exit(1) from None


def _os_message(exc: OSError) -> str:
    """``missing.jsonl: no such file or folder``, not ``[Errno 2] No such file or directory: '…'``."""
    reason = {
        FileNotFoundError: "no such file or folder",
        IsADirectoryError: "is a folder, not a file",
        NotADirectoryError: "a part of the path is not a folder",
        PermissionError: "permission denied",
        FileExistsError: "already exists",
    }.get(type(exc), (exc.strerror or str(exc)).lower())
    return f"{exc.filename}: {reason}" if exc.filename else reason


def input_file(path: Path) -> Path:
    """``path`` if it is a file this process can read; else an ``OSError`` naming it (see :func:`_errors`)."""
    if path.is_dir():
        raise IsADirectoryError(21, "Is a directory", str(path))
    with path.open("rb"):  # FileNotFoundError, PermissionError, … with the file name
        pass
    return path


def _table(title: str, *columns: str) -> Table:
    table = Table(title=title, title_justify="left")
    for i, column in enumerate(columns):
        table.add_column(column, justify="left" if i == 0 else "right")
    return table


def _pairs(title: str, rows: tuple[tuple[str, int], ...] | dict[str, Any]) -> Table | None:
    items = list(rows.items()) if isinstance(rows, dict) else list(rows)
    if not items:
        return None
    table = _table(title, "reason", "count")
    for key, value in items:
        table.add_row(escape(str(key)), str(value))
    return table


# ---------------------------------------------------------------------------------------------------------
# import


@data_app.command("import")
def import_(
    paths: Annotated[list[Path], typer.Argument(help="Exports: ZIP files, conversations.json, .md, folders")],
    out: Annotated[Path, typer.Option("--out", "-o", help="Conversations JSONL to write")] = Path(
        "conversations.jsonl"
    ),
    all_branches: Annotated[bool, typer.Option(help="Also export abandoned regenerations and edits")] = False,
    max_zip_bytes: Annotated[int, typer.Option(help="Largest total uncompressed size of a ZIP")] = 8 * 2**30,
    max_zip_files: Annotated[int, typer.Option(help="Most members in a ZIP")] = 100_000,
) -> None:
    """Import ChatGPT, Claude and Perplexity exports into one conversations file (format auto-detected)."""
    from groupqwen.finetune.archive import ZipLimits
    from groupqwen.finetune.importers import ImportOptions, import_paths

    options = ImportOptions(all_branches, ZipLimits(max_files=max_zip_files, max_total_bytes=max_zip_bytes))
    console = _console()
    columns = (TextColumn("importing"), BarColumn(), DownloadColumn(), TimeElapsedColumn())
    with _errors(), Progress(*columns, console=console, transient=True) as progress:
        task = progress.add_task("import", total=None)
        report = import_paths(
            paths, out, options, lambda done, total: progress.update(task, completed=done, total=total)
        )
    _print_import(console, report, out)


def _print_import(console: Console, report: ImportReport, out: Path) -> None:
    from groupqwen.finetune.records import Identity

    table = _table(
        f"Imported into {out}",
        "file",
        "format",
        "conversations",
        "written",
        "turns kept",
        "turns dropped",
        "rejected",
    )
    for f in report.files:
        table.add_row(
            f.name,
            f.format,
            str(f.conversations),
            str(f.written),
            str(f.turns_kept),
            str(f.dropped_total),
            str(len(f.rejected)),
        )
    console.print(table)
    for f in report.files:
        if f.turns_dropped:
            console.print(_pairs(f"{f.name}: turns dropped", f.turns_dropped))
        if f.rejected:
            rejected = _table(f"{f.name}: records rejected", "record", "reason")
            for r in f.rejected[:50]:
                rejected.add_row(escape(r.record), escape(r.reason))
            if len(f.rejected) > 50:
                rejected.add_row("…", f"{len(f.rejected) - 50} more")
            console.print(rejected)
        if f.error:
            console.print(f"[yellow]warning:[/yellow] {escape(f.name)}: {escape(f.error)}", highlight=False)
    for name, why in report.skipped:
        console.print(f"skipped {escape(name)}: {why}", highlight=False, style="dim")
    if report.identity != Identity():
        console.print(
            f"export owner: {len(report.identity.names)} name(s), {len(report.identity.emails)} e-mail(s), "
            f"{len(report.identity.phones)} phone(s) — replaced during curation",
            highlight=False,
        )


# ---------------------------------------------------------------------------------------------------------
# curate


@data_app.command()
def curate(
    source: Annotated[Path, typer.Argument(help="Conversations JSONL (from `data import`)")],
    out: Annotated[Path, typer.Option("--out", "-o", help="Curated JSONL to write")] = Path("curated.jsonl"),
    rejected: Annotated[Path | None, typer.Option(help="Also write rejected ids and reasons here")] = None,
    lang: Annotated[
        list[str] | None, typer.Option(help="Target language (ISO 639: en, fr…), repeatable")
    ] = None,
    any_language: Annotated[bool, typer.Option(help="Keep every language")] = False,
    min_chars: Annotated[int, typer.Option(help="Shortest question or answer kept")] = 2,
    max_chars: Annotated[int, typer.Option(help="Longest turn kept")] = 32_000,
    keep_refusals: Annotated[bool, typer.Option(help="Keep refusals and apologies")] = False,
    max_code: Annotated[
        float | None, typer.Option(help="Drop answers with more code than this fraction")
    ] = None,
    max_links: Annotated[
        float | None, typer.Option(help="Drop answers with more links than this fraction")
    ] = 0.5,
    near_threshold: Annotated[float, typer.Option(help="Near-duplicate similarity (0 to 1)")] = 0.85,
    no_dedupe: Annotated[bool, typer.Option("--no-dedupe", help="Keep duplicates")] = False,
    no_near_dedupe: Annotated[bool, typer.Option("--no-near-dedupe", help="Exact duplicates only")] = False,
    semantic_dedupe: Annotated[
        bool, typer.Option(help="Also drop rewordings, found with the cache's embedder (slower)")
    ] = False,
    semantic_threshold: Annotated[
        float, typer.Option(help="Semantic-duplicate cosine similarity (above 0, at most 1)")
    ] = 0.95,
    no_pii: Annotated[bool, typer.Option("--no-pii", help="Leave personal data in place")] = False,
    ner: Annotated[
        bool, typer.Option(help="Also find names and places with Presidio (if installed)")
    ] = False,
    user_name: Annotated[list[str] | None, typer.Option(help="The export owner's name, repeatable")] = None,
    user_email: Annotated[
        list[str] | None, typer.Option(help="The export owner's e-mail, repeatable")
    ] = None,
) -> None:
    """Filter, de-duplicate and scrub personal data (the export's owner comes from the import)."""
    from groupqwen.finetune.curate import CurateConfig, curate_file
    from groupqwen.finetune.quality import QualityConfig
    from groupqwen.finetune.records import Identity
    from groupqwen.finetune.semantic import check_threshold

    with _errors():
        check_threshold(semantic_threshold, "--semantic-threshold")
    config = CurateConfig(
        quality=QualityConfig(
            min_chars=min_chars,
            max_chars=max_chars,
            languages=() if any_language else tuple(lang or ("en",)),
            drop_refusals=not keep_refusals,
            max_code_fraction=max_code,
            max_url_fraction=max_links,
        ),
        dedupe=not no_dedupe,
        near_dedupe=not no_near_dedupe,
        near_threshold=near_threshold,
        semantic_threshold=semantic_threshold if semantic_dedupe else None,
        pii=not no_pii,
        ner=ner,
    )
    identity = Identity(tuple(user_name or ()), tuple(user_email or ()))
    console = _console()
    columns = (TextColumn("curating"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())
    with _errors(), Progress(*columns, console=console, transient=True) as progress:
        total = sum(1 for _ in input_file(source).open("rb"))
        task = progress.add_task("curate", total=total)
        report = curate_file(
            source, out, config, identity, rejected, lambda n: progress.update(task, completed=n)
        )
    table = _table(f"Curated into {out}", "conversations", "count")
    table.add_row("read", str(report.read))
    table.add_row("kept", str(report.kept))
    table.add_row("rejected", str(report.read - report.kept))
    console.print(table)
    for title, rows in (("rejected", report.rejected), ("cut short at a bad exchange", report.cut)):
        if (t := _pairs(title, rows)) is not None:
            console.print(t)
    if (t := _pairs("personal data replaced", report.pii)) is not None:
        console.print(t)
    if report.read and not report.kept:
        hint = (
            ": --lang names the languages kept (repeatable), --any-language keeps all"
            if any(reason.startswith("language ") for reason, _ in report.rejected)
            else ""
        )
        console.print(
            f"[yellow]warning:[/yellow] {escape(str(out))} is empty: every conversation was rejected{hint}",
            highlight=False,
            soft_wrap=True,
        )


# ---------------------------------------------------------------------------------------------------------
# build and validate


@data_app.command()
def build(
    source: Annotated[Path, typer.Argument(help="Curated (or reviewed) conversations JSONL")],
    out_dir: Annotated[Path, typer.Option("--out", "-o", help="Folder for train/validation/manifest")] = Path(
        "dataset"
    ),
    fmt: Annotated[str, typer.Option("--format", "-f", help="openai, sharegpt or chatml")] = "openai",
    thinking: Annotated[str, typer.Option(help="drop (non-thinking, default) or keep reasoning")] = "drop",
    val_fraction: Annotated[float, typer.Option(help="Share of conversations for validation")] = 0.1,
    seed: Annotated[int, typer.Option(help="Seed of the split and of prompt variants")] = 0,
    max_tokens: Annotated[int | None, typer.Option(help="Token budget per sample")] = None,
    overflow: Annotated[str, typer.Option(help="Over budget: truncate, split or drop")] = "truncate",
    tokenizer: Annotated[Path | None, typer.Option(help="A GGUF file whose tokenizer counts tokens")] = None,
    system_prompt: Annotated[list[str] | None, typer.Option(help="System prompt variant, repeatable")] = None,
    augment: Annotated[int, typer.Option(help="Training copies with different system prompts")] = 1,
    no_attachments: Annotated[
        bool, typer.Option("--no-attachments", help="Leave attachments' text out")
    ] = False,
) -> None:
    """Render a training set (OpenAI messages, ShareGPT or Qwen ChatML), split it, write a manifest."""
    from groupqwen.finetune.dataset import BuildConfig, build_dataset
    from groupqwen.finetune.formats import FORMATS
    from groupqwen.finetune.tokens import ApproxCounter, GGUFCounter, TokenCounter

    with _errors():
        config = BuildConfig(
            format=_choice(fmt, FORMATS, "--format"),
            thinking=_choice(thinking, ("drop", "keep"), "--thinking"),
            val_fraction=val_fraction,
            seed=seed,
            max_tokens=max_tokens,
            overflow=_choice(overflow, ("truncate", "split", "drop"), "--overflow"),
            system_prompts=tuple(system_prompt or ()),
            augment=augment,
            attachments=not no_attachments,
        )
        input_file(source)
        counter: TokenCounter = GGUFCounter(input_file(tokenizer)) if tokenizer else ApproxCounter()
        with Progress(
            TextColumn("building"), BarColumn(), TimeElapsedColumn(), console=_console(), transient=True
        ):
            manifest = build_dataset(source, out_dir, config, counter)
    table = _table(
        f"Built {fmt} dataset in {out_dir} (tokens: {manifest['tokenizer']})",
        "file",
        "conversations",
        "samples",
        "tokens",
        "mean",
        "p95",
        "max",
    )
    for name, info in manifest["files"].items():
        t = info["tokens"]
        table.add_row(
            name,
            str(info["conversations"]),
            str(info["samples"]),
            str(t["total"]),
            str(t.get("mean", "-")),
            str(t.get("p95", "-")),
            str(t.get("max", "-")),
        )
    console = _console()
    console.print(table)
    if (t2 := _pairs("dropped", manifest["dropped"])) is not None:
        console.print(t2)
    if not any(info["samples"] for info in manifest["files"].values()):
        dropped = ", ".join(f"{n} {why}" for why, n in manifest["dropped"].items())
        _fail(
            f"no samples built from {source}: "
            + (f"every conversation was dropped ({dropped})" if dropped else "it holds no conversations")
        )
    files = manifest["files"]
    if not files["train.jsonl"]["samples"]:
        console.print(
            f"[yellow]warning:[/yellow] train.jsonl is empty: the split put all "
            f"{files['validation.jsonl']['conversations']} conversation(s) in validation; lower "
            "--val-fraction or try another --seed",
            highlight=False,
            soft_wrap=True,
        )


def _choice(value: str, options: tuple[str, ...], option: str) -> Any:
    if value not in options:
        raise ValueError(f"{option} must be one of {', '.join(options)}, not {value!r}")
    return value


@data_app.command()
def validate(
    path: Annotated[Path, typer.Argument(help="A dataset JSONL file")],
    fmt: Annotated[
        str | None, typer.Option("--format", "-f", help="Expected format (default: from line 1)")
    ] = None,
) -> None:
    """Check a dataset file; print each problem with its line number (exit 1 if any)."""
    from groupqwen.finetune.formats import FORMATS, validate_dataset

    with _errors():
        input_file(path)
        problems = validate_dataset(path, _choice(fmt, FORMATS, "--format") if fmt else None)
    for problem in problems:
        typer.echo(f"{path}:{problem.line}: {problem.message}")
    if problems:
        typer.echo(f"{len(problems)} problem(s)", err=True)
        raise typer.Exit(1)
    typer.echo(f"{path}: ok")


from groupqwen.cli import review as _review  # noqa: E402, F401  (registers `data review`, last as before)
