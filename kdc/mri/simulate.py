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


def smooth_phase(shape: tuple[int, int], rng: np.random.Generator, max_phase: float = np.pi) -> np.ndarray:
    """``(H, W)`` phase in radians: a random quadratic surface spanning at most ``[-max_phase, max_phase]``, as
    field inhomogeneity and coil phase make it: smooth, no wraps within a few pixels."""
    y, x = np.meshgrid(np.linspace(-1, 1, shape[0]), np.linspace(-1, 1, shape[1]), indexing="ij")
    terms = np.stack([np.ones_like(x), x, y, x * y, x**2, y**2])
    surface = np.tensordot(rng.uniform(-1, 1, len(terms)), terms, axes=1)
    return max_phase * surface / max(float(np.abs(surface).max()), 1e-12)


def complex_coil_images(magnitude: np.ndarray, coils: int, seed: int = 0, phase: bool = True) -> np.ndarray:
    """``(S, H, W)`` real magnitude slices of one volume -> ``(S, C, H, W)`` complex64 coil images.

    The volume gets one smooth random phase (``phase=False``: none) and ``coils`` birdcage sensitivities.
    """
    shape = magnitude.shape[-2:]
    image = magnitude * np.exp(1j * smooth_phase(shape, np.random.default_rng(seed))) if phase else magnitude
    return (image[:, None] * birdcage_maps(coils, shape)[None]).astype(np.complex64)
