"""Where GroupQwen keeps files by default (XDG locations)."""

from __future__ import annotations

import os
from pathlib import Path


def cache_home() -> Path:
    """GroupQwen's cache directory: ``$XDG_CACHE_HOME/groupqwen`` (default ``~/.cache/groupqwen``)."""
    return Path(os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")) / "groupqwen"


def default_models_dir() -> Path:
    return cache_home() / "models"


def default_data_dir() -> Path:
    base = os.environ.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    return Path(base) / "groupqwen"
