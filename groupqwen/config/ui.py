"""``ui:``: the web UI the gateway serves at ``/`` and the uploads it accepts (docs/ui.md)."""

from __future__ import annotations

from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field


def default_dist() -> Path:
    """``frontend/dist`` of the source checkout this package runs from (what ``make run`` builds)."""
    return Path(__file__).resolve().parents[2] / "frontend" / "dist"


class UIConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    dist: Path | None = Field(
        None,
        description="The built web UI (Vite's dist folder, with index.html); null: frontend/dist of the "
        "source checkout",
    )
    max_upload_mb: int = Field(
        2048,
        ge=1,
        description="Largest chat export POST /v1/review/{name}/import accepts (MiB; 413 above it)",
    )

    def dist_dir(self) -> Path:
        return self.dist if self.dist is not None else default_dist()
