"""KD-MRI h5: ``volfs`` ``(H, W, S)`` fully sampled magnitude images.

k-space is their uncentred orthonormal FFT, as KD-MRI simulated it, and ``volfs`` is the reference.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np

from kdc.mri.fft import fft2
from kdc.runtime.readers import InputError, RawVolume, register_reader
from kdc.runtime.readers.h5 import has_key, open_h5


def read_kdmri(path: Path) -> Iterator[RawVolume]:
    with open_h5(path) as file:
        volfs = file["volfs"]
        if getattr(volfs, "ndim", None) != 3 or volfs.dtype.kind not in "fiu":
            raise InputError(f"{path}: 'volfs' must be a real (H, W, slices) array, got "
                             f"{getattr(volfs, 'dtype', '')} {getattr(volfs, 'shape', 'a group')}")
        images = np.moveaxis(volfs[()], -1, 0).astype(np.float32)
    if not np.isfinite(images).all():
        raise InputError(f"{path}: 'volfs' holds NaN or infinity")
    kspace = fft2(images).astype(np.complex64)[:, None]
    yield RawVolume(path, path.stem, kspace, centred=False, reference=images)


register_reader("kdmri-h5", lambda path: has_key(path, "volfs"), read_kdmri)
