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
    """``(count, H, W)`` float32 real validation slices of the demo set in [0, 1] (see :func:`split_images`)."""
    return split_images(demo_root(), "val", shape, count)


def split_images(root: str | Path, split: str, shape: tuple[int, int], count: int) -> np.ndarray:
    """``(count, H, W)`` float32 target slices in [0, 1] of ``root/split/*.h5``, evenly spaced through its volumes.

    Each slice is zero-padded (centred) to the aspect ratio of ``shape`` and resampled with antialiasing, so any
    shape works (150x150, 640x368, 256x256, ...) without distorting the anatomy.
    """
    directory = Path(root) / split
    files = sorted(directory.glob("*.h5"))
    if not files:
        raise DataError(f"{directory}: no .h5 volumes to draw slices from (expected a kdc dataset's {split} split)")
    slices = np.concatenate([read_volume(path).target for path in files])
    if not 1 <= count <= len(slices):
        raise DataError(f"{directory}: {count} slices asked for, the split has {len(slices)}")
    picks = ((np.arange(count) + 0.5) * len(slices) / count).astype(int)
    return np.clip(fit_images(slices[picks], shape), 0.0, 1.0)
