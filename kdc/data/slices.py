"""Slices of a dataset split with one fixed undersampling mask (KD-MRI style): a map-style dataset on numpy.

Items are dicts of float32 arrays, ready for ``torch.utils.data.DataLoader``'s default collation:
``kspace`` (2, H, W) undersampled uncentred k-space (real, imaginary), ``mask`` (1, 1, W) (or (1, H, W) for a mask
that is not 1-D Cartesian), ``target`` (1, H, W) in [0, 1]; plus ``volume`` (file stem) and ``slice`` (index).
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from kdc.data.demo import demo_root
from kdc.data.errors import DataError
from kdc.mri.fft import fft2
from kdc.data.h5 import Volume, VolumeInfo, inspect_volume, read_volume
from kdc.mri.masks import MaskKind, cartesian_mask, center_fraction_for, load_mask, sampled_columns

DEMO = "demo"


class SliceDataset:
    """Every slice of some volumes, undersampled with one mask; volumes are read once and kept in memory."""

    def __init__(self, volumes: Sequence[VolumeInfo], acceleration: int, mask: np.ndarray) -> None:
        self.files: list[Path] = [info.path for info in volumes]
        self.acceleration = acceleration
        self.mask: np.ndarray = mask
        self.image_shape: tuple[int, int] = mask.shape
        is_cartesian = sampled_columns(mask) is not None
        self._mask_input = (mask[:1] if is_cartesian else mask)[None].astype(np.float32)
        self._index = [(volume, index) for volume, info in enumerate(volumes) for index in range(info.slices)]
        self._volumes: dict[int, Volume] = {}

    def __len__(self) -> int:
        return len(self._index)

    def __getitem__(self, index: int) -> dict[str, Any]:
        volume_index, slice_index = self._index[index]
        volume = self._volume(volume_index)
        target = volume.target[slice_index]
        measured = fft2(target) if volume.kspace is None else volume.kspace[slice_index]
        kspace = measured * self.mask
        return {
            "kspace": np.stack([kspace.real, kspace.imag]).astype(np.float32),
            "mask": self._mask_input.copy(),
            "target": target[None].copy(),
            "volume": self.files[volume_index].stem,
            "slice": slice_index,
        }

    def fingerprint(self) -> str:
        """SHA-256 of what the items depend on: the files (path, size, mtime), slice indices, acceleration and mask."""
        digest = hashlib.sha256()
        for path in self.files:
            stat = path.stat()
            digest.update(f"{path.resolve()}|{stat.st_size}|{stat.st_mtime_ns}\n".encode())
        digest.update(f"{self._index}|{self.acceleration}|{self.mask.shape}\n".encode())
        digest.update(np.ascontiguousarray(self.mask, dtype=np.float32).tobytes())
        return digest.hexdigest()

    def _volume(self, index: int) -> Volume:
        if index not in self._volumes:
            self._volumes[index] = read_volume(self.files[index], self.acceleration)
        return self._volumes[index]


def dataset_root(data: str | Path) -> Path:
    """The dataset directory ``data`` names: a path, or ``"demo"`` for the set shipped in the package."""
    root = demo_root() if str(data) == DEMO else Path(data)
    if not root.is_dir():
        raise DataError(f"{root}: dataset directory not found (expected ROOT/train/*.h5 and ROOT/val/*.h5, or 'demo')")
    return root


def split_volumes(data: str | Path, split: str) -> list[VolumeInfo]:
    """Headers of the volumes ``ROOT/split/*.h5``, sorted; all must have the same slice size."""
    directory = dataset_root(data) / split
    if not directory.is_dir():
        raise DataError(f"{directory}: split '{split}' not found (expected a directory of .h5 volumes)")
    volumes = [inspect_volume(path) for path in sorted(directory.glob("*.h5"))]
    if not volumes:
        raise DataError(f"{directory}: split '{split}' holds no .h5 volumes")
    shape = volumes[0].image_shape
    for info in volumes[1:]:
        if info.image_shape != shape:
            raise DataError(
                f"{info.path}: slices are {info.image_shape}, but {volumes[0].path.name} in the same split has {shape}"
            )
    return volumes


def open_split(
    data: str | Path, split: str, acceleration: int, mask_kind: MaskKind = "random", mask_seed: int = 0
) -> SliceDataset:
    """Slices of ``ROOT/split/*.h5`` with the dataset's mask ``ROOT/masks/mask_{acc}x.npy``, else a generated one."""
    center_fraction_for(acceleration)
    volumes = split_volumes(data, split)
    root, shape = dataset_root(data), volumes[0].image_shape
    mask_file = root / "masks" / f"mask_{acceleration}x.npy"
    if mask_file.is_file():
        mask = load_mask(mask_file, shape)
    else:
        mask = cartesian_mask(mask_kind, acceleration, shape, mask_seed)
    return SliceDataset(volumes, acceleration, mask)
