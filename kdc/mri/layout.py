"""Complex arrays <-> real channel layouts: a complex ``(..., H, W)`` image or k-space is ``(..., 2, H, W)`` float32
(real, imaginary) for the networks, which compute in real arithmetic."""

from __future__ import annotations

from typing import Any

import numpy as np


def to_channels(values: np.ndarray) -> np.ndarray:
    """Complex ``(..., H, W)`` -> float32 ``(..., 2, H, W)``, real part first."""
    return np.ascontiguousarray(np.stack([values.real, values.imag], axis=-3), dtype=np.float32)


def from_channels(channels: np.ndarray) -> np.ndarray:
    """Float ``(..., 2, H, W)`` -> complex64 ``(..., H, W)``, the inverse of :func:`to_channels`."""
    return (channels[..., 0, :, :] + 1j * channels[..., 1, :, :]).astype(np.complex64)


def centre_crop(images: Any, shape: tuple[int, int]) -> Any:
    """The central ``shape`` of the last two axes (fastMRI's ``center_crop``; numpy arrays and torch tensors)."""
    height, width = images.shape[-2:]
    top, left = (height - min(shape[0], height)) // 2, (width - min(shape[1], width)) // 2
    return images[..., top : top + min(shape[0], height), left : left + min(shape[1], width)]


def centre_fit(images: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """``images`` cropped or zero-padded (centred) on the last two axes to exactly ``shape``."""
    cropped = centre_crop(images, shape)
    pad = [(0, 0)] * (images.ndim - 2) + [((size - got) // 2, (size - got) - (size - got) // 2)
                                          for size, got in zip(shape, cropped.shape[-2:])]
    return np.pad(cropped, pad)
