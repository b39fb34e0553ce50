"""From scanner arrays to model inputs (numpy only): complex k-space to channels, fastMRI centring, masks.

Layouts follow docs/conventions.md: model k-space is ``(N, 2, H, W)`` float32, real and imaginary parts as channels,
uncentred (DC term at ``[0, 0]``); a 1-D Cartesian mask is a model input of shape ``(1, 1, 1, W)``.
"""

from __future__ import annotations

import numpy as np

from kdc.errors import KdcError
from kdc.mri.fft import centred_to_uncentred
from kdc.mri.layout import to_channels
from kdc.mri.masks import MaskError, line_mask_input


class RuntimeModelError(KdcError):
    """An exported model that cannot be loaded, or inputs that do not fit its contract."""


def kspace_channels(kspace: np.ndarray, *, centred: bool = False) -> np.ndarray:
    """Complex k-space ``(H, W)`` or ``(N, H, W)`` -> float32 ``(N, 2, H, W)``, uncentred.

    ``centred=True`` takes fastMRI's and most scanners' layout, ``fftshift(fft2(ifftshift(image)))``: the DC term in
    the middle and the image's origin at its centre. It becomes the k-space of the same, upright image in kdc's
    convention (:func:`kdc.mri.fft.centred_to_uncentred`), so the model's output needs no shift back.
    """
    kspace = np.asarray(kspace)
    if not np.iscomplexobj(kspace):
        raise RuntimeModelError(f"kspace_channels takes complex k-space, got dtype {kspace.dtype}")
    if kspace.ndim not in (2, 3):
        raise RuntimeModelError(f"complex k-space must be (H, W) or (N, H, W), got shape {kspace.shape}")
    if kspace.ndim == 2:
        kspace = kspace[None]
    return to_channels(centred_to_uncentred(kspace) if centred else kspace)


def mask_columns(mask: np.ndarray, width: int, *, centred: bool = False) -> np.ndarray:
    """A 1-D Cartesian mask ``(W,)``, ``(H, W)`` or ``(..., 1, W)`` -> float32 ``(1, 1, 1, W)`` of 0/1.

    A 2-D mask must sample whole columns (every row the same). ``centred=True`` takes a centred mask (DC column in the
    middle, as fastMRI's ``mask`` and the lines of centred k-space).
    """
    mask = np.asarray(mask)
    if mask.ndim == 0 or mask.shape[-1] != width:
        raise RuntimeModelError(f"mask must end in the image width {width}, got shape {mask.shape}")
    rows = mask.reshape(-1, width)
    try:
        return line_mask_input(rows, rows.shape, -1, centred=centred)
    except MaskError as err:
        raise RuntimeModelError(str(err)) from None


def example_mask(width: int, acceleration: float) -> np.ndarray:
    """An uncentred ``(1, 1, 1, W)`` mask sampling every ``round(acceleration)``-th column from the DC term on."""
    mask = np.zeros((1, 1, 1, width), dtype=np.float32)
    mask[..., :: max(1, round(acceleration))] = 1
    return mask


def example_kspace(batch: int, size: tuple[int, int], mask: np.ndarray, seed: int = 0) -> np.ndarray:
    """Undersampled k-space ``(batch, 2, H, W)`` float32 of random real images (no phase), zero outside ``mask``:
    for latency and load tests."""
    images = np.random.default_rng(seed).random((batch, *size), dtype=np.float32)
    kspace = np.fft.fft2(images, norm="ortho") * mask[:, 0]
    return to_channels(kspace)


def example_image(batch: int, size: tuple[int, int], seed: int = 0) -> np.ndarray:
    """Random ``(batch, 1, H, W)`` float32 image in [0, 1]: the input of a super-resolution model in load tests."""
    return np.random.default_rng(seed).random((batch, 1, *size), dtype=np.float32)


#: Coils of example inputs for a multi-coil model whose coil dimension is dynamic.
EXAMPLE_COILS = 4


def coil_mask_input(mask: np.ndarray, width: int) -> np.ndarray:
    """A centred column mask ``(W,)`` (or any shape holding W values, e.g. ``(1, 1, 1, W, 1)``) -> float32
    ``(1, 1, 1, W, 1)``, the mask input of a multi-coil (fastMRI VarNet) model."""
    mask = np.asarray(mask)
    if mask.size != width or np.iscomplexobj(mask):
        raise RuntimeModelError(f"mask must hold the {width} columns of the image, got shape {mask.shape}")
    return mask.astype(np.float32).reshape(1, 1, 1, width, 1)


def example_coil_feeds(batch: int, coils: int, size: tuple[int, int], acceleration: float, seed: int = 0
                       ) -> dict[str, np.ndarray]:
    """Random centred multi-coil k-space ``(batch, C, H, W, 2)`` zero outside a centred equispaced column mask with
    the DC column, and the mask ``(1, 1, 1, W, 1)``: for latency and load tests of a multi-coil model."""
    mask = np.fft.fftshift(example_mask(size[1], acceleration)[0, 0, 0]).reshape(1, 1, 1, -1, 1)
    kspace = np.random.default_rng(seed).standard_normal((batch, coils, *size, 2), dtype=np.float32)
    return {"kspace": kspace * mask, "mask": mask}
