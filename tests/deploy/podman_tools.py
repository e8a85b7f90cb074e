"""Building and running the images with podman for tests/deploy/test_image.py and test_ui_image.py: buildah's
chroot isolation for the builds (no daemon, no nested namespaces), runc, and the adjustments this sandbox
needs (docs/DEPLOYMENT.md, "What was run where")."""

from __future__ import annotations

import json
import os
import resource
import shutil
import subprocess
from importlib.metadata import version
from pathlib import Path

import pytest

from groupqwen.config import load_settings

ROOT = Path(__file__).resolve().parents[2]
GATEWAY_IMAGE = "localhost/groupqwen-test:latest"
# make test-containers names the base it made (make debian-image) in DEBIAN_IMAGE
BASES = tuple(
    name
    for name in (
        os.environ.get("DEBIAN_IMAGE"),
        "docker.io/library/debian:bookworm-slim",
        "localhost/debian:bookworm-slim",
    )
    if name
)


def podman(*args: str, timeout: float = 600, check: bool = True) -> subprocess.CompletedProcess[str]:
    runtime = ["--runtime", "runc"] if shutil.which("runc") else []  # crun refuses hybrid cgroups
    return subprocess.run(
        ["podman", *runtime, *args], capture_output=True, text=True, timeout=timeout, check=check
    )


def base_image() -> str:
    """The Debian the images build on: already here, or pulled; else the tests cannot run."""
    if shutil.which("podman") is None:
        pytest.skip("podman is not installed: no container is built here (make containers)")
    for name in BASES:
        if podman("image", "exists", name, check=False).returncode == 0:
            return name
    public = "docker.io/library/debian:bookworm-slim"
    pulled = podman("pull", public, timeout=300, check=False)
    if pulled.returncode == 0:
        return public
    pytest.skip(
        f"no Debian base image ({pulled.stderr.strip()[-200:]}); offline, make one from Debian's "
        "archive: make debian-image"
    )


def build(dockerfile: str, tag: str, args: dict[str, str], *options: str) -> None:
    """``podman build`` in the docker format: the OCI one has no HEALTHCHECK (podman drops it)."""
    result = podman(
        "build", "--isolation", "chroot", "--format", "docker", *options,
        *(part for name, value in args.items() for part in ("--build-arg", f"{name}={value}")),
        "-f", dockerfile, "-t", tag, str(ROOT),
        timeout=3 * 3600, check=False,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-4000:]


def host_ca() -> str | None:
    """The certificate authorities this machine trusts (``PIP_CERT``, e.g. a TLS-inspecting egress proxy's)
    for pip and npm inside the builds; None when they use their own."""
    bundle = os.environ.get("PIP_CERT") or os.environ.get("SSL_CERT_FILE")
    return bundle if bundle and Path(bundle).is_file() else None


def pip_ca(folder: Path) -> list[str]:
    bundle = host_ca()
    if bundle is None:
        return []
    conf = folder / "pip.conf"
    conf.write_text("[global]\ncert = /run/host-ca.crt\n", encoding="utf-8")
    return ["-v", f"{bundle}:/run/host-ca.crt:ro", "-v", f"{conf}:/etc/pip.conf:ro"]


def llama_wheel() -> dict[str, str]:
    """The build argument naming a wheel of the venv's llama-cpp-python in docker/wheels/ (make
    llama-wheel), if there is one; without it the build compiles llama.cpp (about an hour on 2 cores)."""
    wheels = sorted(
        (ROOT / "docker" / "wheels").glob(f"llama_cpp_python-{version('llama-cpp-python')}-*.whl")
    )
    return {"LLAMA_WHEEL": str(wheels[-1].relative_to(ROOT))} if wheels else {}


def gateway_image(folder: Path) -> str:
    """docker/Dockerfile built on the Debian base (podman keeps the layers: a second build is quick). The
    bundled models come from a volume (``gateway_mounts``), as a deployment's named volume holds them."""
    base = base_image()
    args = {"BUILDER_IMAGE": base, "RUNTIME_IMAGE": base, "FETCH_BUNDLED": "0", **llama_wheel()}
    build("docker/Dockerfile", GATEWAY_IMAGE, args, *pip_ca(folder))
    return GATEWAY_IMAGE


def gateway_mounts(folder: Path) -> list[str]:
    """The bundled models, and a configuration of the tests' own over the image's: on the loopback only, no
    Redis or PostgreSQL here (cache off, SQLite), no keys."""
    config = folder / "groupqwen.yaml"
    config.write_text(
        json.dumps({"host": "127.0.0.1", "auth": "off", "cache": {"backend": "off"}}), encoding="utf-8"
    )
    models = load_settings().models_dir
    return ["-v", f"{config}:/etc/groupqwen/groupqwen.yaml:ro", "-v", f"{models}:/models:ro"]


def limits() -> list[str]:
    """This process's own limits for a container: a sandbox without CAP_SYS_RESOURCE cannot raise them to
    podman's defaults."""
    nofile = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
    return ["--ulimit", f"nofile={nofile}:{nofile}", "--ulimit", "nproc=32768:32768"]


def remove(*names: str) -> None:
    """Print the containers' logs (pytest shows them for a failure), then remove them."""
    for name in names:
        logs = podman("logs", name, check=False)
        print(f"--- {name}\n", logs.stdout[-4000:], logs.stderr[-4000:])
        podman("rm", "-f", "-t", "5", name, check=False)
