"""Shared by the h5 readers: the HDF5 signature check and opening a file with one-line errors (h5py, lazily)."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from kdc.runtime.readers import InputError

HDF5_SIGNATURE = b"\x89HDF\r\n\x1a\n"


def is_hdf5(path: Path) -> bool:
    with path.open("rb") as file:
        return file.read(8) == HDF5_SIGNATURE


@contextlib.contextmanager
def open_h5(path: Path) -> Iterator[Any]:
    """An open ``h5py.File``; an unreadable file is an :class:`InputError`."""
    import h5py

    try:
        file = h5py.File(path, "r")
    except OSError as err:
        raise InputError(f"{path}: not a readable HDF5 file ({err})") from None
    with file:
        yield file


def has_key(path: Path, key: str) -> bool:
    if not is_hdf5(path):
        return False
    with open_h5(path) as file:
        return key in file


def complex_array(path: Path, file: Any, key: str, ndims: tuple[int, ...]) -> np.ndarray:
    data = file[key]
    if getattr(data, "ndim", None) not in ndims or data.dtype.kind != "c":
        shape = getattr(data, "shape", "a group")
        raise InputError(f"{path}: '{key}' must be complex with {' or '.join(map(str, ndims))} axes, "
                         f"got {getattr(data, 'dtype', '')} {shape}")
    return data[()]
