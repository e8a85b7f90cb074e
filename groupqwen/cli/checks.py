"""``groupqwen config check``'s checks beyond validation: whether what the settings name can be served here.

Validation (``groupqwen.config``) says whether a file is well formed; these say whether the gateway it
describes would start: the default model's weights. A missing bundled model is a warning, since
``groupqwen models fetch`` (which ``make run`` runs) fetches it; anything else that ``serve`` would refuse is
an error.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from groupqwen.config import Settings


@dataclass(frozen=True)
class Problem:
    severity: Literal["warning", "error"]
    field: str
    message: str


def default_model_problems(settings: Settings) -> list[Problem]:
    """What stops (error) or delays (warning) ``serve`` from answering with ``default_model``."""
    model_id = settings.default_model
    configured = settings.models.get(model_id)
    if configured is not None and configured.path is not None:  # the user's own file: it must be there
        if not configured.path.is_file():
            return [Problem("error", f"models.{model_id}.path", f"no file at {configured.path}")]
        return []
    spec = settings.catalog().get(model_id)
    if spec is None or spec.backend != "llamacpp":  # unknown: a validation error; remote, fake: no file
        return []
    if spec.path is not None and spec.path.is_file():
        return []
    if spec.bundled is not None:
        return [
            Problem(
                "warning",
                "default_model",
                f"{model_id!r} has no weights in {settings.models_dir} yet: `groupqwen models fetch` "
                "(or `make run`) fetches them",
            )
        ]
    where = f"`groupqwen models pull {model_id}`" if spec.source.startswith("hf:") else "a GGUF file"
    return [
        Problem(
            "error",
            "default_model",
            f"{model_id!r} has no weights in {settings.models_dir}: fetch them with {where}, or set "
            f"models.{model_id}.path to a local GGUF file",
        )
    ]
