"""Write the configuration reference of docs/DEPLOYMENT.md from the settings (groupqwen/config/reference.py).

    .venv/bin/python scripts/gen_config_reference.py          # rewrite the part between the markers
    .venv/bin/python scripts/gen_config_reference.py --check  # exit 1 if it is stale

Change a field's description or default in groupqwen/config/, then run this (and gen_config_example.py).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from groupqwen.config.reference import replace_in

DOCUMENT = Path(__file__).resolve().parent.parent / "docs" / "DEPLOYMENT.md"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="exit 1 if the reference differs, write nothing")
    parser.add_argument("--document", type=Path, default=DOCUMENT, help="default: %(default)s")
    args = parser.parse_args()
    current = args.document.read_text(encoding="utf-8")
    text = replace_in(current)
    if args.check:
        if current != text:
            print(f"{args.document} is stale: run scripts/gen_config_reference.py", file=sys.stderr)
            return 1
        return 0
    args.document.write_text(text, encoding="utf-8")
    print(f"wrote {args.document}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
