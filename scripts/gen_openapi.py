"""Write frontend/openapi.json, the gateway's OpenAPI schema the web UI's typed client is generated from.

    .venv/bin/python scripts/gen_openapi.py          # rewrite it; then npm --prefix frontend run gen:api
.venv/bin/python scripts/gen_openapi.py --check  # exit 1 if the file is stale
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

from groupqwen.api.app import create_app
from groupqwen.config import load_settings

SCHEMA = Path(__file__).resolve().parent.parent / "frontend" / "openapi.json"


def render() -> str:
    with tempfile.TemporaryDirectory() as folder:
        settings = load_settings(models_dir=Path(folder), data_dir=Path(folder))
        schema = create_app(settings).openapi()
    schema["info"]["version"] = "0"  # the package version would make every release stale
    return json.dumps(schema, indent=2, sort_keys=True) + "\n"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="exit 1 if the file differs, write nothing")
    args = parser.parse_args()
    text = render()
    if args.check:
        if not SCHEMA.is_file() or SCHEMA.read_text(encoding="utf-8") != text:
            print(f"{SCHEMA} is stale: run scripts/gen_openapi.py", file=sys.stderr)
            return 1
        return 0
    SCHEMA.write_text(text, encoding="utf-8")
    print(f"wrote {SCHEMA}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
