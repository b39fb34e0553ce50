"""Orthonormal 2-D FFTs, centred and uncentred, for numpy arrays and torch tensors alike.

kdc keeps k-space **uncentred** (DC term at index 0, as ``fft2`` of the image gives it), which is KD-MRI's
convention. fastMRI (and most scanner software) stores k-space **centred**: ``fft2c(x) = fftshift(fft2(ifftshift(x)))``
centres the DC term *and* treats the image's centre as its origin. Moving only the DC term of such k-space
(``ifftshift``) gives k-space of the image rolled by ``(H//2, W//2)``; :func:`centred_to_uncentred` also removes that
roll (a linear phase), so that ``centred_to_uncentred(fft2c(x)) == fft2(x)`` for even and odd sizes.
"""

from __future__ import annotations

from functools import lru_cache
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


@lru_cache(maxsize=8)
def _origin_phase(height: int, width: int, sign: int, dtype: type) -> np.ndarray:
    """``exp(sign * 2j*pi * k * (n//2) / n)`` over ``(height, width)``: the k-space of a roll by half the size
    (cached and read-only: training applies it to every slice)."""
    rows = np.exp(sign * 2j * np.pi * np.arange(height) * (height // 2) / height)
    columns = np.exp(sign * 2j * np.pi * np.arange(width) * (width // 2) / width)
    ramp = (rows[:, None] * columns[None, :]).astype(dtype)
    ramp.flags.writeable = False
    return ramp


def _with_origin_phase(kspace: np.ndarray, sign: int) -> np.ndarray:
    dtype = np.result_type(kspace, np.complex64)
    return np.multiply(kspace, _origin_phase(*kspace.shape[-2:], sign, dtype.type), dtype=dtype)


def centred_to_uncentred(kspace: np.ndarray) -> np.ndarray:
    """Centred k-space of an image (``fft2c(x)``, fastMRI) -> kdc's uncentred k-space of the same image (``fft2(x)``).

    Moves the DC term to index 0 and undoes the image-centre origin, so a model's image comes back upright.
    Keeps complex64 as complex64. Zeros (unsampled lines) stay zero.
    """
    return _with_origin_phase(np.fft.ifftshift(np.asarray(kspace), axes=(-2, -1)), -1)


def uncentred_to_centred(kspace: np.ndarray) -> np.ndarray:
    """The inverse of :func:`centred_to_uncentred`: ``fft2(x)`` -> ``fft2c(x)``."""
    return np.fft.fftshift(_with_origin_phase(np.asarray(kspace), 1), axes=(-2, -1))
