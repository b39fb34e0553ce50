"""Orthonormal 2-D FFTs, centred and uncentred, for numpy arrays and torch tensors alike.

kdc keeps k-space **uncentred** (DC term at index 0, as ``fft2`` of the image gives it), which is KD-MRI's
convention. fastMRI stores k-space **centred** (DC term in the middle); ``fft2c``/``ifft2c`` follow that convention.
"""

from __future__ import annotations

from typing import Any

import numpy as np


def _fft_module(x: Any) -> Any:
    if type(x).__module__.startswith("torch"):
        import torch

        return torch.fft
    return np.fft


def fft2(image: Any) -> Any:
    """Uncentred orthonormal 2-D FFT over the last two axes."""
    return _fft_module(image).fft2(image, norm="ortho")


def ifft2(kspace: Any) -> Any:
    """Uncentred orthonormal inverse 2-D FFT over the last two axes."""
    return _fft_module(kspace).ifft2(kspace, norm="ortho")


def fft2c(image: Any) -> Any:
    """Centred orthonormal 2-D FFT: image with the origin in the middle -> k-space with DC in the middle."""
    fft = _fft_module(image)
    axes = (-2, -1)
    return fft.fftshift(fft.fft2(fft.ifftshift(image, axes), norm="ortho"), axes)


def ifft2c(kspace: Any) -> Any:
    """Centred orthonormal inverse 2-D FFT, the inverse of :func:`fft2c`."""
    fft = _fft_module(kspace)
    axes = (-2, -1)
    return fft.fftshift(fft.ifft2(fft.ifftshift(kspace, axes), norm="ortho"), axes)


def centred_to_uncentred(kspace: Any) -> Any:
    """Move the DC term of centred k-space (fastMRI) to index 0 (kdc, KD-MRI)."""
    return _fft_module(kspace).ifftshift(kspace, (-2, -1))
