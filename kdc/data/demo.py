"""The real-MRI demo set shipped in the package (see ``demo_set/PROVENANCE.md``) and validation images drawn from it."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from kdc.data.errors import DataError
from kdc.data.volumes import read_volume
from kdc.data.resize import fit_images


def demo_root() -> Path:
    """Dataset directory of the demo set: ``train/*.h5`` (two MNI templates), ``val/*.h5`` (Colin27)."""
    return Path(__file__).with_name("demo_set")


def validation_images(shape: tuple[int, int], count: int = 4) -> np.ndarray:
    """``(count, H, W)`` float32 real validation slices in [0, 1], evenly spaced through the val volume(s).

    Each slice is zero-padded (centred) to the aspect ratio of ``shape`` and resampled with antialiasing, so any
    shape works (150x150, 640x368, 256x256, ...) without distorting the anatomy.
    """
    files = sorted((demo_root() / "val").glob("*.h5"))
    slices = np.concatenate([read_volume(path).target for path in files])
    if not 1 <= count <= len(slices):
        raise DataError(f"validation_images: count {count}, expected 1 to {len(slices)} (demo val slices)")
    picks = ((np.arange(count) + 0.5) * len(slices) / count).astype(int)
    return np.clip(fit_images(slices[picks], shape), 0.0, 1.0)
