"""``config.example.yaml``, rendered from the settings themselves so that it cannot drift from them.

Every field of ``Settings`` and of its sections appears with its description (as comments) and its default
(a default computed where the gateway runs, such as ``models_dir``, is written ``null``, which means that
default). A field whose values are entries of a section (``models: {<id>: ModelConfig}``) is written empty,
followed by a commented template listing every field of an entry and by the field's ``examples``.
``scripts/gen_config_example.py`` writes the file; ``tests/test_config.py`` fails when it is stale.
"""

from __future__ import annotations

import textwrap
import typing
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel
from pydantic.fields import FieldInfo

from groupqwen.config.settings import ENV_PREFIX, Settings

WIDTH = 110
HEADER = f"""\
# GroupQwen configuration: every setting, with its default. Every field is optional.
# Generated from the settings (groupqwen/config/) by scripts/gen_config_example.py: change a field's
# description there, not here (tests/test_config.py fails when this file is stale).
# Any field can also be set with an environment variable: {ENV_PREFIX}<FIELD>, nested with __
# ({ENV_PREFIX}CACHE__BACKEND=redis, {ENV_PREFIX}MODELS__QWEN3_8B__PATH=/models/Qwen3-8B-Q4_K_M.gguf).
# Check a file with: groupqwen config check config.yaml
"""


def render() -> str:
    """The text of ``config.example.yaml``."""
    return HEADER + "\n" + "\n".join(_section(Settings, None, indent=0, top=True))


def _scalar(value: Any) -> str:
    if isinstance(value, Path):
        value = str(value)
    text = yaml.safe_dump(value, default_flow_style=True, width=10_000, allow_unicode=True).strip()
    return text.removesuffix("\n...").removesuffix("...").strip()


def _comment(text: str | None, indent: int) -> list[str]:
    if not text:
        return []
    pad = " " * indent
    return [pad + "# " + line for line in textwrap.wrap(text, WIDTH - indent - 2, break_on_hyphens=False)]


def _model_class(annotation: Any) -> type[BaseModel] | None:
    return annotation if isinstance(annotation, type) and issubclass(annotation, BaseModel) else None


def _entries_of(annotation: Any) -> type[BaseModel] | None:
    """``dict[str, M]`` or ``list[M]`` with ``M`` a section: ``M``."""
    if typing.get_origin(annotation) in (dict, list):
        return _model_class(typing.get_args(annotation)[-1])
    return None


def _default(info: FieldInfo) -> Any:
    if info.default_factory is None:
        return info.default
    return info.default_factory()  # type: ignore[call-arg]


def _section(
    model: type[BaseModel], values: BaseModel | None, *, indent: int, top: bool = False
) -> list[str]:
    """The fields of ``model`` (with ``values``' values where given, else the defaults)."""
    lines: list[str] = []
    for name, info in model.model_fields.items():
        if top and lines:
            lines.append("")
        lines += _comment(info.description, indent)
        lines += _field(name, info, getattr(values, name) if values is not None else _default(info), indent)
    return lines


def _field(name: str, info: FieldInfo, value: Any, indent: int) -> list[str]:
    pad = " " * indent
    section = _model_class(info.annotation)
    entries = _entries_of(info.annotation)
    if section is not None:
        return [f"{pad}{name}:", *_section(section, value, indent=indent + 2)]
    if entries is not None and isinstance(value, list) and value:
        return [f"{pad}{name}:", *_items(entries, value, indent + 2)]
    if entries is not None and isinstance(value, dict):
        lines = [f"{pad}{name}: {_scalar(value) if not value else ''}".rstrip()]
        for key, entry in value.items():
            lines += [f"{pad}  {key}:", *_section(entries, entry, indent=indent + 4)]
        lines += [f"{pad}# {line}" for line in _template(entries, name)]
        lines += _examples(name, info, indent)
        return lines
    if isinstance(value, Path) and info.default_factory is not None:
        value = None  # a location computed where the gateway runs: null means it
    if isinstance(value, dict) and value:
        lines = [f"{pad}{name}:"] + [f"{pad}  {_scalar(k)}: {_scalar(v)}" for k, v in value.items()]
        return lines + _examples(name, info, indent)
    return [f"{pad}{name}: {_scalar(value)}", *_examples(name, info, indent)]


def _items(model: type[BaseModel], items: list[BaseModel], indent: int) -> list[str]:
    """A list of sections: the first item with every field described, the others with what they set."""
    lines: list[str] = []
    for i, item in enumerate(items):
        body = (
            _section(model, item, indent=indent + 2)
            if i == 0
            else [f"{' ' * (indent + 2)}{k}: {_scalar(v)}" for k, v in _set_fields(item)]
        )
        first = next(n for n, line in enumerate(body) if not line.lstrip().startswith("#"))
        body[:first] = [line[2:] for line in body[:first]]  # its comments stand above the "- "
        body[first] = " " * indent + "- " + body[first].lstrip()
        lines += body
    return lines


def _set_fields(item: BaseModel) -> Iterator[tuple[str, Any]]:
    for name, info in type(item).model_fields.items():
        value = getattr(item, name)
        if info.is_required() or value != _default(info):
            yield name, value


def _template(model: type[BaseModel], name: str) -> list[str]:
    """An entry of ``name`` with every field (commented by the caller)."""
    lines = [f"<{'id' if name == 'models' else 'name'}>:"]
    for field, info in model.model_fields.items():
        lines += _comment(info.description, 2)
        lines.append(f"  {field}: {_scalar(_default(info))}")
    return lines


def _examples(name: str, info: FieldInfo, indent: int) -> list[str]:
    lines: list[str] = []
    for example in info.examples or ():
        lines.append(" " * indent + "# for example:")
        text = yaml.safe_dump({name: example}, sort_keys=False, default_flow_style=False, width=WIDTH)
        lines += [" " * indent + "# " + line for line in text.splitlines()[1:]]
    return lines
