"""Noise prewhitening of multi-coil data from a noise scan (Pruessmann et al. 2001; Kellman and McVeigh 2005).

Receiver coils have correlated noise of unequal levels. From samples taken with no signal (ISMRMRD's noise
readouts, ``ACQ_IS_NOISE_MEASUREMENT``) the noise covariance ``Psi = N N^H / (M - 1)`` (``N`` coils x ``M``
samples) gives the prewhitening matrix ``W = sqrt(2 s) L^-1`` (``Psi = L L^H``, Cholesky), as Gadgetron's
``NoiseAdjustGadget`` and the ISMRM Sunrise course compute it: after ``y -> W y`` every coil has uncorrelated noise
of standard deviation 1 in its real and imaginary parts. ``s`` scales the noise scan's bandwidth to the image
readouts': their dwell-time ratio times the receiver's relative noise bandwidth (Gadgetron's default 0.793).
Coil compression and combination (:mod:`kdc.mri.coils`, :mod:`kdc.mri.sensitivity`) assume white noise, so the
coils are whitened first. numpy only.
"""

from __future__ import annotations

import numpy as np

from kdc.errors import KdcError

#: The receiver's relative noise bandwidth when the header does not say (Gadgetron's default).
DEFAULT_RECEIVER_NOISE_BANDWIDTH = 0.793
#: Smallest eigenvalue of a usable noise covariance, relative to its largest (60 dB between channels' noise powers):
#: below it a channel is dead or a copy of others, and whitening would blow its rounding errors up.
MIN_NOISE_RATIO = 1e-6


class NoiseError(KdcError):
    """Noise samples that give no whitening: too few, not finite, or a covariance that is not positive definite."""


def noise_covariance(samples: np.ndarray) -> np.ndarray:
    """``(C, C)`` complex128 covariance ``N N^H / (M - 1)`` of ``(C, M)`` noise samples (C coils, M samples)."""
    samples = np.asarray(samples, dtype=np.complex128)
    coils, count = samples.shape
    if count < 2 * coils:
        raise NoiseError(f"{count} noise sample(s) per coil for {coils} coils: expected at least {2 * coils}")
    if not np.isfinite(samples).all():
        raise NoiseError("noise samples hold NaN or Inf")
    return samples @ samples.conj().T / (count - 1)


def bandwidth_scale(image_dwell_us: float, noise_dwell_us: float,
                    receiver_bandwidth: float = DEFAULT_RECEIVER_NOISE_BANDWIDTH) -> float:
    """``s``: the noise scan's variance relative to the image readouts' (1 when a dwell time is unknown, 0)."""
    if not (image_dwell_us > 0 and noise_dwell_us > 0):
        return 1.0
    return float(image_dwell_us / noise_dwell_us * receiver_bandwidth)


def prewhitening_matrix(covariance: np.ndarray, scale: float = 1.0) -> np.ndarray:
    """``(C, C)`` complex64 ``W = sqrt(2 scale) L^-1`` with ``covariance = L L^H``: ``W covariance W^H = 2 scale
    I``."""
    covariance = np.asarray(covariance, dtype=np.complex128)
    levels = np.linalg.eigvalsh(covariance)
    if not levels[0] > MIN_NOISE_RATIO * levels[-1]:
        raise NoiseError(f"noise covariance is not positive definite (eigenvalues {levels[0]:.3g} to "
                         f"{levels[-1]:.3g}: a dead or duplicated receiver channel?)")
    lower = np.linalg.cholesky(covariance)
    whitening = np.linalg.solve(lower, np.eye(len(lower))) * np.sqrt(2 * scale)
    return whitening.astype(np.complex64)


def prewhiten(kspace: np.ndarray, whitening: np.ndarray, coil_axis: int = -3) -> np.ndarray:
    """``(..., C, ...)`` multi-coil k-space or images, coils along ``coil_axis``, mixed by ``whitening`` (C, C)."""
    moved = np.moveaxis(np.asarray(kspace), coil_axis, -1)
    return np.moveaxis(moved @ whitening.T, -1, coil_axis).astype(np.complex64, copy=False)
