"""Partial Fourier: k-space acquired asymmetrically about DC, completed by POCS (Haacke et al. 1991).

A scan with phase partial Fourier (e.g. 5/8) acquires the phase encodes of one side of k-space and only the centre
of the other; an asymmetric echo does the same along the readout. The image of such k-space, zero-filled, is blurred
and rings along that axis. Its missing side is (nearly) the conjugate mirror of the acquired one: for an image
``x = |x| e^{i phi}`` with a smooth phase, ``K(-k) = conj(K(k))`` after removing ``phi``. POCS alternates two
projections: the image onto ``|x| e^{i phi}`` (``phi`` from the symmetric centre, Hamming-windowed) and k-space onto
the acquired samples, which are kept exactly.

:func:`pocs` works along one axis, the others in the image domain (hybrid space): the readout of every image row
(k-space along x, image along y) and the phase encodes of every column (k-space along y, image along x), as 1-D POCS
per line. :class:`PartialFourier` says where a grid was acquired; :meth:`PartialFourier.complete` completes an
uncentred slice along both of its axes. k-space here is **uncentred** (DC at index 0), numpy only.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from kdc.errors import KdcError
from kdc.mri.phase import symmetric_centre

#: POCS stops after this many iterations, or once an iteration changes the estimate by less than
#: :data:`POCS_TOLERANCE` (relative norm).
POCS_ITERATIONS = 30
POCS_TOLERANCE = 1e-4
#: Fewest samples on either side of DC that the phase estimate needs (a symmetric centre of 2 x 4 + 1 samples).
MIN_SYMMETRIC_HALF = 4


class PartialFourierError(KdcError):
    """k-space whose acquired band cannot be completed: no symmetric centre around DC to estimate the phase from."""


@dataclass(frozen=True)
class Band:
    """The acquired samples ``[start, stop)`` of an axis of ``size`` samples, in **centred** indices (DC at
    ``size // 2``, as ISMRMRD and fastMRI number them)."""

    start: int
    stop: int
    size: int

    @property
    def before(self) -> int:
        """Samples acquired before DC."""
        return self.size // 2 - self.start

    @property
    def after(self) -> int:
        """Samples acquired after DC (DC included)."""
        return self.stop - self.size // 2

    @property
    def asymmetric(self) -> bool:
        """More than one sample more on one side of DC than on the other, within the axis: partial Fourier."""
        return abs(self.before - (self.after - 1)) > 1 and (self.start > 0 or self.stop < self.size)

    @property
    def fraction(self) -> float:
        return (self.stop - self.start) / self.size

    def lines(self) -> np.ndarray:
        """Uncentred boolean ``(size,)``: True where acquired."""
        acquired = np.zeros(self.size, dtype=bool)
        acquired[self.start : self.stop] = True
        return np.fft.ifftshift(acquired)

    def text(self) -> str:
        return f"{self.stop - self.start} of {self.size} ({self.fraction:.3g}), samples {self.start}..{self.stop - 1}"


@dataclass(frozen=True)
class PartialFourier:
    """Where a Cartesian ``(H, W)`` grid was acquired: a :class:`Band` along the rows (axis -2) and the columns
    (axis -1); ``phase_axis`` is the axis of the phase encodes, the other one the readout."""

    rows: Band
    columns: Band
    phase_axis: int

    @property
    def readout_axis(self) -> int:
        return -1 if self.phase_axis == -2 else -2

    def band(self, axis: int) -> Band:
        return self.rows if axis == -2 else self.columns

    @property
    def phase(self) -> Band:
        return self.band(self.phase_axis)

    @property
    def readout(self) -> Band:
        return self.band(self.readout_axis)

    def text(self) -> str:
        """``phase partial Fourier 40 of 64 (0.625) ..., asymmetric echo ...``: the asymmetric bands."""
        parts = [f"{label} {band.text()}" for label, band in (("phase partial Fourier", self.phase),
                                                              ("asymmetric echo", self.readout)) if band.asymmetric]
        return ", ".join(parts)

    def transposed(self) -> PartialFourier:
        """The same acquisition with rows and columns swapped."""
        return PartialFourier(self.columns, self.rows, self.readout_axis)

    def phase_lines(self, shape: tuple[int, int]) -> np.ndarray:
        """Uncentred float32 ``(H, W)`` mask of the phase-encode lines of the band (whole along the readout)."""
        lines = self.phase.lines()
        return np.broadcast_to(lines[:, None] if self.phase_axis == -2 else lines, shape).astype(np.float32)

    def covers(self, mask: np.ndarray | None) -> bool:
        """Whether the uncentred ``(H, W)`` ``mask`` acquires every phase-encode line of the band (the scan is fully
        sampled apart from its partial Fourier), None counting as fully sampled."""
        if mask is None:
            return True
        lines = np.asarray(mask).any(axis=self.readout_axis)
        return bool(lines[self.phase.lines()].all())

    def complete(self, kspace: np.ndarray, phase: bool = True) -> np.ndarray:
        """Uncentred ``(..., H, W)`` k-space with the asymmetric bands completed by :func:`pocs`: the readout
        first (along every image row), then, with ``phase``, the phase encodes (along every image column)."""
        axes = [self.readout_axis] + ([self.phase_axis] if phase else [])
        for axis in axes:
            band = self.band(axis)
            if band.asymmetric:
                kspace = pocs(kspace, band.lines(), axis)
        return kspace


def pocs(kspace: np.ndarray, acquired: np.ndarray, axis: int, iterations: int = POCS_ITERATIONS,
         tolerance: float = POCS_TOLERANCE) -> np.ndarray:
    """Complete uncentred ``(..., H, W)`` k-space along ``axis`` (-1 or -2) where the boolean line mask
    ``acquired`` (length of that axis, uncentred) is False, by 1-D POCS along that axis for every image line of the
    other axis (hybrid space); acquired samples come back unchanged (to rounding). The phase comes from the widest symmetric run of acquired samples around DC."""
    kspace = np.asarray(kspace)
    acquired = np.asarray(acquired, dtype=bool)
    size = kspace.shape[axis]
    if acquired.shape != (size,):
        raise PartialFourierError(f"partial Fourier: acquired band of {acquired.size} samples for an axis of {size}")
    centre = symmetric_centre(acquired)
    if centre is None or len(centre) < 2 * MIN_SYMMETRIC_HALF + 1:
        half = 0 if centre is None else len(centre) // 2
        raise PartialFourierError(f"partial Fourier: {half} sample(s) acquired on both sides of DC along an axis of "
                                  f"{size}, expected at least {MIN_SYMMETRIC_HALF} to estimate the phase from")
    shape = [1] * kspace.ndim
    shape[axis] = size
    keep = acquired.reshape(shape)
    half = len(centre) // 2
    window = np.zeros(size)
    window[np.arange(-half, half + 1) % size] = np.hamming(2 * half + 3)[1:-1]
    other = -1 if axis == -2 else -2
    # Hybrid space: image along the other axis, so that each line along ``axis`` is the k-space of one image line.
    measured = np.fft.ifft(np.where(keep, kspace, 0).astype(np.complex128), axis=other, norm="ortho")
    low = np.fft.ifft(measured * window.reshape(shape), axis=axis, norm="ortho")
    phase = np.exp(1j * np.angle(low))
    estimate = measured
    for _ in range(iterations):
        image = np.fft.ifft(estimate, axis=axis, norm="ortho")
        projected = np.fft.fft(np.abs(image) * phase, axis=axis, norm="ortho")
        updated = np.where(keep, measured, projected)
        change = np.linalg.norm(updated - estimate) / max(float(np.linalg.norm(updated)), 1e-30)
        estimate = updated
        if change < tolerance:
            break
    completed = np.fft.fft(estimate, axis=other, norm="ortho")
    return completed.astype(kspace.dtype if np.iscomplexobj(kspace) else np.complex64, copy=False)
