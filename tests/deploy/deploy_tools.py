"""Where the deployment checks find their tools: the venv's bin (``make`` installs hadolint, shellcheck,
Docker Compose and kubectl there from the dev extra), else the PATH (Debian's nginx in /usr/sbin)."""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
TOOLS = Path(sys.executable).parent


def tool(name: str) -> str:
    found = TOOLS / name
    if found.is_file():
        return str(found)
    on_path = shutil.which(name) or shutil.which(name, path="/usr/sbin")
    assert on_path, f"{name} is missing: run make setup (the dev extra) / make nginx"
    return on_path
