"""docker/Dockerfile.frontend, the web UI and the reverse proxy, built and run where containers can run here
(podman: tests/deploy/podman_tools.py) in front of the gateway's image, as docker-compose.yml runs them: the
app, its client-side routes, the hashed assets' long cache, gzip and brotli, unprivileged workers, its
HEALTHCHECK, deploy.sh's smoke test through the proxy (``/v1/health``, a chat completion, a stream as
Server-Sent Events, not compressed), a WebSocket through it (a generation read to ``done``, another dropped
and resumed), and two gateway replicas behind it under the one name ``gateway`` (both answer; one stopped,
the other answers all).

Its ``node`` base is pulled where a registry can be reached, else a stand-in is built from
docker/Dockerfile.bases; nginx runs on the Debian base (docs/DEPLOYMENT.md, "What was run where")."""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from waiting import until

from deploy.podman_tools import (
    GATEWAY_IMAGE,
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
NODE_IMAGE = "docker.io/library/node:22-bookworm-slim"
GATEWAY, PROXY = "groupqwen-ui-test-gateway", "groupqwen-ui-test"
SECOND = "groupqwen-ui-test-gateway-2"
# Docker's DNS as docker/nginx.conf asks it (resolver 127.0.0.11): every name is the two addresses of the
# gateway's replicas, as compose's DNS answers a service's name, on the loopback of the network the
# containers share: the gateway listens on 127.0.0.1, the second replica (test_two_replicas_…) on 127.0.0.2
DNS = """
import socket
server = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
server.bind(("127.0.0.11", 53))
while True:
    query, peer = server.recvfrom(512)
    question = query[12 : query.index(0, 12) + 5]
    answers = b"".join(bytes.fromhex("c00c00010001 0000000a 0004 7f00000" + n) for n in "12")
    server.sendto(query[:2] + bytes.fromhex("8180 0001 0002 0000 0000") + question + answers, peer)
"""
PROBE = Path(__file__).with_name("ws_probe.py")


def ui_bases(folder: Path) -> dict[str, str]:
    """What docker/Dockerfile.frontend builds on: the public node image where it can be pulled, else a
    stand-in built from docker/Dockerfile.bases; nginx runs on the Debian base (``make debian-image``)."""
    base = base_image()
    if podman("pull", NODE_IMAGE, timeout=300, check=False).returncode == 0:
        return {"NODE_IMAGE": NODE_IMAGE, "RUNTIME_IMAGE": base}
    node = "localhost/groupqwen-node-base:latest"
    build("docker/Dockerfile.bases", node, {"DEBIAN_IMAGE": base}, "--target", "node", *pip_ca(folder))
    return {"NODE_IMAGE": node, "RUNTIME_IMAGE": base}


def fetch(path: str, *curl: str) -> tuple[int, dict[str, str], str]:
    """One request to nginx from inside its container (its own curl): status, headers, body."""
    return fetch_from(f"http://127.0.0.1:8080{path}", *curl)


def fetch_from(url: str, *curl: str) -> tuple[int, dict[str, str], str]:
    """One request from inside nginx's container: status, headers, body; status 0 and curl's message
    when nothing answered."""
    answer = podman("exec", PROXY, "curl", "-sS", "-D", "/dev/stderr", *curl, url, check=False)
    if answer.returncode:
        return 0, {}, answer.stderr
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
    status, headers, _ = fetch(asset.group(0), "-H", "Accept-Encoding: gzip, br", "-o", "/dev/null")
    assert status == 200 and headers["content-encoding"] == "br", headers
    assert headers["cache-control"] == "public, max-age=31536000, immutable"
    assert fetch("/assets/missing-0000.js")[0] == 404


def test_it_passes_the_smoke_test_through_to_the_gateway(proxy: str) -> None:
    status, _, health = fetch("/v1/health")
    assert status == 200 and json.loads(health)["status"] in ("ok", "degraded"), health
    request = {"model": "smollm2-135m", "max_tokens": 8, "messages": [{"role": "user", "content": "Hi"}]}
    post = ["-H", "Content-Type: application/json", "-H", "Accept-Encoding: gzip, br", "-d"]
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


def seqs(frames: list[dict[str, Any]], gid: str) -> list[int]:
    return [frame["seq"] for frame in frames if frame.get("id") == gid and "seq" in frame]


def text_of(frames: list[dict[str, Any]]) -> str:
    return "".join(
        frame["data"]["choices"][0]["delta"].get("content", "")
        for frame in frames
        if frame["type"] == "chunk" and frame["data"]["choices"]
    )


def test_a_websocket_through_the_proxy_streams_and_resumes_after_a_drop(proxy: str) -> None:
    """tests/deploy/ws_probe.py in the gateway's container, through nginx: the upgrade passed, a generation's
    frames in order to ``done``; a connection reset after the first token (nginx then drops its own to the
    gateway, which parks the generation), and a ``resume`` on a new connection through nginx gets every
    frame after the last one seen, none repeated or missed."""
    probe = PROBE.read_text(encoding="utf-8")
    run = podman("exec", GATEWAY, "python3", "-c", probe, timeout=900, check=False)
    assert run.returncode == 0, run.stdout[-4000:] + run.stderr[-4000:]
    got = json.loads(run.stdout)
    first, second = got["hello"]
    assert first["type"] == second["type"] == "hello" and first["protocol"] == 1, got["hello"]
    whole = got["whole"]
    assert whole[-1]["type"] == "done" and whole[-1]["usage"]["completion_tokens"] > 0, whole[-1]
    assert seqs(whole, "whole") == list(range(1, len(whole) + 1)) and text_of(whole), whole
    before, after = got["before"], got["after"]
    assert before[-1]["type"] == "chunk" and text_of(before), before  # dropped mid-answer
    assert after[0] == {"type": "resumed", "session": first["session"]}, after
    assert after[-1]["type"] == "done", after[-1]
    assert seqs(before + after, "dropped") == list(range(1, len(before) + len(after))), before + after


def answered_by(replica: str) -> int:
    """The chat completions a replica answered (``GET /v1/metrics`` on its own address, from the proxy's
    container)."""
    status, _, summary = fetch_from(f"http://{replica}:8000/v1/metrics?window=1h")
    assert status == 200, summary
    count: int = json.loads(summary)["requests"]
    return count


@pytest.fixture
def second_replica(proxy: str, tmp_path: Path) -> Iterator[str]:
    """A second gateway container on 127.0.0.2 in the same network (the DNS stand-in answers both)."""
    podman("rm", "-f", SECOND, check=False)
    try:
        podman(
            "run", "-d", "--name", SECOND, "--network", f"container:{GATEWAY}", "-e",
            "GROUPQWEN_HOST=127.0.0.2", *limits(), *gateway_mounts(tmp_path), GATEWAY_IMAGE,
        )  # fmt: skip

        def up() -> bool:
            if podman("container", "exists", SECOND, check=False).returncode:
                return True  # gone: fail below
            return fetch_from("http://127.0.0.2:8000/health")[0] == 200

        asyncio.run(until(up, within_s=600, every_s=1))
        assert podman("container", "exists", SECOND, check=False).returncode == 0, f"{SECOND} stopped"
        yield "127.0.0.2"
    finally:
        remove(SECOND)


def test_two_replicas_behind_the_proxy_share_its_requests_and_one_stopped_the_other_answers(
    second_replica: str,
) -> None:
    """As compose runs ``gateway`` with replicas: nginx resolves the one name to both and spreads the
    requests (the resolver's answers in a random order each time); with one replica stopped, every request
    is still answered (``proxy_next_upstream error``: the refused connection is tried on the other)."""
    replicas = ("127.0.0.1", second_replica)
    request = {"model": "smollm2-135m", "max_tokens": 4, "messages": [{"role": "user", "content": "Hi"}]}
    post = ["-H", "Content-Type: application/json", "-d", json.dumps(request)]

    def answered(times: int) -> None:
        for _ in range(times):
            status, _, chat = fetch("/v1/chat/completions", *post)
            assert status == 200 and json.loads(chat)["choices"][0]["message"]["content"], chat

    def counted(expected: int, start: dict[str, int]) -> dict[str, int]:
        """The new requests of each replica in ``start``, once they add up to ``expected`` (a record is
        written as its answer ends)."""
        grown: dict[str, int] = {}

        def settled() -> bool:
            grown.update({r: answered_by(r) - start[r] for r in start})
            return sum(grown.values()) >= expected

        asyncio.run(until(settled, within_s=120, every_s=0.5))
        return grown

    start = {r: answered_by(r) for r in replicas}
    answered(16)
    grown = counted(16, start)
    assert sum(grown.values()) == 16 and all(grown.values()), grown  # 2 × 2⁻¹⁶ that one got none
    podman("stop", "-t", "10", SECOND)
    start = {replicas[0]: answered_by(replicas[0])}
    answered(8)  # each one, whichever address nginx tries first
    assert counted(8, start) == {replicas[0]: 8}
