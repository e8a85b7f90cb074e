"""Write config.example.yaml from the settings (groupqwen/config/example.py renders it).

    .venv/bin/python scripts/gen_config_example.py          # rewrite the file
    .venv/bin/python scripts/gen_config_example.py --check  # exit 1 if the file is stale

Change a field's description or default in groupqwen/config/, then run this; never edit the file by hand.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from groupqwen.config.example import render

EXAMPLE = Path(__file__).resolve().parent.parent / "config.example.yaml"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="exit 1 if the file differs, write nothing")
    parser.add_argument("--output", type=Path, default=EXAMPLE, help="where to write (default: %(default)s)")
    args = parser.parse_args()
    text = render()
    if args.check:
        current = args.output.read_text(encoding="utf-8") if args.output.is_file() else ""
        if current != text:
            print(f"{args.output} is stale: run scripts/gen_config_example.py", file=sys.stderr)
            return 1
        return 0
    args.output.write_text(text, encoding="utf-8")
    print(f"wrote {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
