"""Tiny random-weight DC-CNNs and real validation k-space for the export tests."""

from __future__ import annotations

import numpy as np
import torch

from kdc.data.demo import validation_images
from kdc.mri.fft import fft2
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
