"""Low-resolution MRI for super-resolution: k-space truncation of real targets, as MRI SR papers simulate it.

The low-resolution image keeps only the central ``1/scale`` of k-space along both axes (a centred low-pass), then
goes back through the inverse FFT on the full grid, so it has the size of the target (magnitude, like the target).
:class:`LowResDataset` items are ``image`` (1, H, W) low-resolution input, ``target`` (1, H, W) in [0, 1], plus
``volume`` (file stem) and ``slice`` (index).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from kdc.data.errors import DataError
from kdc.mri.fft import fft2c, ifft2c
from kdc.data.formats import VolumeInfo
from kdc.data.volumes import read_volume
from kdc.data.slices import split_volumes

SCALES = (2, 4)


def check_scale(scale: int) -> int:
    if scale not in SCALES:
        raise DataError(f"super-resolution scale {scale}: expected one of {list(SCALES)}")
    return scale


def lowpass_window(shape: tuple[int, int], scale: int) -> np.ndarray:
    """Centred 0/1 ``(H, W)`` window keeping the central ``H // scale`` rows and ``W // scale`` columns of k-space."""
    window = np.zeros(shape, dtype=np.float32)
    (height, width), kept = shape, (max(1, shape[0] // scale), max(1, shape[1] // scale))
    top, left = height // 2 - kept[0] // 2, width // 2 - kept[1] // 2
    window[top : top + kept[0], left : left + kept[1]] = 1
    return window


def low_resolution(images: np.ndarray, scale: int) -> np.ndarray:
    """``(..., H, W)`` real images -> float32 magnitude images of the same size with ``1/scale`` of the k-space."""
    check_scale(scale)
    window = lowpass_window(images.shape[-2:], scale)
    return np.abs(ifft2c(fft2c(images) * window)).astype(np.float32)


class LowResDataset:
    """Every slice of some volumes with its k-space-truncated input; volumes are read once and kept in memory."""

    def __init__(self, volumes: Sequence[VolumeInfo], scale: int) -> None:
        self.files: list[Path] = [info.path for info in volumes]
        self.scale = check_scale(scale)
        self.image_shape: tuple[int, int] = volumes[0].image_shape
        self._index = [(volume, index) for volume, info in enumerate(volumes) for index in range(info.slices)]
        self._volumes: dict[int, tuple[np.ndarray, np.ndarray]] = {}

    def __len__(self) -> int:
        return len(self._index)

    def __getitem__(self, index: int) -> dict[str, Any]:
        volume_index, slice_index = self._index[index]
        lowres, target = self._volume(volume_index)
        return {
            "image": lowres[slice_index][None].copy(),
            "target": target[slice_index][None].copy(),
            "volume": self.files[volume_index].stem,
            "slice": slice_index,
        }

    def _volume(self, index: int) -> tuple[np.ndarray, np.ndarray]:
        if index not in self._volumes:
            target = read_volume(self.files[index]).target
            self._volumes[index] = (low_resolution(target, self.scale), target)
        return self._volumes[index]


def open_lowres_split(data: str | Path, split: str, scale: int) -> LowResDataset:
    """Slices of ``ROOT/split/*.h5`` (or ``"demo"``) with their ``scale``x low-resolution inputs."""
    check_scale(scale)
    volumes = split_volumes(data, split)
    if min(volumes[0].image_shape) < 2 * scale:
        raise DataError(f"{volumes[0].path}: slices {volumes[0].image_shape} are too small for scale {scale}")
    return LowResDataset(volumes, scale)
