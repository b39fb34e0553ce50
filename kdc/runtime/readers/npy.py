"""``.npy`` complex k-space ``(S, H, W)`` or ``(H, W)``, centred (DC term in the middle, as scanners store it).

The acquired lines are those holding any non-zero sample (columns or rows, :func:`kdc.mri.masks.mask_from_kspace`);
a file whose lines all hold data counts as fully sampled. Nothing is unpickled.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np

from kdc.mri.masks import mask_from_kspace
from kdc.runtime.readers import InputError, RawVolume, register_reader


def claims(path: Path) -> bool:
    return path.suffix == ".npy"


def read(path: Path) -> Iterator[RawVolume]:
    try:
        kspace = np.load(path, allow_pickle=False)
    except ValueError as err:
        raise InputError(f"{path}: not a numeric .npy array ({err})") from None
    if not np.iscomplexobj(kspace) or kspace.ndim not in (2, 3):
        raise InputError(f"{path}: expected complex k-space (S, H, W) or (H, W), got {kspace.dtype} {kspace.shape}")
    kspace = kspace.reshape(-1, 1, *kspace.shape[-2:]).astype(np.complex64, copy=False)
    peak = np.unravel_index(np.argmax(np.abs(kspace).sum(axis=(0, 1))), kspace.shape[-2:])
    if peak == (0, 0):
        raise InputError(f"{path}: k-space peaks at [0, 0], so it looks uncentred; kdc reconstruct takes centred "
                         "k-space (DC term in the middle): save np.fft.fftshift(kspace, axes=(-2, -1))")
    lines = mask_from_kspace(np.any(kspace != 0, axis=(0, 1)))
    mask = None if lines.all() else np.fft.ifftshift(lines)
    yield RawVolume(path, path.stem, kspace, centred=True, mask=mask)


register_reader("npy", claims, read)
