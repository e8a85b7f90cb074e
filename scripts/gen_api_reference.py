"""Write docs/API_REFERENCE.md from the OpenAPI document, groupqwen/errors.py and docs/api_reference.yaml.

    .venv/bin/python scripts/gen_api_reference.py          # rewrite it
    .venv/bin/python scripts/gen_api_reference.py --check  # exit 1 if it is stale

Add or change an example in docs/api_reference.yaml (tests/test_api_reference.py runs it against a live
gateway), a route's docstring or an error class, then run this.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import gen_openapi
import generated

from groupqwen.api import reference

DOCUMENT = Path(__file__).resolve().parent.parent / "docs" / "API_REFERENCE.md"


def render() -> str:
    return reference.render(json.loads(gen_openapi.render()), reference.load())


if __name__ == "__main__":
    sys.exit(generated.main(__doc__.splitlines()[0], DOCUMENT, lambda _: render()))
