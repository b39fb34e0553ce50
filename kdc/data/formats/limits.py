"""What an input file may make a reader allocate, checked from its declared shapes before anything is read.

One limit for every reader (h5 formats, ``.npy``, NIfTI): the **declared** size of one volume, as the complex64
k-space (or float image) the reader would build, may not exceed ``$KDC_MAX_INPUT_BYTES`` (default 2 GiB; a
fastMRI knee multi-coil volume is about 1.3 GB). A file that declares far more data than it stores (unwritten
HDF5 chunks read as zeros, a decompression bomb) is refused too: above :data:`EXPANSION_FLOOR` bytes, a dataset
must store at least 1/:data:`MAX_EXPANSION` of what it declares. Standard library only.
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from typing import TYPE_CHECKING

from kdc.data.errors import DataError

if TYPE_CHECKING:
    import h5py

#: Environment variable that overrides :data:`DEFAULT_MAX_INPUT_BYTES`; bytes, with an optional K, M, G or T suffix.
MAX_INPUT_BYTES_VARIABLE = "KDC_MAX_INPUT_BYTES"
DEFAULT_MAX_INPUT_BYTES = 2 * 2**30
#: A dataset declaring more than this (bytes) must store at least 1/MAX_EXPANSION of it.
EXPANSION_FLOOR = 64 * 2**20
MAX_EXPANSION = 100
#: Bytes per sample of the complex64 k-space every reader yields.
COMPLEX64 = 8
_SUFFIXES = {"": 1, "K": 2**10, "M": 2**20, "G": 2**30, "T": 2**40}


def max_input_bytes() -> int:
    """``$KDC_MAX_INPUT_BYTES`` (e.g. ``8G``) or :data:`DEFAULT_MAX_INPUT_BYTES`; a malformed value is a DataError."""
    text = os.environ.get(MAX_INPUT_BYTES_VARIABLE, "").strip().upper().removesuffix("B")
    if not text:
        return DEFAULT_MAX_INPUT_BYTES
    suffix = text[-1] if text[-1] in _SUFFIXES else ""
    try:
        value = float(text.removesuffix(suffix)) * _SUFFIXES[suffix]
    except ValueError:
        value = -1.0
    if not (math.isfinite(value) and value > 0):
        raise DataError(f"{MAX_INPUT_BYTES_VARIABLE}={os.environ[MAX_INPUT_BYTES_VARIABLE]!r}: expected a size in "
                        "bytes such as 4000000000 or 8G")
    return int(value)


def size_text(nbytes: int | float) -> str:
    """``nbytes`` as ``1.9 GB`` (decimal units, 3 significant digits)."""
    for unit, scale in (("TB", 1e12), ("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if nbytes >= scale:
            return f"{nbytes / scale:.3g} {unit}"
    return f"{int(nbytes)} B"


def check_declared(where: str, shape: Sequence[int], itemsize: int = COMPLEX64) -> int:
    """The bytes of an array of ``shape`` with ``itemsize`` bytes per element (Python integers: no overflow), or a
    DataError naming ``where`` (file and field) when they exceed :func:`max_input_bytes`."""
    nbytes = math.prod(int(size) for size in shape) * int(itemsize)
    limit = max_input_bytes()
    if nbytes > limit:
        dims = " x ".join(str(int(size)) for size in shape)
        raise DataError(f"{where} declares {dims} values ({size_text(nbytes)} in memory), above the input limit of "
                        f"{size_text(limit)}; raise {MAX_INPUT_BYTES_VARIABLE} if the file is genuine")
    return nbytes


#: Why data declaring far more than it stores is refused, and what to do about a genuine file.
UNSTORED = (f"unwritten data or a decompression bomb (kdc reads data compressed at most {MAX_EXPANSION}:1; repack it "
            "with `h5repack -f NONE` if it is genuine)")


def check_stored(where: str, declared: int, stored: int, reason: str = UNSTORED) -> None:
    """Refuse data declaring ``declared`` bytes that stores only ``stored`` (unwritten chunks, a compression bomb, a
    matrix that its samples barely fill), saying ``reason``."""
    if declared > EXPANSION_FLOOR and stored * MAX_EXPANSION < declared:
        raise DataError(f"{where} declares {size_text(declared)} but stores {size_text(stored)}: {reason}")


def check_dataset(where: str, data: h5py.Dataset, shape: Sequence[int] | None = None,
                  itemsize: int = COMPLEX64) -> int:
    """:func:`check_declared` for ``data`` (or the ``shape`` a reader makes of it, ``itemsize`` bytes a value, at
    least the stored dtype's), then :func:`check_stored` against the bytes the file holds for it."""
    nbytes = check_declared(where, data.shape if shape is None else shape, max(itemsize, data.dtype.itemsize))
    check_stored(where, math.prod(data.shape) * data.dtype.itemsize, data.id.get_storage_size())
    return nbytes
