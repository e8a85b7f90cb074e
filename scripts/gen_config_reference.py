"""Write the configuration reference of docs/DEPLOYMENT.md from the settings (groupqwen/config/reference.py).

    .venv/bin/python scripts/gen_config_reference.py          # rewrite the part between the markers
    .venv/bin/python scripts/gen_config_reference.py --check  # exit 1 if it is stale

Change a field's description or default in groupqwen/config/, then run this (and gen_config_example.py).
"""

from __future__ import annotations

import sys
from pathlib import Path

import generated

from groupqwen.config.reference import replace_in

DOCUMENT = Path(__file__).resolve().parent.parent / "docs" / "DEPLOYMENT.md"


if __name__ == "__main__":
    sys.exit(generated.main(__doc__.splitlines()[0], DOCUMENT, replace_in, flag="--document"))
