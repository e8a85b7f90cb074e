"""What every command shares: the ``--config`` option, and settings that fail as one line per bad field."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from groupqwen.config import Settings, load_settings
from groupqwen.errors import ConfigError

ConfigOption = Annotated[Path | None, typer.Option("--config", "-c", help="YAML configuration file")]


def settings_or_exit(config: Path | None, **overrides: Any) -> Settings:
    """The settings (``overrides`` left ``None`` are not given); exit 1 after naming every bad field."""
    try:
        return load_settings(config, **{k: v for k, v in overrides.items() if v is not None})
    except ConfigError as exc:
        for field, message in exc.errors:
            typer.echo(f"config error: {field}: {message}", err=True)
        raise typer.Exit(1) from None


ApiKeyOption = Annotated[
    str | None,
    typer.Option(
        "--api-key",
        envvar="GROUPQWEN_API_KEY",
        help="The key to send a gateway that runs with auth: keys (or set GROUPQWEN_API_KEY)",
        show_envvar=False,
    ),
]


def bearer(api_key: str | None) -> dict[str, str]:
    """The ``Authorization`` header for ``api_key`` (none without one)."""
    return {"authorization": f"Bearer {api_key}"} if api_key else {}
