"""docker/Dockerfile.frontend, the web UI and the reverse proxy, built and run where containers can run here
(podman: tests/deploy/podman_tools.py) in front of the gateway's image, as docker-compose.yml runs them: the
app, its client-side routes, the hashed assets' long cache and gzip, unprivileged workers, its HEALTHCHECK,
and deploy.sh's smoke test through the proxy (``/v1/health``, a chat completion, a stream as Server-Sent
Events, not compressed). Not tried: a WebSocket through it (``nginx -t`` and test_deploy_files.py check
that part of docker/nginx.conf).

Its ``node`` and ``nginx`` bases are pulled where a registry can be reached, else stand-ins are built from
docker/Dockerfile.bases on the Debian base (docs/DEPLOYMENT.md, "What was run where")."""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import Iterator
from pathlib import Path

import pytest
from waiting import until

from deploy.podman_tools import (
    base_image,
    build,
    gateway_image,
    gateway_mounts,
    host_ca,
    limits,
    pip_ca,
    podman,
    remove,
)

pytestmark = pytest.mark.containers
UI_IMAGE = "localhost/groupqwen-frontend-test:latest"
UI_BASES = {
    "NODE_IMAGE": "docker.io/library/node:22-bookworm-slim",
    "NGINX_IMAGE": "docker.io/library/nginx:1.28-bookworm",
}
GATEWAY, PROXY = "groupqwen-ui-test-gateway", "groupqwen-ui-test"
# Docker's DNS as docker/nginx.conf asks it (resolver 127.0.0.11): every name is the loopback of the network
# the two containers share, where the gateway listens
DNS = """
import socket
server = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
server.bind(("127.0.0.11", 53))
while True:
    query, peer = server.recvfrom(512)
    question = query[12 : query.index(0, 12) + 5]
    answer = bytes.fromhex("c00c00010001 0000000a 0004 7f000001")
    server.sendto(query[:2] + bytes.fromhex("8180 0001 0001 0000 0000") + question + answer, peer)
"""


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


def fetch(path: str, *curl: str) -> tuple[int, dict[str, str], str]:
    """One request to nginx from inside its container (its own curl): status, headers, body."""
    answer = podman("exec", PROXY, "curl", "-sS", "-D", "/dev/stderr", *curl, f"http://127.0.0.1:8080{path}")
    status, *lines = answer.stderr.strip().splitlines()
    headers = dict(
        (key.strip().lower(), value.strip()) for key, value in (line.split(":", 1) for line in lines)
    )
    return int(status.split()[1]), headers, answer.stdout


@pytest.fixture(scope="module")
def proxy(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """The gateway's image and the web UI's started on one network of their own (nothing on the host's),
    with a stand-in for Docker's DNS in the gateway's container."""
    folder = tmp_path_factory.mktemp("ui")
    gateway = gateway_image(folder)
    bundle = host_ca()
    # npm ci in the build, through this machine's egress proxy where there is one
    ca = ["-v", f"{bundle}:/etc/ssl/certs/ca-certificates.crt:ro"] if bundle else []
    build("docker/Dockerfile.frontend", UI_IMAGE, ui_bases(folder), *ca)
    podman("rm", "-f", PROXY, GATEWAY, check=False)
    try:
        podman(
            "run", "-d", "--name", GATEWAY, "--network", "none", *limits(), *gateway_mounts(folder), gateway
        )
        podman("exec", "-d", "--user", "root", GATEWAY, "python3", "-c", DNS)
        podman("run", "-d", "--name", PROXY, "--network", f"container:{GATEWAY}", *limits(), UI_IMAGE)

        def up() -> bool:
            if any(podman("container", "exists", n, check=False).returncode for n in (GATEWAY, PROXY)):
                return True  # one is gone: fail below
            health = ["curl", "-fsS", "http://127.0.0.1:8080/health"]  # the gateway's, through nginx
            return podman("exec", PROXY, *health, check=False).returncode == 0

        asyncio.run(until(up, within_s=600, every_s=1))
        for name in (GATEWAY, PROXY):
            assert podman("container", "exists", name, check=False).returncode == 0, f"{name} stopped"
        yield PROXY
    finally:
        remove(PROXY, GATEWAY)


def test_the_web_ui_image_serves_the_app_and_its_assets(proxy: str) -> None:
    status, headers, index = fetch("/")
    assert status == 200 and '<div id="root">' in index, index[:500]
    assert headers["cache-control"] == "no-cache"
    status, _, fallback = fetch("/chat/a-client-side-route")
    assert status == 200 and fallback == index
    asset = re.search(r'/assets/[^"]+\.js', index)
    assert asset, index[:500]
    status, headers, _ = fetch(asset.group(0), "-H", "Accept-Encoding: gzip", "-o", "/dev/null")
    assert status == 200 and headers["content-encoding"] == "gzip"
    assert headers["cache-control"] == "public, max-age=31536000, immutable"
    assert fetch("/assets/missing-0000.js")[0] == 404


def test_it_passes_the_smoke_test_through_to_the_gateway(proxy: str) -> None:
    status, _, health = fetch("/v1/health")
    assert status == 200 and json.loads(health)["status"] in ("ok", "degraded"), health
    request = {"model": "smollm2-135m", "max_tokens": 8, "messages": [{"role": "user", "content": "Hi"}]}
    post = ["-H", "Content-Type: application/json", "-H", "Accept-Encoding: gzip", "-d"]
    status, _, chat = fetch("/v1/chat/completions", *post, json.dumps(request))
    assert status == 200 and json.loads(chat)["choices"][0]["message"]["content"], chat
    status, headers, stream = fetch(
        "/v1/chat/completions", "-N", *post, json.dumps({**request, "stream": True})
    )
    assert status == 200 and headers["content-type"].startswith("text/event-stream"), headers
    assert "content-encoding" not in headers and stream.rstrip().endswith("data: [DONE]"), stream[-500:]


def test_its_workers_are_unprivileged_and_its_healthcheck_passes(proxy: str) -> None:
    processes = podman("top", proxy, "user", "args").stdout.splitlines()[1:]
    workers = [line.split()[0] for line in processes if "worker process" in line]
    assert workers and "root" not in workers, processes
    check = podman("healthcheck", "run", proxy, check=False)
    assert check.returncode == 0, check.stdout + check.stderr
