"""Smooth random phase: turns a real magnitude image into a plausible complex MR image (numpy only).

MR images have a phase that varies slowly over the field of view (B0 inhomogeneity, coil phase). A low-order
polynomial in ``y`` and ``x`` with random coefficients models it; the same seed gives the same phase.
"""

from __future__ import annotations

import numpy as np

#: Peak phase excursion in radians of the default smooth phase.
DEFAULT_MAX_PHASE = np.pi


def smooth_phase(size: tuple[int, int], seed: int = 0, order: int = 2, max_phase: float = DEFAULT_MAX_PHASE) -> np.ndarray:
    """``(H, W)`` complex64 unit-magnitude array ``exp(i phi)``, ``phi`` a random polynomial of degree ``order``
    in ``y, x`` in ``[-1, 1]`` scaled so that ``max |phi| = max_phase``."""
    rng = np.random.default_rng(seed)
    y, x = np.meshgrid(np.linspace(-1, 1, size[0]), np.linspace(-1, 1, size[1]), indexing="ij")
    phi = sum(rng.uniform(-1, 1) * y**i * x**j for i in range(order + 1) for j in range(order + 1 - i))
    phi = phi * (max_phase / max(float(np.abs(phi).max()), 1e-12))
    return np.exp(1j * phi).astype(np.complex64)


def with_smooth_phase(images: np.ndarray, seed: int = 0) -> np.ndarray:
    """``(..., H, W)`` real images -> complex64 images, each slice with its own smooth phase (seeds ``seed + i``)."""
    images = np.asarray(images, dtype=np.float32)
    flat = images.reshape(-1, *images.shape[-2:])
    phased = np.stack([image * smooth_phase(image.shape, seed + i) for i, image in enumerate(flat)])
    return phased.reshape(images.shape)
