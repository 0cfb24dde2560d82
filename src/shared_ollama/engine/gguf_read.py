"""A GGUF file's header: its scalar key-values, the sizes of its arrays and its tensors (GGUF v2 and v3).

Hand-written because the library's reader (``gguf.GGUFReader``) makes numpy objects of every value and array
element (a 49k-token vocabulary, its merges): ~50x slower on the install path (every install, pull and create).
This one decodes scalars, skips arrays (walking string lengths) and finds just the strings asked for.

Layout (little-endian, or big-endian as the library reads too): ``GGUF``, version (u32), tensor and key-value
counts (u64); each key-value: key (string: u64 length + UTF-8), value type (u32), value (an array: element type
u32, count u64, elements). Then each tensor: name (string), dimension count (u32), dimensions (u64), ggml type
(u32), offset (u64) of its data, which starts at the first multiple of ``general.alignment`` after the tensors.
"""

from __future__ import annotations

import math
import mmap
import struct
from collections.abc import Collection, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

STRING = 8
ARRAY = 9
_CODES = {0: "B", 1: "b", 2: "H", 3: "h", 4: "I", 5: "i", 6: "f", 7: "?", 10: "Q", 11: "q", 12: "d"}
"""GGUF value type -> struct code, for the fixed-size types (6 is float32: unpacked, the float it is)."""
_STRUCTS = {order: {kind: struct.Struct(order + code) for kind, code in _CODES.items()} for order in "<>"}
_ALIGNMENT_KEY = "general.alignment"


class NotGGUF(ValueError):
    """Bytes that are not a GGUF (v2 or v3) file, or a damaged one."""


class TruncatedGGUF(NotGGUF):
    """The bytes end before the GGUF's header (or its tensor data) does."""


class Cursor:
    """Reads GGUF values from ``data`` (bytes or a memory map), moving ``at`` past each one read."""

    def __init__(self, data: bytes | mmap.mmap) -> None:
        self.data = data
        self.at = 0
        self.structs = _STRUCTS["<"]

    def skip(self, size: int) -> None:
        if self.at + size > len(self.data):
            raise TruncatedGGUF(f"the GGUF data ends (at byte {len(self.data)}) inside its header")
        self.at += size

    def scalar(self, kind: int) -> Any:
        unpacker = self.structs[kind]
        start = self.at
        self.skip(unpacker.size)
        return unpacker.unpack_from(self.data, start)[0]

    def u32(self) -> int:
        return int(self.scalar(4))

    def u64(self) -> int:
        return int(self.scalar(10))

    def string(self, errors: str = "strict") -> str:
        start = self.at + 8
        self.skip(self.u64())
        try:
            return str(self.data[start : self.at], "utf-8", errors)
        except UnicodeDecodeError:
            raise NotGGUF(f"the GGUF string at byte {start} is not UTF-8") from None

    def start(self) -> tuple[int, int]:
        """Checks the magic and version (v2, v3), sets the byte order; returns the tensor and key-value counts."""
        if bytes(self.data[:4]) != b"GGUF":
            raise NotGGUF("not a GGUF file (no GGUF magic)")
        self.skip(4)
        version = self.u32()
        if version & 0xFFFF == 0:  # written on a big-endian machine
            self.structs = _STRUCTS[">"]
            version = int.from_bytes(version.to_bytes(4, "little"), "big")
        if version not in (2, 3):
            raise NotGGUF(f"unsupported GGUF version {version}")
        return self.u64(), self.u64()

    def skip_value(self, kind: int, count: int = 1) -> None:
        """Moves past ``count`` values of type ``kind`` (an array's elements, or one value)."""
        if kind in self.structs:
            self.skip(self.structs[kind].size * count)
        elif kind == STRING:
            self.find_strings(count, {})
        elif kind == ARRAY:
            for _ in range(count):  # each is at least 12 bytes: bounded by the data's size
                self.skip_value(self.u32(), self.u64())
        elif count:
            raise NotGGUF(f"unknown GGUF value type {kind}")

    def find_strings(self, count: int, wanted: Mapping[bytes, str]) -> dict[int, str]:
        """Moves past ``count`` strings; returns the index and text of those whose UTF-8 is in ``wanted``."""
        data, at, unpack = self.data, self.at, self.structs[10].unpack_from
        lengths = {len(raw) for raw in wanted}
        found: dict[int, str] = {}
        try:
            for index in range(count):  # each string is at least 8 bytes: bounded by the data's size
                length = unpack(data, at)[0]
                at += 8
                if length in lengths and (text := wanted.get(data[at : at + length])) is not None:
                    found[index] = text
                at += length
        except struct.error:  # a length past the end
            at = len(data) + 1
        if at > len(data):
            raise TruncatedGGUF(f"the GGUF data ends (at byte {len(data)}) inside its header")
        self.at = at
        return found


@dataclass(frozen=True)
class Tensor:
    name: str
    dims: tuple[int, ...]  # in ggml's order: the row length first
    ggml_type: int
    offset: int


@dataclass
class GgufHeader:
    metadata: dict[str, Any] = field(default_factory=dict)
    """The scalar key-values in file order, as Python values (``bool``, ``int``, ``float``, ``str``)."""
    arrays: dict[str, int] = field(default_factory=dict)
    """Each array key-value's element count (its elements are not read)."""
    found: dict[str, dict[int, str]] = field(default_factory=dict)
    """For each string array searched (``read_gguf``'s ``find``): the index and text of each string found."""
    tensors: list[Tensor] = field(default_factory=list)


def read_gguf(path: Path, find: Mapping[str, Collection[str]] | None = None) -> GgufHeader:
    """The header of the GGUF file at ``path``; ``find`` maps string arrays' keys to the texts to look for in
    them. NotGGUF (a ValueError) for a file not a GGUF v2/v3 or cut short (tensor data too), OSError if unread."""
    with open(path, "rb") as handle:
        if not handle.seek(0, 2):
            raise NotGGUF("not a GGUF file (the file is empty)")
        with mmap.mmap(handle.fileno(), 0, access=mmap.ACCESS_READ) as data:
            return _read(Cursor(data), {k: {t.encode(): t for t in texts} for k, texts in (find or {}).items()})


def _read(cursor: Cursor, wanted: Mapping[str, Mapping[bytes, str]]) -> GgufHeader:
    tensor_count, kv_count = cursor.start()
    header = GgufHeader()
    for _ in range(kv_count):  # each key-value is at least 13 bytes: bounded by the file's size
        key = cursor.string()
        if key in header.metadata or key in header.arrays:
            raise NotGGUF(f"the GGUF key {key!r} appears twice")
        kind = cursor.u32()
        if key == _ALIGNMENT_KEY and kind != 4:  # u32
            raise NotGGUF(f"{_ALIGNMENT_KEY} must be a u32 (it is of GGUF value type {kind})")
        if kind == ARRAY:
            item, count = cursor.u32(), cursor.u64()
            header.arrays[key] = count
            if item == STRING and key in wanted:
                header.found[key] = cursor.find_strings(count, wanted[key])
            else:
                cursor.skip_value(item, count)
        elif kind == STRING:
            header.metadata[key] = cursor.string()
        elif kind in cursor.structs:
            header.metadata[key] = cursor.scalar(kind)
        else:
            raise NotGGUF(f"unknown GGUF value type {kind} (key {key!r})")
    for _ in range(tensor_count):  # each tensor is at least 24 bytes: bounded by the file's size
        name = cursor.string()
        dims = tuple(cursor.u64() for _ in range(cursor.u32()))
        header.tensors.append(Tensor(name, dims, cursor.u32(), cursor.u64()))
    alignment = header.metadata.get(_ALIGNMENT_KEY, 32)
    if alignment <= 0 or alignment & (alignment - 1):
        raise NotGGUF(f"{_ALIGNMENT_KEY} ({alignment}) is not a power of two")
    _check_tensors(header.tensors, -(-cursor.at // alignment) * alignment, len(cursor.data))
    return header


def _check_tensors(tensors: list[Tensor], start: int, size: int) -> None:
    """What the library's reader refuses: a tensor twice, an unknown type, part blocks, data past the end."""
    from gguf.constants import GGML_QUANT_SIZES

    names: set[str] = set()
    for tensor in tensors:
        if tensor.name in names:
            raise NotGGUF(f"the GGUF tensor {tensor.name!r} appears twice")
        names.add(tensor.name)
        if tensor.ggml_type not in GGML_QUANT_SIZES:
            raise NotGGUF(f"the GGUF tensor {tensor.name!r} has an unknown ggml type ({tensor.ggml_type})")
        block, block_bytes = GGML_QUANT_SIZES[tensor.ggml_type]
        if tensor.dims and tensor.dims[0] % block:
            raise NotGGUF(f"the GGUF tensor {tensor.name!r} has rows of {tensor.dims[0]}, not whole blocks of {block}")
        elements = math.prod(tensor.dims)
        if elements and start + tensor.offset + elements * block_bytes // block > size:
            raise TruncatedGGUF(f"the GGUF file ends (at byte {size}) inside tensor {tensor.name!r}'s data")
