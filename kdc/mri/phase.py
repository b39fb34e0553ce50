"""How much of an image is imaginary, measured from undersampled k-space without reconstructing it.

A magnitude model (KD-MRI's convention) reconstructs the *real part* of the image. Real scanner k-space has phase,
and k-space in the wrong centring carries a linear phase: both put energy into the imaginary part, which such a
model throws away. For k-space ``K`` of an image ``x``, ``Re x`` has k-space ``(K[k] + conj K[-k]) / 2`` and
``Im x`` has ``(K[k] - conj K[-k]) / 2i``; over the fully sampled symmetric centre of a 1-D Cartesian mask that
splits the energy of the low-resolution image exactly (Parseval), for ``O(N H c)`` operations.
"""

from __future__ import annotations

import numpy as np

#: Imaginary share of the image energy above which a magnitude model is warned about (float32 rounding is ~1e-14).
PHASE_WARNING_FRACTION = 0.01


def symmetric_centre(lines: np.ndarray) -> np.ndarray | None:
    """Indices ``-c..c`` (mod W) of the widest run of sampled lines around DC of an uncentred 1-D mask, else None."""
    lines = np.asarray(lines, dtype=bool)
    width = lines.size
    if not lines[0]:
        return None
    half = 0
    while half + 1 <= width // 2 and lines[half + 1] and lines[-(half + 1)]:
        half += 1
    return np.unique(np.r_[np.arange(half + 1), -np.arange(1, half + 1) % width])


def imaginary_fraction(kspace: np.ndarray, lines: np.ndarray) -> float | None:
    """Share of the energy of the image that is imaginary, from uncentred complex k-space ``(..., H, W)`` sampled on
    the columns ``lines`` (``(W,)`` 0/1). Measured on the symmetric fully sampled centre; None if DC is not sampled.
    """
    columns = symmetric_centre(lines)
    if columns is None:
        return None
    return centre_imaginary_fraction(np.asarray(kspace)[..., columns], columns, np.size(lines))


def centre_imaginary_fraction(centre: np.ndarray, columns: np.ndarray, width: int) -> float | None:
    """:func:`imaginary_fraction` from the k-space columns ``columns`` (those of :func:`symmetric_centre`) alone,
    ``(..., H, len(columns))``: callers with a large batch convert only these columns to complex."""
    centre = np.asarray(centre, dtype=np.complex128)  # float32 squares overflow above 1.8e19
    height = centre.shape[-2]
    mirror_columns = np.searchsorted(columns, (-columns) % width)
    mirror = np.conj(centre[..., (-np.arange(height)) % height, :][..., mirror_columns])
    real = float(np.sum(np.abs(centre + mirror) ** 2))
    imaginary = float(np.sum(np.abs(centre - mirror) ** 2))
    return imaginary / (real + imaginary) if real + imaginary > 0 else None
