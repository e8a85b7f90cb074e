"""Write frontend/openapi.json, the gateway's OpenAPI schema the web UI's typed client is generated from.

    .venv/bin/python scripts/gen_openapi.py          # rewrite it; then npm --prefix frontend run gen:api
.venv/bin/python scripts/gen_openapi.py --check  # exit 1 if the file is stale
"""

from __future__ import annotations

import json
import sys
import tempfile
from pathlib import Path

import generated

from groupqwen.api.app import create_app
from groupqwen.config import load_settings

SCHEMA = Path(__file__).resolve().parent.parent / "frontend" / "openapi.json"


def render() -> str:
    with tempfile.TemporaryDirectory() as folder:
        settings = load_settings(models_dir=Path(folder), data_dir=Path(folder))
        schema = create_app(settings).openapi()
    schema["info"]["version"] = "0"  # the package version would make every release stale
    return json.dumps(schema, indent=2, sort_keys=True) + "\n"


if __name__ == "__main__":
    sys.exit(generated.main(__doc__.splitlines()[0], SCHEMA, lambda _: render()))
