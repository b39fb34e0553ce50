"""Partial Fourier: k-space acquired asymmetrically about DC, completed by POCS (Haacke et al. 1991).

A scan with phase partial Fourier (e.g. 5/8) acquires the phase encodes of one side of k-space and only the centre
of the other; an asymmetric echo does the same along the readout. The image of such k-space, zero-filled, is blurred
and rings along that axis. Its missing side is (nearly) the conjugate mirror of the acquired one: for an image
``x = |x| e^{i phi}`` with a smooth phase, ``K(-k) = conj(K(k))`` after removing ``phi``. POCS alternates two
projections: the image onto ``|x| e^{i phi}`` (``phi`` from the symmetric centre, Hamming-windowed) and k-space onto
the acquired samples, which are kept exactly.

:func:`pocs` works in 2-D when both axes are asymmetric, else along the one axis for every image line of the other
(hybrid space: k-space along y, image along x for phase partial Fourier), as 1-D POCS per line.
:class:`PartialFourier` says where a grid was acquired and completes it. k-space here is **uncentred** (DC at
index 0); numpy only.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from kdc.errors import KdcError
from kdc.mri.phase import symmetric_centre

#: POCS stops after this many iterations, or once an iteration changes the estimate by less than
#: :data:`POCS_TOLERANCE` (relative norm).
POCS_ITERATIONS = 15
POCS_TOLERANCE = 1e-3
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

    def complete(self, kspace: np.ndarray) -> np.ndarray:
        """Uncentred ``(..., H, W)`` k-space holding every line of the bands -> completed along every asymmetric
        axis by :func:`pocs` (2-D when both are)."""
        lines = [band.lines() if band.asymmetric else None for band in (self.rows, self.columns)]
        return kspace if all(line is None for line in lines) else pocs(kspace, lines[0], lines[1])

    def complete_readout(self, kspace: np.ndarray, phase_band_acquired: bool) -> np.ndarray:
        """Uncentred ``(..., H, W)`` k-space with an asymmetric echo completed and every phase encode left as it is
        (lines not acquired stay zero). ``phase_band_acquired``: every line of the phase band is there, so the
        estimate is the 2-D one of :meth:`complete`; otherwise (undersampled) 1-D POCS along the readout of the
        aliased image rows, an approximation."""
        if not self.readout.asymmetric:
            return kspace
        if phase_band_acquired:
            return self.complete(kspace) * self.phase_lines(kspace.shape[-2:])
        lines = self.readout.lines()
        return pocs(kspace, None, lines) if self.readout_axis == -1 else pocs(kspace, lines, None)


def pocs(kspace: np.ndarray, rows: np.ndarray | None, columns: np.ndarray | None,
         iterations: int = POCS_ITERATIONS, tolerance: float = POCS_TOLERANCE) -> np.ndarray:
    """Complete uncentred ``(..., H, W)`` k-space where the boolean line masks ``rows`` (``(H,)``, uncentred) and
    ``columns`` (``(W,)``) are False; None: that axis is complete, and POCS runs along the other one for every image
    line of it (hybrid space). Acquired samples come back unchanged. The phase comes from the widest symmetric
    block of acquired samples around DC, Hamming-windowed."""
    kspace = np.asarray(kspace)
    keep = np.ones((1, 1), dtype=bool)
    window = np.ones((1, 1))
    axes = []
    for axis, lines in ((-2, rows), (-1, columns)):
        if lines is None:
            continue
        lines = np.asarray(lines, dtype=bool)
        size = kspace.shape[axis]
        if lines.shape != (size,):
            raise PartialFourierError(f"partial Fourier: acquired band of {lines.size} samples for an axis of {size}")
        centre = symmetric_centre(lines)
        half = 0 if centre is None else len(centre) // 2
        if half < MIN_SYMMETRIC_HALF:
            raise PartialFourierError(f"partial Fourier: {half} sample(s) acquired on both sides of DC along an axis "
                                      f"of {size}, expected at least {MIN_SYMMETRIC_HALF} to estimate the phase from")
        shape = [1, 1]
        shape[axis] = size
        taper = np.zeros(size)
        taper[np.arange(-half, half + 1) % size] = np.hamming(2 * half + 3)[1:-1]
        keep = keep & lines.reshape(shape)
        window = window * taper.reshape(shape)
        axes.append(axis)
    hybrid = [axis for axis in (-2, -1) if axis not in axes]  # complete axes: in the image domain throughout
    measured = np.where(keep, kspace, 0).astype(np.complex64)
    if hybrid:
        measured = np.fft.ifft(measured, axis=hybrid[0], norm="ortho")
    phase = np.exp(1j * np.angle(np.fft.ifftn(measured * window, axes=axes, norm="ortho"))).astype(np.complex64)
    estimate = measured
    for _ in range(iterations):
        image = np.fft.ifftn(estimate, axes=axes, norm="ortho")
        projected = np.fft.fftn(np.abs(image) * phase, axes=axes, norm="ortho")
        updated = np.where(keep, measured, projected)
        change = np.linalg.norm(updated - estimate) / max(float(np.linalg.norm(updated)), 1e-30)
        estimate = updated
        if change < tolerance:
            break
    if hybrid:
        estimate = np.fft.fft(estimate, axis=hybrid[0], norm="ortho")
    return estimate.astype(kspace.dtype if np.iscomplexobj(kspace) else np.complex64, copy=False)
