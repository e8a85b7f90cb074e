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


def worker_problems(settings: Settings) -> list[Problem]:
    """What ``server.workers`` above 1 would get wrong: each worker is a process with its own memory, so an
    in-process model would be loaded once per worker and in-memory state would not be shared (errors), and
    what each worker keeps to itself (warnings)."""
    workers = settings.server.workers
    if workers == 1:
        return []
    catalog = settings.served_models()
    fix = "serve in-process models with one worker, or behind llama-server or vLLM (backend: openai_http)"
    served = {
        "default_model": settings.default_model,
        **{f"router.tiers[{i}]": tier.model for i, tier in enumerate(settings.router.tiers)},
        **{f"router.routes.{name}": model for name, model in settings.router.routes.items()},
    }
    problems = [
        Problem(
            "error",
            field,
            f"{model!r} runs in-process (llama.cpp): {workers} workers would load it {workers} times "
            f"(its weights and CPU threads each time); {fix}",
        )
        for field, model in served.items()
        if (spec := catalog.get(model)) is not None and spec.backend == "llamacpp"
    ]
    others = sorted(k for k, s in catalog.items() if s.backend == "llamacpp" and k not in served.values())
    if others and not problems:
        problems.append(
            Problem(
                "warning",
                "models",
                f"a request naming {', '.join(others)} (in-process, llama.cpp) would load it in the worker "
                f"that takes it, up to {workers} copies; {fix}",
            )
        )
    if settings.cache.backend == "embedded":
        problems.append(
            Problem(
                "error",
                "cache.backend",
                f"the embedded cache keeps its index in each process: {workers} workers would each answer "
                "from and write to their own; use cache.backend: redis (shared) or off",
            )
        )
    limits = settings.limits
    limited = any(
        value is not None
        for rates in (limits.key, limits.tenant, *limits.tenants.values())
        for value in vars(rates).values()
    )
    if limits.redis_url is None and (limited or settings.auth.mode == "keys"):
        problems.append(
            Problem(
                "error" if limited else "warning",
                "limits.redis_url",
                f"rate limits are counted in each process's memory: {workers} workers would allow up to "
                f"{workers} times each limit{'' if limited else ' a key sets'}; set limits.redis_url",
            )
        )
    if settings.ws.redis_url is not None:
        problems.append(
            Problem(
                "error",
                "ws.redis_url",
                "a resume is relayed to the process holding its session at its address "
                f"(ws.advertise_url): {workers} workers share one address, so a relay would reach any of "
                "them; run one worker per replica, or leave ws.redis_url unset",
            )
        )
    problems.append(
        Problem(
            "warning",
            "server.workers",
            "each worker keeps its own recent request records and Prometheus counters (/v1/metrics, /metrics "
            "and the live stream show the worker that answers; the telemetry database has them all), stored "
            "responses (previous_response_id) and WebSocket resumes: put a load balancer with sticky "
            "sessions in front if clients rely on the latter two",
        )
    )
    return problems
