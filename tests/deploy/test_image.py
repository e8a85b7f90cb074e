"""docker/Dockerfile built and run where containers can run here: with podman (buildah's chroot isolation for
the build, so no daemon and no nested namespaces are needed), the gateway's image is built, started with the
bundled models on a volume, and smoke-tested as scripts/deploy.sh does (``/health``, ``/v1/health``, a chat
completion), as the non-root user, its HEALTHCHECK passing. Skipped, with the reason, where podman or a
Debian base image is missing (docs/DEPLOYMENT.md, "What was run where").

``make test-containers`` installs podman, makes the Debian base image and the llama-cpp-python wheel, then
runs it; the marker ``containers`` is deselected in ``make test`` (pyproject.toml): the build takes minutes.
A wheel of the venv's llama-cpp-python in docker/wheels/ (``make llama-wheel``) is installed in the image
instead of compiling llama.cpp (about an hour on 2 cores)."""

from __future__ import annotations

import asyncio
import json
import os
import resource
import shutil
import subprocess
from collections.abc import Iterator
from importlib.metadata import version
from pathlib import Path

import httpx
import pytest
from servers import free_port
from waiting import until

from groupqwen.config import load_settings

pytestmark = pytest.mark.containers
ROOT = Path(__file__).resolve().parents[2]
IMAGE = "localhost/groupqwen-test:latest"
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
    """The Debian the Dockerfile builds on: already here, or pulled; else the test cannot run."""
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


def llama_wheel() -> list[str]:
    """The build argument naming a wheel of the venv's llama-cpp-python in docker/wheels/ (make
    llama-wheel), if there is one; without it the build compiles llama.cpp."""
    wheels = sorted((ROOT / "docker" / "wheels").glob(f"llama_cpp_python-{version('llama-cpp-python')}-*.whl"))
    return ["--build-arg", f"LLAMA_WHEEL={wheels[-1].relative_to(ROOT)}"] if wheels else []


def limits() -> list[str]:
    """This process's own limits for the container: a sandbox without CAP_SYS_RESOURCE cannot raise them
    to podman's defaults."""
    nofile = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
    return ["--ulimit", f"nofile={nofile}:{nofile}", "--ulimit", "nproc=32768:32768"]


def ca_mounts(folder: Path) -> list[str]:
    """The certificate authorities this machine's pip trusts (``PIP_CERT``, e.g. a TLS-inspecting egress
    proxy's), for pip inside the build; nothing when pip uses its own."""
    bundle = os.environ.get("PIP_CERT") or os.environ.get("SSL_CERT_FILE")
    if not bundle or not Path(bundle).is_file():
        return []
    conf = folder / "pip.conf"
    conf.write_text("[global]\ncert = /run/host-ca.crt\n", encoding="utf-8")
    return ["-v", f"{bundle}:/run/host-ca.crt:ro", "-v", f"{conf}:/etc/pip.conf:ro"]


@pytest.fixture(scope="module")
def image(tmp_path_factory: pytest.TempPathFactory) -> str:
    if shutil.which("podman") is None:
        pytest.skip("podman is not installed: no container is built here (apt-get install podman runc)")
    base = base_image()
    folder = tmp_path_factory.mktemp("image")
    build = podman(
        "build", "--isolation", "chroot", *ca_mounts(folder),
        "--build-arg", f"BUILDER_IMAGE={base}", "--build-arg", f"RUNTIME_IMAGE={base}",
        # the bundled models come from the volume below, as a deployment's named volume holds them
        "--build-arg", "FETCH_BUNDLED=0", *llama_wheel(),
        "-f", "docker/Dockerfile", "-t", IMAGE, str(ROOT),
        timeout=3 * 3600, check=False,
    )  # fmt: skip
    assert build.returncode == 0, build.stdout[-4000:] + build.stderr[-4000:]
    return IMAGE


@pytest.fixture(scope="module")
def running(image: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, str]]:
    """The image started as a deployment runs it, on the host's network (no bridge needed), with a
    configuration of its own mounted over the image's (no Redis or PostgreSQL here: cache off, SQLite)."""
    port = free_port()
    folder = tmp_path_factory.mktemp("container")
    config = folder / "groupqwen.yaml"
    config.write_text(
        json.dumps({"host": "127.0.0.1", "port": port, "auth": "off", "cache": {"backend": "off"}}),
        encoding="utf-8",
    )
    models = load_settings().models_dir
    name = f"groupqwen-test-{port}"
    podman(
        "run", "-d", "--name", name, "--network", "host", *limits(),
        "-v", f"{config}:/etc/groupqwen/groupqwen.yaml:ro", "-v", f"{models}:/models:ro",
        image,
    )  # fmt: skip
    url = f"http://127.0.0.1:{port}"

    def healthy() -> bool:
        try:
            return httpx.get(url + "/health", timeout=5).status_code == 200
        except httpx.HTTPError:
            return podman("container", "exists", name, check=False).returncode != 0  # gone: fail below

    try:
        asyncio.run(until(healthy, within_s=600, every_s=1))
        assert podman("container", "exists", name, check=False).returncode == 0, "the container stopped"
        yield name, url
    finally:
        logs = podman("logs", name, check=False)
        print(logs.stdout[-4000:], logs.stderr[-4000:])
        podman("rm", "-f", name, check=False)


def test_the_image_answers_the_smoke_test(running: tuple[str, str]) -> None:
    _, url = running
    health = httpx.get(url + "/v1/health", timeout=60)
    assert health.status_code == 200 and health.json()["status"] in ("ok", "degraded"), health.text
    chat = httpx.post(
        url + "/v1/chat/completions",
        json={"model": "smollm2-135m", "max_tokens": 8, "messages": [{"role": "user", "content": "Hi"}]},
        timeout=600,
    )
    assert chat.status_code == 200, chat.text
    assert chat.json()["choices"][0]["message"]["content"]


def test_it_runs_as_the_unprivileged_user_and_its_healthcheck_passes(running: tuple[str, str]) -> None:
    name, _ = running
    assert podman("exec", name, "id", "-u").stdout.strip() == "10001"
    check = podman("healthcheck", "run", name, check=False)
    assert check.returncode == 0, check.stdout + check.stderr
