"""docs/QUICK_START.md, run as written: the gateway started by what ``make run`` runs last (``make -n run``'s
last command; the steps before it — setup, models, UI — are ``make test``'s own prerequisites), then every
``sh`` and ``python`` block of the document against it, on a free port instead of 8000. Real models:
the bundled GGUFs through llama.cpp."""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from servers import default_serve

REPO = Path(__file__).resolve().parent.parent
DOC = REPO / "docs" / "QUICK_START.md"


def blocks(language: str) -> list[str]:
    return re.findall(rf"```{language}\n(.*?)\n```", DOC.read_text(encoding="utf-8"), flags=re.S)


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[int, dict[str, str]]]:
    # Under ``make test`` (or ``make -C``) the parent's MAKEFLAGS make this make print "Entering directory"
    # lines around its output: read the dry run as a make of its own.
    outer = {k: v for k, v in os.environ.items() if k not in {"MAKEFLAGS", "MFLAGS", "MAKELEVEL"}}
    dry_run = subprocess.run(
        ["make", "--no-print-directory", "-n", "run"],
        cwd=REPO,
        env=outer,
        capture_output=True,
        text=True,
        check=True,
    )
    command = shlex.split(dry_run.stdout.strip().splitlines()[-1])
    assert command[0].endswith("groupqwen") and command[1:] == ["serve"], command
    data = tmp_path_factory.mktemp("quick-start")
    log = tmp_path_factory.mktemp("quick-start-log") / "serve.log"
    with default_serve(command, data, log) as served:
        yield served


def test_the_quick_start_is_what_make_run_serves() -> None:
    assert "make run" in blocks("sh")


@pytest.mark.parametrize("index", range(len(blocks("sh"))))
def test_every_shell_command_runs(served: tuple[int, dict[str, str]], index: int) -> None:
    port, env = served
    command = blocks("sh")[index]
    if command == "make run":
        return  # the fixture serves it
    result = subprocess.run(
        ["bash", "-c", command.replace("127.0.0.1:8000", f"127.0.0.1:{port}")],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.strip()


def test_the_python_example_runs(served: tuple[int, dict[str, str]]) -> None:
    port, env = served
    (code,) = blocks("python")
    result = subprocess.run(
        [sys.executable, "-c", code.replace("127.0.0.1:8000", f"127.0.0.1:{port}")],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip()
