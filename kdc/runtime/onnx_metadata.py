"""The ``metadata_props`` of an ONNX file, read without the ``onnx`` package or a runtime session.

:func:`kdc.runtime.load` reads the kdc contract before it picks an engine (a file validated at bf16 runs on
OpenVINO). The file is scanned with ``mmap`` at the top level of its protobuf ``ModelProto`` only: the graph and
its weights are skipped by their declared lengths, never read or allocated, and anything malformed gives an empty
result (the runtime that loads the file then names the problem).
"""

from __future__ import annotations

import mmap
import os
from collections.abc import Iterator

#: Field numbers of ``ModelProto.metadata_props`` and of ``StringStringEntryProto.key``/``value``.
METADATA_FIELD, KEY_FIELD, VALUE_FIELD = 14, 1, 2
VARINT, FIXED64, LENGTH_DELIMITED, FIXED32 = 0, 1, 2, 5


def varint(buffer: mmap.mmap | bytes, position: int, end: int) -> tuple[int, int]:
    """The varint at ``position`` and the position after it; ``ValueError`` past ``end`` or beyond 64 bits."""
    value = shift = 0
    while position < end and shift < 64:
        byte = buffer[position]
        position += 1
        value |= (byte & 0x7F) << shift
        if byte < 0x80:
            return value, position
        shift += 7
    raise ValueError("truncated varint")


def fields(buffer: mmap.mmap | bytes, start: int, end: int) -> Iterator[tuple[int, int, int, int]]:
    """``(field number, wire type, start, end)`` of each field in ``buffer[start:end]`` (end exclusive; a varint or
    fixed field spans its bytes). ``ValueError`` on a malformed field."""
    position = start
    while position < end:
        key, position = varint(buffer, position, end)
        number, wire = key >> 3, key & 7
        if wire == VARINT:
            value_start = position
            _, position = varint(buffer, position, end)
        elif wire in (FIXED64, FIXED32):
            value_start, position = position, position + (8 if wire == FIXED64 else 4)
        elif wire == LENGTH_DELIMITED:
            length, value_start = varint(buffer, position, end)
            position = value_start + length
        else:
            raise ValueError(f"unsupported wire type {wire}")
        if position > end:
            raise ValueError("field runs past its message")
        yield number, wire, value_start, position


def metadata_props(path: str | os.PathLike[str]) -> dict[str, str]:
    """``metadata_props`` of the ONNX file ``path`` as a dict; empty if there are none or the file is not ONNX."""
    try:
        with open(path, "rb") as file, mmap.mmap(file.fileno(), 0, access=mmap.ACCESS_READ) as buffer:
            props: dict[str, str] = {}
            for number, wire, start, end in fields(buffer, 0, len(buffer)):
                if number != METADATA_FIELD or wire != LENGTH_DELIMITED:
                    continue
                entry = {field: buffer[a:b].decode("utf-8", errors="replace")
                         for field, kind, a, b in fields(buffer, start, end)
                         if field in (KEY_FIELD, VALUE_FIELD) and kind == LENGTH_DELIMITED}
                if KEY_FIELD in entry:
                    props[entry[KEY_FIELD]] = entry.get(VALUE_FIELD, "")
            return props
    except (OSError, ValueError):  # empty file (mmap refuses length 0), unreadable, or not a protobuf
        return {}
