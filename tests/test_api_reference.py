"""docs/API_REFERENCE.md: generated (fails when stale), complete (every operation of the OpenAPI document
has an example, every example a status its operation declares), and true: every example of
docs/api_reference.yaml is sent, in order, to a live ``groupqwen serve`` with the bundled models (the
gateway ``make run`` starts), and its answer must have the documented status and shape."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from servers import default_serve

from groupqwen.api import reference
from groupqwen.api.app import create_app
from groupqwen.api.reference import Example
from groupqwen.config import load_settings

REPO = Path(__file__).resolve().parent.parent
EXAMPLES = reference.load().examples
EXACT = {"object", "type", "code", "param"}  # keys whose documented values are the answer's own


def schema() -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as folder:
        return create_app(load_settings(models_dir=Path(folder), data_dir=Path(folder))).openapi()


def test_the_reference_is_what_the_script_writes() -> None:
    result = subprocess.run(
        [sys.executable, "scripts/gen_api_reference.py", "--check"],
        cwd=REPO,
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stderr


def test_every_operation_has_an_example_and_every_example_an_operation() -> None:
    operations = {f"{method} {path}": op for method, path, op in reference.operations(schema())}
    documented = {example.operation for example in EXAMPLES}
    assert sorted(set(operations) - documented) == [], "operations without an example"
    assert sorted(documented - set(operations)) == [], "examples of no operation"
    for example in EXAMPLES:
        assert str(example.status) in operations[example.operation]["responses"], example.title
        template = example.operation.split(" ", 1)[1]
        pattern = re.sub(r"\\\{\w+\\\}", "[^/]+", re.escape(template)) + r"(\?.*)?"
        assert re.fullmatch(pattern, example.path), f"{example.path} is not {template}"


def test_every_error_class_is_in_the_table() -> None:
    text = (REPO / "docs/API_REFERENCE.md").read_text(encoding="utf-8")
    for cls in reference.error_classes():
        if cls.passed_through:  # status, type and code are the model server's own
            row = f"| the server's | the server's | the server's | `{cls.__name__}` |"
        else:
            row = f"| {cls.status_code} | `{cls.code or 'null'}` | `{cls.error_type}` | `{cls.__name__}` |"
        assert row in text
    upstream = next(line for line in text.splitlines() if "`UpstreamError`" in line)
    assert "a bug" not in upstream  # the internal error's text (code null) is not the upstream's


# -- the shape rules of docs/api_reference.yaml's header


def shape_mismatches(documented: Any, actual: Any, where: str = "") -> list[str]:
    if documented is None:
        return []
    if isinstance(documented, dict):
        if not isinstance(actual, dict):
            return [f"{where or '.'}: an object was documented, got {actual!r:.80}"]
        found: list[str] = []
        for key, value in documented.items():
            if key not in actual:
                found.append(f"{where}.{key}: missing")
            elif key in EXACT and not isinstance(value, dict | list) and value != actual[key]:
                found.append(f"{where}.{key}: {actual[key]!r} instead of {value!r}")
            else:
                found += shape_mismatches(value, actual[key], f"{where}.{key}")
        return found
    if isinstance(documented, list):
        if not isinstance(actual, list) or len(actual) < len(documented):
            return [f"{where}: a list of {len(documented)} or more was documented, got {actual!r:.80}"]
        pairs = enumerate(zip(documented, actual, strict=False))
        return [m for i, (item, got) in pairs for m in shape_mismatches(item, got, f"{where}[{i}]")]
    numbers = (int, float)
    if isinstance(documented, bool) or isinstance(actual, bool):
        same = type(documented) is type(actual)
    elif isinstance(documented, numbers):
        same = isinstance(actual, numbers)
    else:
        same = isinstance(actual, type(documented))
    return [] if same else [f"{where}: {type(documented).__name__} documented, got {actual!r:.80}"]


def line_matches(documented: str, actual: str) -> bool:
    for prefix in ("data: ", ""):
        if documented.startswith(prefix + "{") and actual.startswith(prefix + "{"):
            try:
                wanted, got = json.loads(documented[len(prefix) :]), json.loads(actual[len(prefix) :])
            except json.JSONDecodeError:
                return False
            return not shape_mismatches(wanted, got)
    if documented.endswith("…"):
        return actual.startswith(documented[:-1])
    return documented == actual


def text_mismatches(documented: str, actual: str) -> list[str]:
    """Each documented line, in order, among the answer's lines."""
    lines = iter(actual.splitlines())
    for wanted in (line for line in documented.splitlines() if line.strip()):
        if not any(line_matches(wanted, line) for line in lines):
            return [f"no line like {wanted[:120]!r} (in order) in:\n{actual[:3000]}"]
    return []


def test_the_shape_rules_catch_what_they_must() -> None:
    assert shape_mismatches({"a": 1, "object": "x"}, {"a": 2.5, "object": "x", "b": 0}) == []
    assert shape_mismatches({"a": 1}, {}) == [".a: missing"]
    assert shape_mismatches({"object": "list"}, {"object": "model"})
    assert shape_mismatches({"a": "s"}, {"a": 1}) and shape_mismatches({"a": True}, {"a": 1})
    assert shape_mismatches({"a": [1, 2]}, {"a": [1]}) and not shape_mismatches({"a": None}, {"a": [1]})
    assert text_mismatches('x\ndata: {"a": 1}\nz…', 'w\nx\ndata: {"a": 5, "b": 1}\nzed') == []
    assert text_mismatches("b\na", "a\nb")  # order counts


# -- the examples against a live gateway


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """``groupqwen serve`` as ``make run`` starts it (the bundled models, the default settings) on a free
    port, its data in a fresh folder."""
    data = tmp_path_factory.mktemp("api-reference")
    log = tmp_path_factory.mktemp("api-reference-log") / "serve.log"
    command = [sys.executable, "-c", "from groupqwen.cli.main import app; app()", "serve"]
    with default_serve(command, data, log) as (port, _):
        yield f"http://127.0.0.1:{port}"


def send(client: httpx.Client, example: Example, names: dict[str, str]) -> httpx.Response:
    path = reference.fill(example.path, names)
    files = None
    if example.file is not None:
        files = {"file": (example.file["name"], example.file["text"].encode())}
    content = None if example.body is None else example.body.encode()
    headers = {} if example.content_type is None else {"content-type": example.content_type}
    return client.request(
        example.method,
        path,
        json=reference.fill(example.json, names),
        content=content,
        headers=headers,
        data=example.form or None,
        files=files,
    )


@pytest.fixture(scope="module")
def answers(served: str) -> list[httpx.Response]:
    """Every example's answer (the last, for one sent ``repeat`` times), in the document's order."""
    names: dict[str, str] = {}
    found: list[httpx.Response] = []
    with httpx.Client(base_url=served, timeout=600) as client:
        for example in EXAMPLES:
            for _ in range(example.repeat):
                answer = send(client, example, names)
            found.append(answer)
            for name, path in example.save.items():
                if answer.status_code == example.status:
                    names[name] = str(reference.dotted(answer.json(), path))
    return found


@pytest.mark.parametrize("index", range(len(EXAMPLES)), ids=[e.title for e in EXAMPLES])
def test_the_example_holds(answers: list[httpx.Response], index: int) -> None:
    example, answer = EXAMPLES[index], answers[index]
    assert answer.status_code == example.status, answer.text[:2000]
    if example.binary is not None:
        assert answer.headers["content-type"].startswith(example.binary)
        assert answer.content
    elif example.text is not None:
        assert text_mismatches(example.text, answer.text) == []
    else:
        assert shape_mismatches(example.response, answer.json()) == [], answer.text[:2000]
