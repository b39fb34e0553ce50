"""Tiny random-weight DC-CNNs and real validation k-space for the export tests."""

from __future__ import annotations

import numpy as np
import torch

from kdc.data.demo import validation_images
from kdc.mri.fft import fft2
from kdc.mri.masks import cartesian_mask, line_mask_input, sampled_lines
from kdc.mri.simulate import with_smooth_phase
from kdc.models import DCCNN


def tiny_model(seed: int = 0) -> DCCNN:
    torch.manual_seed(seed)
    return DCCNN(cascades=2, convs=3, channels=8).eval()


def undersampled(shape: tuple[int, int], mask: np.ndarray, count: int = 4) -> torch.Tensor:
    """``(count, 2, H, W)`` k-space ``fft2(image) * mask`` of real validation slices."""
    kspace = fft2(validation_images(shape, count)) * mask
    return torch.from_numpy(np.stack([kspace.real, kspace.imag], axis=1).astype(np.float32))


def column_mask(mask: np.ndarray) -> torch.Tensor:
    """``(1, 1, 1, W)`` model input of a 1-D Cartesian ``(H, W)`` mask."""
    return torch.from_numpy(mask[None, None, :1].copy())


def complex_model(seed: int = 0) -> DCCNN:
    """A tiny random-weight complex DC-CNN (real and imaginary channels)."""
    torch.manual_seed(seed)
    return DCCNN(cascades=2, convs=3, channels=8, image_channels=2).eval()


def row_mask(shape: tuple[int, int], seed: int = 1) -> np.ndarray:
    """An uncentred ``(H, W)`` 4x mask sampling whole rows (as KD-MRI's brain and cardiac masks do)."""
    return cartesian_mask("random", 4, shape[::-1], seed=seed).T.copy()


def phased_undersampled(shape: tuple[int, int], mask: np.ndarray, count: int = 2) -> torch.Tensor:
    """``(count, 2, H, W)`` k-space of real validation slices given a smooth phase (complex images)."""
    kspace = fft2(with_smooth_phase(validation_images(shape, count))) * mask
    return torch.from_numpy(np.stack([kspace.real, kspace.imag], axis=1).astype(np.float32))


def line_mask(mask: np.ndarray) -> torch.Tensor:
    """Model input of a 1-D Cartesian ``(H, W)`` mask: ``(1, 1, 1, W)`` for columns, ``(1, 1, H, 1)`` for rows."""
    axis, _ = sampled_lines(mask)
    return torch.from_numpy(line_mask_input(mask, mask.shape, axis))
