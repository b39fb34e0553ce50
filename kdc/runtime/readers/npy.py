"""``.npy`` complex k-space ``(S, H, W)`` or ``(H, W)``, centred (DC term in the middle, as scanners store it).

The acquired lines are those holding any non-zero sample (columns or rows, :func:`kdc.mri.masks.mask_from_kspace`);
a file whose lines all hold data counts as fully sampled. Nothing is unpickled.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from kdc.data.formats.limits import COMPLEX64, check_declared, size_text
from kdc.mri.masks import mask_from_kspace
from kdc.runtime.readers import InputError, RawVolume, register_reader


def claims(path: Path) -> bool:
    return path.suffix == ".npy"


#: The .npy header readers of the format versions kdc reads.
HEADER_READERS = {(1, 0): np.lib.format.read_array_header_1_0, (2, 0): np.lib.format.read_array_header_2_0}


def declared_array(path: Path) -> tuple[tuple[int, ...], np.dtype]:
    """Shape and dtype of a ``.npy`` file's header, refused (one line) unless complex ``(S, H, W)`` or ``(H, W)``
    within the input limit and present in full in the file: checked before anything is allocated."""
    with path.open("rb") as handle:
        try:
            version = np.lib.format.read_magic(handle)
            if version not in HEADER_READERS:
                raise ValueError(f"format version {version[0]}.{version[1]}")
            shape, _, dtype = HEADER_READERS[version](handle)
        except (ValueError, SyntaxError, EOFError) as err:
            raise InputError(f"{path}: not a numeric .npy array ({err})") from None
        data_start = handle.tell()
    if dtype.kind != "c" or len(shape) not in (2, 3) or min(shape) < 1:
        raise InputError(f"{path}: expected complex k-space (S, H, W) or (H, W), got {dtype} {shape}")
    check_declared(f"{path}: .npy header", shape, max(COMPLEX64, dtype.itemsize))
    declared, stored = math.prod(shape) * dtype.itemsize, path.stat().st_size - data_start
    if stored < declared:
        raise InputError(f"{path}: truncated: its header declares {dtype} {shape} ({size_text(declared)}), the file "
                         f"holds {size_text(stored)} of it")
    return shape, dtype


def read(path: Path) -> Iterator[RawVolume]:
    declared_array(path)
    kspace = np.load(path, allow_pickle=False)
    kspace = kspace.reshape(-1, 1, *kspace.shape[-2:]).astype(np.complex64, copy=False)
    peak = np.unravel_index(np.argmax(np.abs(kspace).sum(axis=(0, 1))), kspace.shape[-2:])
    if peak == (0, 0):
        raise InputError(f"{path}: k-space peaks at [0, 0], so it looks uncentred; kdc reconstruct takes centred "
                         "k-space (DC term in the middle): save np.fft.fftshift(kspace, axes=(-2, -1))")
    lines = mask_from_kspace(np.any(kspace != 0, axis=(0, 1)))
    mask = None if lines.all() else np.fft.ifftshift(lines)
    yield RawVolume(path, path.stem, kspace, centred=True, mask=mask)


register_reader("npy", claims, read)
