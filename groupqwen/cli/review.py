"""``groupqwen data review``: accept, reject or edit conversations, interactively or in batch.

Registers itself on :data:`groupqwen.cli.data.data_app` (``data.py`` imports this module at its end).
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import click
import typer
from rich.console import Console
from rich.markup import escape
from rich.panel import Panel
from rich.prompt import Prompt

from groupqwen.cli.data import _errors, data_app, input_file

if TYPE_CHECKING:  # the pipeline's imports are heavy: the command imports them when run
    from groupqwen.finetune.records import Conversation
    from groupqwen.finetune.review import ReviewStore


# Rich reads "[a]" as a style tag and drops it ("ccept eject …"): escaped, the keys show
PROMPT = escape("[a]ccept [r]eject [e]dit [s]kip [q]uit")


@data_app.command()
def review(
    source: Annotated[Path, typer.Argument(help="Conversations JSONL to review")],
    decisions: Annotated[Path, typer.Option(help="Decisions JSONL (appended to; resumes)")] = Path(
        "decisions.jsonl"
    ),
    accept_all: Annotated[bool, typer.Option(help="Batch: accept every pending conversation")] = False,
    reject_ids: Annotated[Path | None, typer.Option(help="Batch: reject the ids listed in this file")] = None,
    accept_ids: Annotated[Path | None, typer.Option(help="Batch: accept the ids listed in this file")] = None,
    apply: Annotated[
        Path | None,
        typer.Option(help="Write the conversations not rejected here (accepted, edited, not reviewed)"),
    ] = None,
    keep_pending: Annotated[
        bool,
        typer.Option(
            "--keep-pending/--reviewed-only",
            help="With --apply: keep the conversations not reviewed yet (default), or only the reviewed",
        ),
    ] = True,
) -> None:
    """Accept, reject or edit conversations: interactively, or in batch with the options."""
    from groupqwen.finetune.review import ReviewStore

    with _errors():
        input_file(source)
        store = ReviewStore(decisions)
        batch = accept_all or reject_ids or accept_ids
        if batch:
            _batch(store, source, accept_all, _ids(reject_ids), _ids(accept_ids))
        elif apply is None:
            _interactive(store, source)
        if apply is not None:
            _apply(store, source, apply, keep_pending)


def _apply(store: ReviewStore, source: Path, out: Path, keep_pending: bool) -> None:
    """Write what the review kept and say what it was; warn when that is nothing."""
    from groupqwen.finetune.records import read_jsonl, write_jsonl

    verdicts: Counter[str] = Counter()
    for conv in read_jsonl(source):
        decision = store.get(conv)
        verdicts[decision.verdict if decision else "pending"] += 1
    count = write_jsonl(out, store.apply(read_jsonl(source), keep_pending))
    pending = f"{verdicts['pending']} not reviewed" + ("" if keep_pending else " (left out: --reviewed-only)")
    kept = f"{verdicts['accept']} accepted, {verdicts['edit']} edited, {pending}"
    typer.echo(f"{count} conversation(s) written to {out}: {kept}; {verdicts['reject']} rejected left out")
    if count == 0:
        why = "the input has no conversations" if not verdicts.total() else "nothing was kept"
        Console(stderr=True).print(
            f"[yellow]warning:[/yellow] {escape(str(out))} is empty: {why}", highlight=False, soft_wrap=True
        )


def _ids(path: Path | None) -> set[str]:
    if path is None:
        return set()
    lines = input_file(path).read_text(encoding="utf-8").splitlines()
    return {line.strip() for line in lines if line.strip()}


def _batch(store: ReviewStore, source: Path, accept_all: bool, reject: set[str], accept: set[str]) -> None:
    from groupqwen.finetune.records import read_jsonl

    counts = {"accept": 0, "reject": 0}
    for conv in store.pending(read_jsonl(source)):
        if conv.id in reject:
            store.decide(conv, "reject")
            counts["reject"] += 1
        elif accept_all or conv.id in accept:
            store.decide(conv, "accept")
            counts["accept"] += 1
    typer.echo(f"accepted {counts['accept']}, rejected {counts['reject']}; decisions in {store.path}")


def _interactive(store: ReviewStore, source: Path, ask: Callable[..., str] = Prompt.ask) -> None:
    from groupqwen.finetune.records import read_jsonl

    console = Console()
    total = sum(1 for _ in read_jsonl(source))
    for conv in store.pending(read_jsonl(source)):
        console.print(_panel(conv, len(store) + 1, total))
        while True:
            choice = ask(PROMPT, choices=["a", "r", "e", "s", "q"], default="a")
            if choice == "q":
                console.print(f"{len(store)} of {total} decided; run again to resume")
                return
            if choice == "s":
                break
            if choice in ("a", "r"):
                store.decide(conv, "accept" if choice == "a" else "reject")
                break
            edited = _edit(conv, console)
            if edited is not None:
                store.decide(conv, "edit", edited)
                break
    console.print(f"all {total} conversation(s) reviewed")


def _edit(conv: Conversation, console: Console) -> Conversation | None:
    from groupqwen.finetune.records import from_dict, to_dict

    text = click.edit(json.dumps(to_dict(conv), indent=2, ensure_ascii=False), extension=".json")
    if text is None:
        return None
    try:
        return from_dict(json.loads(text))
    except ValueError as exc:
        console.print(f"[red]not saved:[/red] {escape(str(exc))}")
        return None


def _panel(conv: Conversation, number: int, total: int) -> Panel:
    lines = []
    for t in conv.turns:
        colour = {"user": "cyan", "assistant": "green", "system": "magenta"}[t.role]
        lines.append(f"[bold {colour}]{t.role}[/]: {escape(t.content[:1500])}")
    return Panel(
        "\n\n".join(lines),
        title=escape(f"{number}/{total}  {conv.title or conv.id}"),
        subtitle=escape(conv.id),
    )
