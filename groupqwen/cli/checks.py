"""``groupqwen config check``'s checks beyond validation: whether what the settings name can be served here.

Validation (``groupqwen.config``) says whether a file is well formed; these say whether the gateway it
describes would start: the default model's weights, and keys on an address other machines reach. A missing
bundled model is a warning, since
``groupqwen models fetch`` (which ``make run`` runs) fetches it; anything else that ``serve`` would refuse is
an error.
"""

from __future__ import annotations

import ipaddress
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


def exposure_problems(settings: Settings) -> list[Problem]:
    """``auth: off`` on an address other machines can reach: refused unless explicitly allowed."""
    if (
        settings.auth.mode != "off"
        or settings.auth.allow_unauthenticated_network
        or is_loopback(settings.host)
    ):
        return []
    return [
        Problem(
            "error",
            "auth",
            f"host {settings.host!r} is reachable from other machines and auth is off, so anyone who "
            "reaches the port could chat, unload models and clear the cache: set auth: keys and create a "
            "key (`groupqwen keys create --name me --scopes chat,embeddings,admin,finetune`, or "
            "GROUPQWEN_AUTH__BOOTSTRAP_ADMIN_KEY in a container), listen on 127.0.0.1 (--host 127.0.0.1), "
            "or, on a network you trust, set auth.allow_unauthenticated_network: true "
            "(GROUPQWEN_AUTH__ALLOW_UNAUTHENTICATED_NETWORK=true)",
        )
    ]


def is_loopback(host: str) -> bool:
    """``127.0.0.0/8``, ``::1`` and ``localhost``; ``0.0.0.0``, ``::`` and every other name are not."""
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False
