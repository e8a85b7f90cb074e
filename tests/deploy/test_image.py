"""The images built and run where containers can run here, with podman (buildah's chroot isolation for the
build, so no daemon and no nested namespaces are needed):

- docker/Dockerfile, the gateway: started with the bundled models on a volume and smoke-tested as
  scripts/deploy.sh does (``/health``, ``/v1/health``, a chat completion), as the non-root user, its
  HEALTHCHECK passing;
- docker/Dockerfile.frontend, the web UI behind nginx: the app, its client-side routes, the hashed assets'
  long cache and gzip, unprivileged workers, its HEALTHCHECK. Its proxy to the gateway is not tried here
  (it needs the gateway's service name in Docker's DNS; ``nginx -t`` checks it in test_deploy_files.py).

Skipped, with the reason, where podman or a Debian base image is missing (docs/DEPLOYMENT.md, "What was run
where"). ``make test-containers`` installs podman, makes the Debian base image and the llama-cpp-python wheel,
then runs them; the marker ``containers`` is deselected in ``make test`` (pyproject.toml): the builds take
minutes. A wheel of the venv's llama-cpp-python in docker/wheels/ (``make llama-wheel``) is installed in the
gateway's image instead of compiling llama.cpp (about an hour on 2 cores)."""

from __future__ import annotations

import asyncio
import json
import os
import re
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
UI_IMAGE = "localhost/groupqwen-frontend-test:latest"
# docker/Dockerfile.frontend's bases where they can be pulled; else stand-ins from docker/Dockerfile.bases
UI_BASES = {
    "NODE_IMAGE": "docker.io/library/node:22-bookworm-slim",
    "NGINX_IMAGE": "docker.io/library/nginx:1.28-bookworm",
}
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


def llama_wheel() -> dict[str, str]:
    """The build argument naming a wheel of the venv's llama-cpp-python in docker/wheels/ (make
    llama-wheel), if there is one; without it the build compiles llama.cpp."""
    wheels = sorted(
        (ROOT / "docker" / "wheels").glob(f"llama_cpp_python-{version('llama-cpp-python')}-*.whl")
    )
    return {"LLAMA_WHEEL": str(wheels[-1].relative_to(ROOT))} if wheels else {}


def limits() -> list[str]:
    """This process's own limits for the container: a sandbox without CAP_SYS_RESOURCE cannot raise them
    to podman's defaults."""
    nofile = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
    return ["--ulimit", f"nofile={nofile}:{nofile}", "--ulimit", "nproc=32768:32768"]


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


@pytest.fixture(scope="module")
def image(tmp_path_factory: pytest.TempPathFactory) -> str:
    base = base_image()
    folder = tmp_path_factory.mktemp("image")
    # the bundled models come from a volume, as a deployment's named volume holds them
    args = {"BUILDER_IMAGE": base, "RUNTIME_IMAGE": base, "FETCH_BUNDLED": "0", **llama_wheel()}
    build("docker/Dockerfile", IMAGE, args, *pip_ca(folder))
    return IMAGE


@pytest.fixture(scope="module")
def running(image: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, str]]:
    """The image started as a deployment runs it, on the host's network (no bridge needed), with a
    configuration of its own mounted over the image's (no Redis or PostgreSQL here: cache off, SQLite) and a
    free port in ``GROUPQWEN_PORT`` (the image's variable, which its HEALTHCHECK reads too)."""
    port = free_port()
    folder = tmp_path_factory.mktemp("container")
    config = folder / "groupqwen.yaml"
    config.write_text(
        json.dumps({"host": "127.0.0.1", "auth": "off", "cache": {"backend": "off"}}),
        encoding="utf-8",
    )
    models = load_settings().models_dir
    name = f"groupqwen-test-{port}"
    podman(
        "run", "-d", "--name", name, "--network", "host", *limits(), "-e", f"GROUPQWEN_PORT={port}",
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


def ui_bases(folder: Path) -> dict[str, str]:
    """The node and nginx images docker/Dockerfile.frontend builds on: the public ones where they can be
    pulled, else stand-ins built from docker/Dockerfile.bases on the Debian base."""
    base = base_image()
    if all(podman("pull", name, timeout=300, check=False).returncode == 0 for name in UI_BASES.values()):
        return UI_BASES
    bases = {}
    for arg, target in (("NODE_IMAGE", "node"), ("NGINX_IMAGE", "nginx")):
        bases[arg] = f"localhost/groupqwen-{target}-base:latest"
        build(
            "docker/Dockerfile.bases", bases[arg], {"DEBIAN_IMAGE": base}, "--target", target, *pip_ca(folder)
        )
    return bases


def fetch(name: str, path: str, *curl: str) -> tuple[int, dict[str, str], str]:
    """A request to nginx from inside its container (its own curl): status, headers, body."""
    head = podman(
        "exec", name, "curl", "-sS", "-o", "/dev/null", "-D", "-", *curl, f"http://127.0.0.1:8080{path}"
    )
    status, *lines = head.stdout.strip().splitlines()
    headers = dict(
        (key.strip().lower(), value.strip()) for key, value in (line.split(":", 1) for line in lines)
    )
    body = podman("exec", name, "curl", "-sS", f"http://127.0.0.1:8080{path}").stdout
    return int(status.split()[1]), headers, body


@pytest.fixture(scope="module")
def ui(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """The web UI's image started on a network of its own (no port on the host), checked from inside."""
    folder = tmp_path_factory.mktemp("ui")
    bases = ui_bases(folder)
    bundle = host_ca()
    # npm ci in the build, through this machine's egress proxy where there is one
    build("docker/Dockerfile.frontend", UI_IMAGE, bases,
          *(["-v", f"{bundle}:/etc/ssl/certs/ca-certificates.crt:ro"] if bundle else []))  # fmt: skip
    name = "groupqwen-frontend-test"
    podman("rm", "-f", name, check=False)
    podman("run", "-d", "--name", name, "--network", "none", *limits(), UI_IMAGE)

    def up() -> bool:
        running = podman("container", "exists", name, check=False).returncode == 0
        return not running or podman("exec", name, "curl", "-fsS", "http://127.0.0.1:8080/nginx-health",
                                     check=False).returncode == 0  # fmt: skip

    try:
        asyncio.run(until(up, within_s=120, every_s=1))
        assert podman("container", "exists", name, check=False).returncode == 0, "the container stopped"
        yield name
    finally:
        logs = podman("logs", name, check=False)
        print(logs.stdout[-4000:], logs.stderr[-4000:])
        podman("rm", "-f", name, check=False)


def test_the_web_ui_image_serves_the_app_and_its_assets(ui: str) -> None:
    status, headers, index = fetch(ui, "/")
    assert status == 200 and '<div id="root">' in index, index[:500]
    assert headers["cache-control"] == "no-cache"
    status, _, fallback = fetch(ui, "/chat/a-client-side-route")
    assert status == 200 and fallback == index
    asset = re.search(r'/assets/[^"]+\.js', index)
    assert asset, index[:500]
    status, headers, _ = fetch(ui, asset.group(0), "-H", "Accept-Encoding: gzip")
    assert status == 200 and headers["content-encoding"] == "gzip"
    assert headers["cache-control"] == "public, max-age=31536000, immutable"
    assert fetch(ui, "/assets/missing-0000.js")[0] == 404


def test_its_workers_are_unprivileged_and_its_healthcheck_passes(ui: str) -> None:
    processes = podman("top", ui, "user", "args").stdout.splitlines()[1:]
    workers = [line.split()[0] for line in processes if "worker process" in line]
    assert workers and "root" not in workers, processes
    check = podman("healthcheck", "run", ui, check=False)
    assert check.returncode == 0, check.stdout + check.stderr
