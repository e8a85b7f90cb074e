"""The deployment files, checked by the tools their formats have (installed by ``make``: hadolint,
shellcheck and Docker Compose from the dev extra, Debian's nginx): the compose file validates with the
variables of .env.example, the Dockerfiles pass hadolint, nginx accepts the proxy's configuration, the gateway
accepts its container configuration, deploy.sh passes shellcheck and its ``--check`` names what is wrong.
No image is built here (no registry of base images is reachable): docs/DEPLOYMENT.md says what was run."""

from __future__ import annotations

import json
import os
import re
import socket
import subprocess
from pathlib import Path

import httpx
import pytest
from typer.testing import CliRunner
from waiting import wait_until
from websockets.sync.client import connect

from deploy.deploy_tools import ROOT, TOOLS, tool
from groupqwen.access.keys import generate_key
from groupqwen.cli.main import app
from groupqwen.testing import serve_process

PASSWORD = "abcdef0123456789"


def env_file(tmp_path: Path, **values: str) -> Path:
    """.env.example with its two secrets filled in (and ``values`` on top)."""
    text = (ROOT / ".env.example").read_text(encoding="utf-8")
    values = {
        "GROUPQWEN_ADMIN_KEY": generate_key(),
        "POSTGRES_PASSWORD": PASSWORD,
        "DEPLOY_MIN_DISK_GB": "1",
        **values,
    }
    for name, value in values.items():
        text, found = re.subn(rf"^{name}=.*$", f"{name}={value}", text, flags=re.M)
        assert found == 1, name
    path = tmp_path / ".env"
    path.write_text(text, encoding="utf-8")
    return path


def run(*command: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    environment = {**os.environ, "PATH": f"{TOOLS}{os.pathsep}{os.environ.get('PATH', '')}", **(env or {})}
    return subprocess.run(
        command, cwd=ROOT, capture_output=True, text=True, timeout=120, env=environment, check=False
    )


def compose(env: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return run(tool("docker-compose"), "--env-file", str(env), "-f", "docker-compose.yml", *args)


def test_compose_file_validates_with_every_profile(tmp_path: Path) -> None:
    env = env_file(tmp_path)
    plain = compose(env, "config", "--services")
    assert plain.returncode == 0, plain.stderr
    assert set(plain.stdout.split()) == {"gateway", "frontend", "redis", "postgres"}
    gpu = compose(env, "--profile", "gpu", "config", "--format", "json")
    assert gpu.returncode == 0, gpu.stderr
    services = json.loads(gpu.stdout)["services"]
    assert services["gateway"]["deploy"]["replicas"] >= 2
    devices = services["vllm"]["deploy"]["resources"]["reservations"]["devices"]
    assert devices[0]["capabilities"] == ["gpu"]
    assert {"--served-model-name", "qwen3-8b"} <= set(services["vllm"]["command"])
    for name in ("gateway", "frontend", "redis", "postgres", "vllm"):
        assert services[name]["healthcheck"]["test"], name
    for name, needs in (("gateway", {"redis", "postgres"}), ("frontend", {"gateway"})):
        conditions = {dep: spec["condition"] for dep, spec in services[name]["depends_on"].items()}
        assert conditions == dict.fromkeys(needs, "service_healthy"), name
    gateway_env = services["gateway"]["environment"]
    assert gateway_env["GROUPQWEN_TELEMETRY__DATABASE_URL"].startswith(f"postgresql://groupqwen:{PASSWORD}@")


def test_compose_refuses_to_start_without_its_secrets(tmp_path: Path) -> None:
    env = env_file(tmp_path, GROUPQWEN_ADMIN_KEY="", POSTGRES_PASSWORD="")
    result = compose(env, "config", "--quiet")
    assert result.returncode != 0
    assert "set GROUPQWEN_ADMIN_KEY in .env (groupqwen keys generate)" in result.stderr
    assert "set POSTGRES_PASSWORD in .env" in result.stderr


def test_env_example_documents_every_variable_the_compose_file_reads() -> None:
    used = set(re.findall(r"\$\{([A-Z0-9_]+)", (ROOT / "docker-compose.yml").read_text(encoding="utf-8")))
    script = (ROOT / "scripts" / "deploy.sh").read_text(encoding="utf-8")
    used |= set(re.findall(r"\$\{([A-Z][A-Z0-9_]+):-", script))  # the settings it reads with a default
    lines = (ROOT / ".env.example").read_text(encoding="utf-8").splitlines()
    documented = {line.split("=")[0] for line in lines if re.match(r"^[A-Z0-9_]+=", line)}
    internal = {"DEPLOY_ENV_FILE"}  # deploy.sh's own, given on its command line's environment
    assert used - internal - documented == set()
    for i, line in enumerate(lines):  # each variable has a comment above it (or in its group's)
        if re.match(r"^[A-Z0-9_]+=", line):
            assert any(lines[j].startswith("#") for j in range(max(0, i - 3), i)), line


def test_dockerfiles_pass_hadolint() -> None:
    result = run(
        tool("hadolint"),
        "--no-color",
        "docker/Dockerfile",
        "docker/Dockerfile.frontend",
        "docker/Dockerfile.bases",
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_deploy_script_passes_shellcheck() -> None:
    result = run(tool("shellcheck"), "scripts/deploy.sh")
    assert result.returncode == 0, result.stdout


BROTLI = "/usr/lib/nginx/modules/ngx_http_brotli_filter_module.so"  # libnginx-mod-http-brotli-filter


def nginx_main(tmp_path: Path, site: Path) -> Path:
    """An nginx.conf with ``site`` inside an http block as the web UI's image has it (Debian's nginx with
    its brotli module loaded), everything it writes under ``tmp_path``."""
    mime = Path("/etc/nginx/mime.types")
    main = tmp_path / "nginx.conf"
    temp = " ".join(f"{kind}_temp_path {tmp_path / kind};" for kind in ("client_body", "proxy", "fastcgi"))
    main.write_text(
        f"load_module {BROTLI};\n"
        f"pid {tmp_path / 'nginx.pid'};\nerror_log stderr;\nevents {{}}\n"
        f"http {{\n  include {mime};\n  access_log off;\n  {temp}\n"
        f"  uwsgi_temp_path {tmp_path / 'uwsgi'}; scgi_temp_path {tmp_path / 'scgi'};\n"
        f"  include {site};\n}}\n",
        encoding="utf-8",
    )
    return main


def test_nginx_accepts_the_proxy_configuration(tmp_path: Path) -> None:
    """docker/nginx.conf as the web UI's image has it, checked with ``nginx -t``."""
    main = nginx_main(tmp_path, ROOT / "docker" / "nginx.conf")
    result = run(tool("nginx"), "-t", "-p", str(tmp_path), "-c", str(main))
    assert result.returncode == 0, result.stderr
    assert "test is successful" in result.stderr


def test_a_browsers_websocket_passes_nginx_on_a_port_of_its_own(tmp_path: Path) -> None:
    """A real nginx running docker/nginx.conf (the gateway's address and the port changed, as compose
    publishes it on 8080 by default) in front of a real ``groupqwen serve``: the WebSocket a page served
    there opens, with the ``Origin`` a browser sends (scheme, host and port), reaches the gateway's
    ``hello``. nginx used to pass ``Host`` without the port (``$host``), so the gateway's same-origin check
    refused every browser's upgrade (403) and the page fell back to SSE, without resume."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    (tmp_path / "gateway").mkdir()
    with serve_process(tmp_path / "gateway") as gateway:
        site = (ROOT / "docker" / "nginx.conf").read_text(encoding="utf-8")
        site = site.replace("set $gateway http://gateway:8000;", f"set $gateway {gateway.url};")
        site = site.replace("listen 8080;", f"listen 127.0.0.1:{port};")
        assert gateway.url in site and str(port) in site
        (tmp_path / "site.conf").write_text(site, encoding="utf-8")
        main = nginx_main(tmp_path, tmp_path / "site.conf")
        nginx = subprocess.Popen(
            [tool("nginx"), "-p", str(tmp_path), "-c", str(main), "-g", "daemon off;"],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
        )
        try:
            proxied = f"http://127.0.0.1:{port}"
            wait_until(lambda: _answers(proxied + "/nginx-health"), within_s=30)
            with connect(f"ws://127.0.0.1:{port}/v1/ws", origin=proxied, open_timeout=60) as ws:
                assert json.loads(ws.recv(timeout=60))["type"] == "hello"
        finally:
            nginx.terminate()
            nginx.wait(timeout=30)


def _answers(url: str) -> bool:
    try:
        return httpx.get(url, timeout=5).status_code == 200
    except httpx.TransportError:
        return False


def test_nginx_proxies_every_gateway_route_unbuffered() -> None:
    """What the gateway serves outside the UI reaches it: /v1/* (SSE unbuffered, WebSocket upgraded) and
    the top-level routes of the app."""
    conf = (ROOT / "docker" / "nginx.conf").read_text(encoding="utf-8")
    v1 = conf[conf.index("location /v1/ {") :]
    v1 = v1[: v1.index("}")]
    for directive in (
        "proxy_buffering off;",
        "proxy_set_header Upgrade $http_upgrade;",
        "proxy_set_header Connection $connection_upgrade;",
        "proxy_http_version 1.1;",
    ):
        assert directive in v1
    top = re.search(r"location ~ \^/\((.*?)\)\$", conf)
    assert top is not None
    assert set(top.group(1).replace("\\.", ".").split("|")) == {
        "health",
        "metrics",
        "docs",
        "redoc",
        "openapi.json",
    }


def test_the_gateway_accepts_its_container_configuration() -> None:
    result = CliRunner().invoke(app, ["config", "check", str(ROOT / "docker" / "groupqwen.yaml")])
    assert result.exit_code == 0, result.output
    assert "docker/groupqwen.yaml: ok" in result.output


def test_deploy_check_passes_with_a_complete_env_file(tmp_path: Path) -> None:
    env = env_file(tmp_path)
    result = run("bash", "scripts/deploy.sh", "--check", "--env-file", str(env))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "docker-compose.yml is valid" in result.stdout
    assert "nothing was started" in result.stdout


@pytest.mark.parametrize(
    ("values", "message"),
    [
        (
            {"GROUPQWEN_ADMIN_KEY": "letmein"},
            "is not a key: set it to the output of `groupqwen keys generate`",
        ),
        ({"POSTGRES_PASSWORD": "p@ss word!"}, "POSTGRES_PASSWORD in"),
        ({"DEPLOY_MIN_MEMORY_GB": "100000"}, "GiB of memory available: the stack needs 100000 GiB"),
    ],
    ids=["admin-key", "password", "memory"],
)
def test_deploy_check_names_what_is_wrong(tmp_path: Path, values: dict[str, str], message: str) -> None:
    env = env_file(tmp_path, **{k: f"'{v}'" for k, v in values.items()})
    result = run("bash", "scripts/deploy.sh", "--check", "--env-file", str(env))
    assert result.returncode == 1
    assert message in result.stderr


def test_deploy_check_without_an_env_file_says_how_to_make_one(tmp_path: Path) -> None:
    result = run("bash", "scripts/deploy.sh", "--check", "--env-file", str(tmp_path / ".env"))
    assert result.returncode == 1
    assert "cp .env.example .env" in result.stderr
