"""docs/API_REFERENCE.md, rendered from the OpenAPI document, ``errors.py`` and docs/api_reference.yaml.

Every operation of the schema gets its section: what it does (the route's docstring), the access it needs
(``auth.RULES``), its parameters and body, the statuses it answers, and its examples from the YAML file
(a ``curl`` command and the answer). The errors section is every ``GroupQwenError`` class with its status,
type and code, its docstring, and the YAML file's details for its code. ``scripts/gen_api_reference.py``
writes the document; tests/test_api_reference.py fails when it is stale and sends every example to a live
gateway (the YAML file's header says how an answer is compared with its example).
"""

from __future__ import annotations

import json
import re
import shlex
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from groupqwen import errors
from groupqwen.api.auth import RULES

DATA = Path(__file__).resolve().parents[2] / "docs" / "api_reference.yaml"
BASE_URL = "http://127.0.0.1:8000"

# the document's sections, in order: a title and the path prefixes of its operations
SECTIONS = (
    ("Health", ("/health", "/v1/health")),
    ("Models", ("/v1/models",)),
    ("Chat and text completions", ("/v1/chat/completions", "/v1/completions")),
    ("Responses", ("/v1/responses",)),
    ("Embeddings", ("/v1/embeddings",)),
    ("Cache", ("/v1/cache",)),
    ("Metrics", ("/v1/metrics", "/metrics")),
    ("Review (fine-tuning data)", ("/v1/review",)),
    ("Fine-tuning", ("/v1/files", "/v1/fine_tuning", "/v1/finetune")),
)
_ACCESS = {
    "public": "none (a health probe)",
    "key": "any valid key",
    "operator": "the `admin` scope on a key of the `default` tenant (acts on the whole gateway)",
}


INTRO = """# API reference

<!-- Written by scripts/gen_api_reference.py from the gateway's OpenAPI document, groupqwen/errors.py and
     docs/api_reference.yaml: edit those, then run the script. -->

Every HTTP endpoint of the gateway, with examples, and every error it answers. The test suite sends the
examples to a live gateway serving the bundled models (tests/test_api_reference.py) and checks each
answer's status and shape against what is shown here; values such as ids, times and what a model writes
vary. How the OpenAI endpoints behave in detail (every field, tools, thinking, images, translation,
headers) and the WebSocket API (`GET /v1/ws`) are in [api.md](api.md); a running gateway also serves this
schema at `/openapi.json` and as Swagger UI at `/docs`.

With `auth: keys`, every request but the health probes carries `Authorization: Bearer gq-…` with the
access each endpoint names ([security.md](security.md)); without it (`auth: off`, the default on
127.0.0.1) none is needed, as in the examples.

"""


@dataclass(frozen=True)
class Example:
    """One request of docs/api_reference.yaml and the answer it documents."""

    operation: str  # "POST /v1/chat/completions", as the OpenAPI document names it
    title: str
    path: str
    status: int
    json: Any = None
    body: str | None = None
    content_type: str | None = None
    form: dict[str, str] = field(default_factory=dict)
    file: dict[str, str] | None = None
    response: Any = None
    text: str | None = None
    binary: str | None = None
    save: dict[str, str] = field(default_factory=dict)
    note: str | None = None
    repeat: int = 1

    @property
    def method(self) -> str:
        return self.operation.split(" ", 1)[0]


@dataclass(frozen=True)
class Reference:
    examples: list[Example]
    error_details: dict[str, str]  # code → Markdown: when it is answered


def load(path: Path = DATA) -> Reference:
    data = yaml.safe_load(path.read_text(encoding="utf-8"))
    return Reference([Example(**item) for item in data["examples"]], dict(data.get("error_details") or {}))


def fill(value: Any, names: dict[str, str]) -> Any:
    """``value`` with every ``{name}`` of a saved value replaced (in strings, lists and objects)."""
    if isinstance(value, str):
        return re.sub(r"\{(\w+)\}", lambda m: names.get(m.group(1), m.group(0)), value)
    if isinstance(value, list):
        return [fill(v, names) for v in value]
    if isinstance(value, dict):
        return {k: fill(v, names) for k, v in value.items()}
    return value


def dotted(value: Any, path: str) -> Any:
    for part in path.split("."):
        value = value[int(part)] if isinstance(value, list) else value[part]
    return value


def documented_names(examples: list[Example]) -> dict[str, str]:
    """The values the examples save, as their documented answers show them."""
    names: dict[str, str] = {}
    for example in examples:
        for name, path in example.save.items():
            names[name] = str(dotted(example.response, path))
    return names


def operations(schema: dict[str, Any]) -> Iterator[tuple[str, str, dict[str, Any]]]:
    for path, methods in schema["paths"].items():
        for method, operation in methods.items():
            yield method.upper(), path, operation


def section_of(path: str) -> str:
    for title, prefixes in SECTIONS:
        if any(path == p or path.startswith(p + "/") for p in prefixes):
            return title
    raise ValueError(f"{path} belongs to no section of the API reference: add it to SECTIONS")


def render(schema: dict[str, Any], reference: Reference) -> str:
    names = documented_names(reference.examples)
    lines = INTRO.splitlines()
    grouped: dict[str, list[tuple[str, str, dict[str, Any]]]] = {title: [] for title, _ in SECTIONS}
    for method, path, operation in operations(schema):
        grouped[section_of(path)].append((method, path, operation))
    lines += ["## Endpoints", ""]
    for title, entries in grouped.items():
        lines.append(f"- {title}: " + ", ".join(f"[`{m} {p}`](#{_anchor(m, p)})" for m, p, _ in entries))
    lines += ["- [Errors](#errors)", ""]
    for title, entries in grouped.items():
        lines += [f"## {title}", ""]
        for method, path, operation in entries:
            examples = [e for e in reference.examples if e.operation == f"{method} {path}"]
            lines += _operation(schema, method, path, operation, examples, names)
    lines += _errors(reference.error_details)
    return "\n".join(lines).rstrip("\n") + "\n"


def _anchor(method: str, path: str) -> str:
    return re.sub(r"[^a-z0-9 _-]", "", f"{method} {path}".lower()).replace(" ", "-")


def _operation(
    schema: dict[str, Any],
    method: str,
    path: str,
    operation: dict[str, Any],
    examples: list[Example],
    names: dict[str, str],
) -> list[str]:
    lines = [f"### `{method} {path}`", ""]
    text = operation.get("description") or operation.get("summary", "")
    lines += [_paragraph(text), ""]
    rule = {(m, p.replace(":path}", "}")): r for (m, p), r in RULES.items()}[(method, path)]
    lines += [f"Access: {_ACCESS.get(rule, f'the `{rule}` scope')}.", ""]
    parameters = operation.get("parameters", [])
    if parameters:
        lines += ["| parameter | in | type | default | meaning |", "|---|---|---|---|---|"]
        for p in parameters:
            kind = p["schema"].get("type", "string")
            if "enum" in p["schema"]:
                kind = " \\| ".join(f"`{v}`" for v in p["schema"]["enum"])
            default = p["schema"].get("default", "required" if p.get("required") else "")
            meaning = _paragraph(p.get("description") or p["schema"].get("description", ""))
            lines.append(f"| `{p['name']}` | {p['in']} | {kind} | {_code(default)} | {meaning} |")
        lines.append("")
    body = operation.get("requestBody")
    if body is not None:
        lines += [_body(schema, body), ""]
    statuses = ", ".join(
        f"{status} ({answer['description'].rstrip('.')})" if status != "200" else "200"
        for status, answer in operation["responses"].items()
    )
    lines += [f"Answers: {statuses}.", ""]
    for example in examples:
        lines += _example(example, names)
    return lines


def _body(schema: dict[str, Any], body: dict[str, Any]) -> str:
    (media_type, content), *_ = body["content"].items()
    ref = content["schema"].get("$ref")
    if ref is None:
        return f"Body: `{media_type}`."
    name = ref.rsplit("/", 1)[1]
    model = schema["components"]["schemas"][name]
    required = set(model.get("required", []))
    fields = ", ".join(f"`{f}`" + (" (required)" * (f in required)) for f in model.get("properties", {}))
    return f"Body: `{media_type}`, {name}: {fields}."


def _example(example: Example, names: dict[str, str]) -> list[str]:
    lines = [f"#### Example: {example.title}", ""]
    if example.note:
        lines += [_paragraph(example.note), ""]
    lines += ["```sh", curl(example, names), "```", ""]
    shown = f"{example.status}"
    if example.binary is not None:
        return [*lines, f"→ {shown}, `{example.binary}`", ""]
    lines += [f"→ {shown}", ""]
    if example.text is not None:
        return [*lines, "```", example.text.rstrip("\n"), "```", ""]
    shown_json = json.dumps(fill(example.response, names), indent=2, ensure_ascii=False)
    return [*lines, "```json", shown_json, "```", ""]


def curl(example: Example, names: dict[str, str]) -> str:
    """The example as a ``curl`` command against ``BASE_URL`` (saved values as documented)."""
    url = BASE_URL + fill(example.path, names)
    words = ["curl", "-sS"]
    if example.text is not None:
        words.append("-N")  # a stream's events as they come
    if example.method not in ("GET", "POST") or (
        example.method == "POST" and example.json is None and example.body is None and not example.form
    ):
        words += ["-X", example.method]
    words.append(shlex.quote(url))
    if example.binary is not None:
        words += ["-o", "dataset.zip"]
    tail = ""
    if example.json is not None:
        words += ["-H", shlex.quote("Content-Type: application/json")]
        words += ["-d", shlex.quote(json.dumps(fill(example.json, names), ensure_ascii=False))]
    elif example.body is not None:
        words += ["-H", shlex.quote(f"Content-Type: {example.content_type}"), "--data-binary", "@-"]
        tail = " <<'EOF'\n" + example.body.rstrip("\n") + "\nEOF"
    for key, value in example.form.items():
        words += ["-F", shlex.quote(f"{key}={value}")]
    if example.file is not None:
        words += ["-F", shlex.quote(f"file=@{example.file['name']}")]
    command = " ".join(words) + tail
    if example.file is not None:
        content = example.file["text"].rstrip("\n")
        command = f"cat > {example.file['name']} <<'EOF'\n{content}\nEOF\n{command}"
    if example.repeat > 1:
        command = f"for i in {' '.join(str(i + 1) for i in range(example.repeat))}; do {command}; done"
    return command


def error_classes() -> list[type[errors.GroupQwenError]]:
    """Every error class, depth first from ``GroupQwenError`` (the order of ``errors.py``'s tree)."""
    found: list[type[errors.GroupQwenError]] = []

    def walk(cls: type[errors.GroupQwenError]) -> None:
        found.append(cls)
        for sub in cls.__subclasses__():
            if sub.__module__ == errors.__name__:
                walk(sub)

    walk(errors.GroupQwenError)
    return found


def _errors(details: dict[str, str]) -> list[str]:
    lines = [
        "## Errors",
        "",
        'Every error is `{"error": {"message", "type", "param", "code"}}` with the status below; `param`',
        "names the field at fault where there is one. An error after a stream has started arrives as a last",
        '`data: {"error": …}` event before `data: [DONE]` (the `openai` SDK raises it as `APIError`); a',
        "client that disconnects mid-stream stops the generation. Each error is a class of",
        "`groupqwen/errors.py`:",
        "",
        "| status | `code` | `type` | class | meaning |",
        "|---|---|---|---|---|",
    ]
    for cls in sorted(error_classes(), key=lambda c: c.status_code):
        own = cls.__dict__.get("__doc__") if cls is not errors.GroupQwenError else None  # a base's is not
        detail = None if cls.passed_through else details.get(cls.code or "null")
        meaning = " ".join(_paragraph(t) for t in (own, detail) if t).replace("|", "\\|")
        if cls.passed_through:
            status, code, kind = "the server's", "the server's", "the server's"
        else:
            status, code, kind = (
                str(cls.status_code),
                f"`{cls.code}`" if cls.code else "`null`",
                f"`{cls.error_type}`",
            )
        lines.append(f"| {status} | {code} | {kind} | `{cls.__name__}` | {meaning} |")
    unknown = sorted(set(details) - {cls.code or "null" for cls in error_classes()})
    if unknown:
        raise ValueError(f"error_details name codes no error class has: {', '.join(unknown)}")
    return [*lines, ""]


def _paragraph(text: str) -> str:
    """Docstring or YAML text on one line (the tables need it), with ``double`` backticks made single."""
    return " ".join(text.replace("``", "`").split())


def _code(value: Any) -> str:
    if value in ("", "required"):
        return str(value)
    return f"`{json.dumps(value)}`"
