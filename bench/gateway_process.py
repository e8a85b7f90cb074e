"""A `groupqwen serve` subprocess for the benchmarks that measure the gateway over real HTTP."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx


@contextmanager
def gateway_process(settings: dict[str, str], timeout_s: float = 300) -> Iterator[httpx.Client]:
    """`groupqwen serve` on a free loopback port with ``settings`` as ``GROUPQWEN_<NAME>`` variables on top
    of this environment, and a client that keeps its connection open (as SDKs do), once /health answers."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    env = {**os.environ, "GROUPQWEN_PORT": str(port), "GROUPQWEN_LOG_LEVEL": "warning"}
    env |= {f"GROUPQWEN_{name.upper()}": value for name, value in settings.items()}
    process = subprocess.Popen([str(Path(sys.executable).with_name("groupqwen")), "serve"], env=env)
    url = f"http://127.0.0.1:{port}"
    try:
        for _ in range(600):
            try:
                if httpx.get(url + "/health", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                time.sleep(0.1)
        with httpx.Client(base_url=url, timeout=timeout_s) as client:
            yield client
    finally:
        process.terminate()
        process.wait(timeout=30)
