"""docker/Dockerfile, the gateway's image, built and run where containers can run here (podman:
tests/deploy/podman_tools.py): started as a deployment runs it, with the bundled models on a volume, and
smoke-tested as scripts/deploy.sh does (``/health``, ``/v1/health``, a chat completion), as the non-root
user, its HEALTHCHECK passing. Skipped, with the reason, where podman or a Debian base image is missing
(docs/DEPLOYMENT.md, "What was run where").

``make test-containers`` installs podman, makes the Debian base image and the llama-cpp-python wheel, then
runs this and test_ui_image.py; the marker ``containers`` is deselected in ``make test`` (pyproject.toml): the
builds take minutes."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import httpx
import pytest
from servers import free_port
from waiting import until

from deploy.podman_tools import gateway_image, gateway_mounts, limits, podman, remove

pytestmark = pytest.mark.containers


@pytest.fixture(scope="module")
def running(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, str]]:
    """The image started on the host's network (no bridge needed) on a free port, given in
    ``GROUPQWEN_PORT`` (the image's variable, which wins over the YAML file; its HEALTHCHECK reads it)."""
    folder = tmp_path_factory.mktemp("gateway")
    image = gateway_image(folder)
    port = free_port()
    name = f"groupqwen-test-{port}"
    podman(
        "run", "-d", "--name", name, "--network", "host", *limits(), "-e", f"GROUPQWEN_PORT={port}",
        *gateway_mounts(folder), image,
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
        remove(name)


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
