"""The ``main`` of the scripts that write a generated file (gen_config_example.py, gen_config_reference.py,
gen_openapi.py, gen_api_reference.py): write it, or with ``--check`` exit 1 when the file differs from what
would be written."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from pathlib import Path


def main(description: str, target: Path, render: Callable[[str], str], *, flag: str | None = None) -> int:
    """``render(current text)`` (``""`` when the file is missing) is the file as it should be; ``flag`` is
    the option that names another file to write instead of ``target`` (none: only ``target``)."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--check", action="store_true", help="exit 1 if the file differs, write nothing")
    if flag is not None:
        parser.add_argument(flag, dest="target", type=Path, default=target, help="default: %(default)s")
    args = parser.parse_args()
    path: Path = getattr(args, "target", target)
    current = path.read_text(encoding="utf-8") if path.is_file() else ""
    text = render(current)
    script = Path(sys.argv[0]).name
    if args.check:
        if current != text:
            print(f"{path} is stale: run scripts/{script}", file=sys.stderr)
            return 1
        return 0
    path.write_text(text, encoding="utf-8")
    print(f"wrote {path}")
    return 0
