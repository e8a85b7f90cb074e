"""The import-linter contracts of ``pyproject.toml`` encode DESIGN.md's layers: the tree keeps them, and an
import against an arrow of the drawing breaks them (one copy of the package per forbidden import)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
LINT_IMPORTS = Path(sys.executable).parent / "lint-imports"


def _lint_imports(root: Path) -> subprocess.CompletedProcess[str]:
    """``lint-imports`` over the ``groupqwen`` package found in ``root``, with ``root``'s contracts."""
    assert LINT_IMPORTS.exists(), f"{LINT_IMPORTS} is missing: install the dev extra"
    env = {**os.environ, "PYTHONPATH": str(root)}
    return subprocess.run(
        [str(LINT_IMPORTS), "--no-cache"], cwd=root, env=env, capture_output=True, text=True, timeout=120
    )


def test_import_contracts_are_kept() -> None:
    result = _lint_imports(REPO)
    assert result.returncode == 0, result.stdout + result.stderr
    assert " 0 broken" in result.stdout


def _source(root: Path, module: str) -> Path:
    """The file that holds ``module`` (a module, or a package's ``__init__.py``)."""
    path = root.joinpath(*module.split("."))
    return path.with_suffix(".py") if path.with_suffix(".py").is_file() else path / "__init__.py"


# (the module that imports, what it must not import, the contract that forbids it): the four the issue
# named, which the first contracts missed, and a few more arrows of the drawing
FORBIDDEN = [
    ("groupqwen.backends.openai_http", "groupqwen.finetune", "Layers point one way"),
    ("groupqwen.pool.scheduler", "groupqwen.finetune", "Layers point one way"),
    ("groupqwen.messages", "groupqwen.cache", "Layers point one way"),
    ("groupqwen.config", "groupqwen.telemetry", "Layers point one way"),
    ("groupqwen.telemetry", "groupqwen.pool", "Layers point one way"),
    ("groupqwen.cache", "groupqwen.orchestrator", "Layers point one way"),
    ("groupqwen.orchestrator.pipeline", "groupqwen.finetune", "Layers point one way"),
    ("groupqwen.cache", "groupqwen.backends", "Only the pool drives the backends"),
    ("groupqwen.api.admin", "groupqwen.pool.scheduler", "The API reaches the pool through the orchestrator"),
    ("groupqwen.orchestrator.router", "groupqwen.pool", "The router decides, it runs nothing"),
]


@pytest.mark.parametrize(
    ("importer", "imported", "contract"), FORBIDDEN, ids=[f"{f[0]}->{f[1]}" for f in FORBIDDEN]
)
def test_an_import_against_the_drawing_breaks_a_contract(
    tmp_path: Path, importer: str, imported: str, contract: str
) -> None:
    shutil.copytree(REPO / "groupqwen", tmp_path / "groupqwen", ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(REPO / "pyproject.toml", tmp_path)
    source = _source(tmp_path, importer)
    source.write_text(source.read_text() + f"\nimport {imported}  # against the drawing\n")
    result = _lint_imports(tmp_path)
    assert result.returncode == 1, result.stdout + result.stderr
    assert f"{contract} BROKEN" in result.stdout, result.stdout
    assert f"{importer} -> {imported} (l." in result.stdout, result.stdout
