"""Write config.example.yaml from the settings (groupqwen/config/example.py renders it).

    .venv/bin/python scripts/gen_config_example.py          # rewrite the file
    .venv/bin/python scripts/gen_config_example.py --check  # exit 1 if the file is stale

Change a field's description or default in groupqwen/config/, then run this; never edit the file by hand.
"""

from __future__ import annotations

import sys
from pathlib import Path

import generated

from groupqwen.config.example import render

EXAMPLE = Path(__file__).resolve().parent.parent / "config.example.yaml"


if __name__ == "__main__":
    sys.exit(generated.main(__doc__.splitlines()[0], EXAMPLE, lambda _: render(), flag="--output"))
