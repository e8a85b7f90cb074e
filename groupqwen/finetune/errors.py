"""Errors of the fine-tuning data pipeline, all under :class:`groupqwen.errors.GroupQwenError`.

::

    GroupQwenError
    └── FinetuneError               400 invalid_request_error  finetune_error
        ├── InvalidExport           400                        invalid_export     (not a readable export)
        ├── UnsafeArchive           400                        unsafe_archive     (zip-slip, zip bomb …)
        └── InvalidRecords          400                        invalid_records    (a JSONL stage file)
"""

from __future__ import annotations

from groupqwen.errors import GroupQwenError


class FinetuneError(GroupQwenError):
    """Base class of the data pipeline's errors: the input is at fault, hence a 400."""

    status_code = 400
    error_type = "invalid_request_error"
    code = "finetune_error"


class InvalidExport(FinetuneError):
    """A file is not a readable chat export (wrong format, not JSON, truncated before any conversation)."""

    code = "invalid_export"


class UnsafeArchive(FinetuneError):
    """A ZIP archive is refused: a path escapes the work folder, or it is too big or has too many files."""

    code = "unsafe_archive"


class InvalidRecords(FinetuneError):
    """A stage file (conversations JSONL, decisions JSONL) has a bad line; the message names the line."""

    code = "invalid_records"
