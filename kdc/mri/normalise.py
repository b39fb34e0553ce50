"""The contract's volume normalisation: a volume is scaled so that its zero-filled magnitude peaks at 1.

Training targets are scaled per volume by their own maximum (so they lie in [0, 1]); at inference there is no
target, so ``reconstruct(..., normalise=True)`` scales the measured k-space by the peak of its zero-filled image,
the same factor up to the undersampling's loss of energy.
"""

from __future__ import annotations

import numpy as np

from kdc.mri.layout import from_channels


def zero_filled_peak(kspace: np.ndarray) -> float:
    """Largest magnitude of the zero-filled images of a volume's k-space (orthonormal inverse FFT; 0 if empty).

    ``kspace`` is complex ``(..., H, W)`` or real channels ``(N, 2, H, W)`` (real, imaginary). Centred or not
    does not matter: centring moves pixels, it does not change their magnitudes.
    """
    kspace = np.asarray(kspace)
    if kspace.size == 0:
        return 0.0
    if not np.iscomplexobj(kspace):
        kspace = from_channels(kspace)
    return float(np.abs(np.fft.ifft2(kspace, norm="ortho")).max())
