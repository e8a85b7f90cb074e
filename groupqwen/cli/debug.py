"""``groupqwen debug-bundle``: one archive with what a bug report needs (docs/TROUBLESHOOTING.md).

It holds the versions (GroupQwen, Python, llama-cpp-python, the OS), the CPU's instruction sets (an
"illegal instruction" is a llama.cpp build for another CPU), memory and disk, the effective settings and
``config check``'s findings, the ``GROUPQWEN_*`` variables, and what a running gateway answers on
``/health``, ``/v1/health``, ``/v1/models`` and ``/v1/metrics``. Secrets are left out: keys, tokens and
passwords (also inside URLs) are written ``***``. Nothing is sent anywhere.
"""

from __future__ import annotations

import io
import json
import os
import platform
import re
import shutil
import sys
import tarfile
import time
from importlib import metadata
from pathlib import Path
from typing import Annotated, Any

import httpx
import typer

from groupqwen import __version__
from groupqwen.cli.common import ApiKeyOption, ConfigOption, bearer, settings_or_exit

REDACTED = "***"
_SECRET_NAME = re.compile(r"key|token|secret|password", re.IGNORECASE)
_URL_CREDENTIALS = re.compile(r"(?P<scheme>[a-z][a-z0-9+.-]*://)(?P<user>[^:/@\s]*):[^@/\s]+@", re.IGNORECASE)
_ENDPOINTS = ("/health", "/v1/health", "/v1/models", "/v1/metrics")
_CPU_FLAGS = ("avx", "avx2", "avx512f", "fma", "f16c", "sse4_2", "neon", "asimd")


def redact(value: Any, name: str = "") -> Any:
    """``value`` with every secret replaced: a field whose name says key/token/secret/password, and the
    password of a URL (``postgresql://user:***@host/db``)."""
    if isinstance(value, dict):
        return {k: redact(v, str(k)) for k, v in value.items()}
    if isinstance(value, list):
        return [redact(v, name) for v in value]
    if isinstance(value, str):
        if value and _SECRET_NAME.search(name):
            return REDACTED
        return _URL_CREDENTIALS.sub(rf"\g<scheme>\g<user>:{REDACTED}@", value)
    return value


def _system() -> dict[str, Any]:
    flags: list[str] = []
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.is_file():
        words = set(re.findall(r"[a-z0-9_]+", cpuinfo.read_text(encoding="utf-8", errors="replace")))
        flags = [flag for flag in _CPU_FLAGS if flag in words]
    packages: dict[str, str | None] = {}
    for package in ("groupqwen", "llama-cpp-python", "fastapi", "uvicorn", "redis", "psycopg", "torch"):
        try:
            packages[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            packages[package] = None
    memory: dict[str, int] = {}
    meminfo = Path("/proc/meminfo")
    if meminfo.is_file():
        for line in meminfo.read_text(encoding="utf-8").splitlines():
            key, _, rest = line.partition(":")
            if key in ("MemTotal", "MemAvailable"):
                memory[key] = int(rest.split()[0]) * 1024
    return {
        "groupqwen": __version__,
        "python": sys.version,
        "platform": platform.platform(),
        "machine": platform.machine(),
        "cpu_count": os.cpu_count(),
        "cpu_flags": flags,
        "memory_bytes": memory,
        "packages": packages,
    }


def _disk(paths: dict[str, Path]) -> dict[str, Any]:
    found: dict[str, Any] = {}
    for what, path in paths.items():
        probe = next((p for p in (path, *path.parents) if p.exists()), None)
        usage = shutil.disk_usage(probe) if probe is not None else None
        found[what] = {
            "path": str(path),
            "exists": path.exists(),
            "free_bytes": usage.free if usage else None,
        }
    return found


def _gateway(url: str, api_key: str | None) -> dict[str, Any]:
    from groupqwen.cli.main import gateway_url

    answers: dict[str, Any] = {"url": url}
    with httpx.Client(timeout=10, headers=bearer(api_key)) as client:
        for path in _ENDPOINTS:
            try:
                response = client.get(gateway_url(url, path))
            except httpx.HTTPError as exc:
                answers[path] = {"error": f"{type(exc).__name__}: {exc}"}
                continue
            try:
                body: Any = response.json()
            except ValueError:
                body = response.text[:10_000]
            answers[path] = {"status": response.status_code, "body": body}
    return answers


def debug_bundle(
    config: ConfigOption = None,
    url: Annotated[
        str | None, typer.Option(help="The gateway to ask (default: the configured host and port)")
    ] = None,
    api_key: ApiKeyOption = None,
    output: Annotated[Path | None, typer.Option("--output", "-o", help="Where to write the .tar.gz")] = None,
) -> None:
    """Write a .tar.gz with versions, CPU, memory, disk, the settings and the gateway's health (secrets
    left out) to attach to a bug report."""
    from groupqwen.cli.checks import default_model_problems, exposure_problems
    from groupqwen.cli.main import configured_gateway

    settings = settings_or_exit(config)
    problems = default_model_problems(settings) + exposure_problems(settings)
    files: dict[str, Any] = {
        "system.json": {
            **_system(),
            "disk": _disk({"models_dir": settings.models_dir, "data_dir": settings.data_dir}),
        },
        "settings.json": redact(settings.model_dump(mode="json")),
        "config-check.json": [
            {"severity": p.severity, "field": p.field, "message": p.message} for p in problems
        ],
        "environment.json": redact(
            {k: v for k, v in sorted(os.environ.items()) if k.upper().startswith("GROUPQWEN_")}
        ),
        "gateway.json": _gateway(url or configured_gateway(settings), api_key),
    }
    stamp = time.strftime("%Y%m%d-%H%M%S")
    target = output or Path(f"groupqwen-debug-{stamp}.tar.gz")
    with tarfile.open(target, "w:gz") as archive:
        for name, content in files.items():
            data = (json.dumps(content, indent=2, default=str) + "\n").encode()
            info = tarfile.TarInfo(f"groupqwen-debug-{stamp}/{name}")
            info.size, info.mtime = len(data), int(time.time())
            archive.addfile(info, io.BytesIO(data))
    typer.echo(f"wrote {target}: attach it to the report (no keys, tokens or passwords are in it)")
