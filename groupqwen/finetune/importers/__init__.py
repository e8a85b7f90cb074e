"""Importers of chat exports (ChatGPT, Claude, Perplexity) into conversation records."""

from groupqwen.finetune.importers.base import FileReport, ImportOptions, Rejection
from groupqwen.finetune.importers.run import ImportReport, import_paths, sniff

__all__ = ["FileReport", "ImportOptions", "ImportReport", "Rejection", "import_paths", "sniff"]
