"""The configuration reference of docs/DEPLOYMENT.md, rendered from the settings themselves.

One table row per field of ``Settings`` and of its sections: the dotted setting, its environment variable
(``GROUPQWEN_`` + the path in capitals, nested with ``__``), its default and its description. Entries of a
mapping (``models.<id>``) are written with a placeholder; the fields of a list's items (``router.tiers``)
have no variable of their own: the list is set whole, as JSON. ``scripts/gen_config_reference.py`` writes
the part of docs/DEPLOYMENT.md between the markers; ``tests/test_docs.py`` fails when it is stale.
"""

from __future__ import annotations

import typing
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from pydantic import BaseModel
from pydantic.fields import FieldInfo
from pydantic_core import to_jsonable_python

from groupqwen.config.example import _default, _entries_of, _model_class, _scalar
from groupqwen.config.settings import ENV_PREFIX, Settings

START = "<!-- config-reference:start (scripts/gen_config_reference.py writes this part) -->"
END = "<!-- config-reference:end -->"


def render() -> str:
    """The reference: an introduction, then one table per section (the top-level fields first)."""
    lines = [
        START,
        "",
        "Every setting can be given in the YAML file (`groupqwen serve -c FILE`) or as an environment "
        f"variable (`{ENV_PREFIX}` + its path in capitals, sections nested with `__`), which wins over the "
        f'file. A list is given as JSON (`{ENV_PREFIX}ROUTER__TIERS=\'[{{"model": "qwen3-8b"}}]\'`). '
        f"Model ids with `.` or `-` are written with `_` in a variable "
        f"(`{ENV_PREFIX}MODELS__QWEN3_8B__N_CTX=8192`).",
        "",
    ]
    for title, rows in _tables():
        lines += [f"#### {title}", "", "| Setting | Environment variable | Default | Meaning |"]
        lines.append("|---|---|---|---|")
        lines += [f"| `{path}` | {env} | {default} | {_cell(text)} |" for path, env, default, text in rows]
        lines.append("")
    lines.append(END)
    return "\n".join(lines) + "\n"


Row = tuple[str, str, str, str]


def _tables() -> Iterator[tuple[str, list[Row]]]:
    top: list[Row] = []
    sections: list[tuple[str, list[Row]]] = []
    for name, info in Settings.model_fields.items():
        section = _model_class(info.annotation)
        entries = _entries_of(info.annotation)
        if section is not None:
            sections.append((f"`{name}:`", list(_rows(section, name, name.upper()))))
        elif entries is not None:
            rows = [_row(name, name.upper(), info), *_entry_rows(name, name.upper(), info)]
            sections.append((f"`{name}:`", rows))
        else:
            top.append(_row(name, name.upper(), info))
    yield "Top level", top
    yield from sections


def _rows(model: type[BaseModel], path: str, env: str | None) -> Iterator[Row]:
    for name, info in model.model_fields.items():
        dotted, variable = f"{path}.{name}", (f"{env}__{name.upper()}" if env is not None else None)
        section = _model_class(info.annotation)
        if section is not None:
            yield _row(dotted, variable, info, section=True)
            yield from _rows(section, dotted, variable)
        else:
            yield _row(dotted, variable, info)
            yield from _entry_rows(dotted, variable, info)


def _entry_rows(path: str, env: str | None, info: FieldInfo) -> Iterator[Row]:
    """The fields of a mapping's entries (``models.<id>.path``) or of a list's items
    (``router.tiers[].model``)."""
    entries = _entries_of(info.annotation)
    if entries is None:
        return
    if typing.get_origin(info.annotation) is dict:
        key = "<id>" if path == "models" else "<name>"
        yield from _rows(entries, f"{path}.{key}", f"{env}__{key.upper()}" if env is not None else None)
    else:
        yield from _rows(entries, f"{path}[]", None)


def _row(path: str, env: str | None, info: FieldInfo, *, section: bool = False) -> Row:
    variable = f"`{ENV_PREFIX}{env}`" if env is not None else "(in the list's JSON)"
    return path, variable, "(a section)" if section else _default_text(info), info.description or ""


def _default_text(info: FieldInfo) -> str:
    if info.is_required():
        return "(required)"
    value: Any = _default(info)
    if isinstance(value, Path) and info.default_factory is not None:
        return "(computed: see meaning)"
    if isinstance(value, BaseModel):
        return "(a section)"
    text = _scalar(to_jsonable_python(value))
    return f"`{_cell(text)}`"


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def replace_in(document: str) -> str:
    """``document`` with its reference (between the markers) rendered anew."""
    if START not in document or END not in document:
        raise ValueError(f"the document has no reference markers ({START} … {END})")
    before, rest = document.split(START, 1)
    after = rest.split(END, 1)[1]
    return before + render().removesuffix("\n") + after
