"""Complex multi-coil images simulated from real magnitude slices: smooth random phase and birdcage coil maps.

``birdcage_maps`` follows sigpy's ``sigpy.mri.birdcage_maps`` (coils on a circle of radius ``radius`` around the
field of view, sensitivity ``1/r`` with the phase of the azimuth, normalised to unit root sum of squares), written
in numpy so that the data path does not pull in sigpy and numba.
"""

from __future__ import annotations

import numpy as np


def birdcage_maps(coils: int, shape: tuple[int, int], radius: float = 1.5) -> np.ndarray:
    """``(C, H, W)`` complex64 coil sensitivities of a birdcage coil, root sum of squares 1 at every pixel."""
    coil, y, x = np.mgrid[:coils, : shape[0], : shape[1]].astype(np.float64)
    angle = coil * (2 * np.pi / coils)
    x_offset = (x - shape[1] / 2) / (shape[1] / 2) - radius * np.cos(angle)
    y_offset = (y - shape[0] / 2) / (shape[0] / 2) - radius * np.sin(angle)
    maps = np.exp(1j * (np.arctan2(x_offset, -y_offset) - angle)) / np.hypot(x_offset, y_offset)
    return (maps / np.sqrt((np.abs(maps) ** 2).sum(axis=0))).astype(np.complex64)


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


def complex_coil_images(magnitude: np.ndarray, coils: int, seed: int = 0, phase: bool = True) -> np.ndarray:
    """``(S, H, W)`` real magnitude slices of one volume -> ``(S, C, H, W)`` complex64 coil images.

    The volume gets one smooth random phase (``phase=False``: none) and ``coils`` birdcage sensitivities.
    """
    shape = magnitude.shape[-2:]
    image = magnitude * smooth_phase(shape, seed) if phase else magnitude
    return (image[:, None] * birdcage_maps(coils, shape)[None]).astype(np.complex64)
