"""Read a GGUF file's metadata (the key/value header) without loading its tensors.

Large arrays (the tokenizer's vocabulary) are skipped and recorded by their length only, so reading the
header of a multi-GB model takes milliseconds.
"""

from __future__ import annotations

import mmap
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from groupqwen.errors import ModelLoadError

_MAGIC = b"GGUF"
# GGUF value types: uint8, int8, uint16, int16, uint32, int32, float32, bool, string, array, uint64, int64,
# float64.
_SCALARS = {
    0: "<B",
    1: "<b",
    2: "<H",
    3: "<h",
    4: "<I",
    5: "<i",
    6: "<f",
    7: "<?",
    10: "<Q",
    11: "<q",
    12: "<d",
}
_STRING, _ARRAY = 8, 9
_MAX_KEYS = 100_000
_MAX_STRING = 64 * 1024 * 1024


@dataclass(frozen=True)
class ArrayInfo:
    """An array value that was skipped: its element type and length."""

    type: int
    length: int


@dataclass(frozen=True)
class GGUFMetadata:
    version: int
    tensor_count: int
    values: dict[str, Any]

    @property
    def architecture(self) -> str:
        return str(self.values.get("general.architecture", "unknown"))

    def arch_value(self, name: str, default: Any = None) -> Any:
        return self.values.get(f"{self.architecture}.{name}", default)

    @property
    def vocab_size(self) -> int:
        tokens = self.values.get("tokenizer.ggml.tokens")
        return tokens.length if isinstance(tokens, ArrayInfo) else 0


class _Cursor:
    """Reads little-endian values from a memory-mapped header; skipping a string is one offset add."""

    def __init__(self, data: mmap.mmap) -> None:
        self.data = data
        self.pos = 0

    def take(self, fmt: str) -> Any:
        value = struct.unpack_from(fmt, self.data, self.pos)[0]
        self.pos += struct.calcsize(fmt)
        return value

    def string(self, keep: bool = True) -> str:
        length = self.take("<Q")
        if length > _MAX_STRING or self.pos + length > len(self.data):
            raise ValueError(f"string of {length} bytes runs past the end of the file")
        start, self.pos = self.pos, self.pos + length
        return self.data[start : self.pos].decode("utf-8", errors="replace") if keep else ""

    def value(self, kind: int, keep_arrays: int) -> Any:
        if kind in _SCALARS:
            return self.take(_SCALARS[kind])
        if kind == _STRING:
            return self.string()
        if kind == _ARRAY:
            item_kind = self.take("<I")
            length = self.take("<Q")
            if length <= keep_arrays:
                return [self.value(item_kind, keep_arrays) for _ in range(length)]
            if item_kind in _SCALARS:
                self.pos += length * struct.calcsize(_SCALARS[item_kind])
            elif item_kind == _STRING:
                for _ in range(length):
                    self.pos += 8 + struct.unpack_from("<Q", self.data, self.pos)[0]
            else:
                for _ in range(length):
                    self.value(item_kind, 0)
            if self.pos > len(self.data):
                raise ValueError("an array runs past the end of the file")
            return ArrayInfo(item_kind, length)
        raise ValueError(f"unknown GGUF value type {kind}")


def read_metadata(path: Path, keep_arrays: int = 64) -> GGUFMetadata:
    """Parse the header of ``path``; raise ``ModelLoadError`` naming the file if it is not a valid GGUF."""
    try:
        with path.open("rb") as f, mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as data:
            if data[:4] != _MAGIC:
                raise ValueError("not a GGUF file (bad magic)")
            cursor = _Cursor(data)
            cursor.pos = 4
            version, tensors, keys = cursor.take("<I"), cursor.take("<Q"), cursor.take("<Q")
            if version not in (2, 3) or keys > _MAX_KEYS:
                raise ValueError(f"unsupported GGUF version {version} or {keys} keys")
            values: dict[str, Any] = {}
            for _ in range(keys):
                key = cursor.string()
                values[key] = cursor.value(cursor.take("<I"), keep_arrays)
    except (OSError, ValueError, KeyError, struct.error) as exc:
        raise ModelLoadError(f"{path}: cannot read GGUF metadata: {exc}") from exc
    return GGUFMetadata(version=version, tensor_count=tensors, values=values)
