"""Coil compression of multi-coil k-space to virtual coils by SVD/PCA (Buehrer et al. 2007, Huang et al. 2008).

The compression matrix of a volume comes from the covariance of its calibration region (the fully sampled
low-frequency lines of every slice, or all of k-space when fully sampled): its leading eigenvectors combine the
physical coils into the virtual coils that hold most of the signal energy. One virtual coil is what the
single-coil networks take; its image is a coil combination whose magnitude is close to the root sum of squares
where one coil profile dominates and never above it (Cauchy-Schwarz with unit-norm weights).

k-space here is **uncentred** (DC term at index 0), the order kdc computes in; :func:`compress_coils` also takes
centred k-space as stored (the compression is per sample, so it commutes with shifts and FFTs).

One path from a file's coils to the single-coil networks' input, for training and inference alike:
:func:`volume_compression` (or the covariance streamed over a volume's slices, :mod:`kdc.data.volumes`, the same
rule) gives the volume's matrix, and :func:`virtual_coil` applies it and uncentres the result.
"""

from __future__ import annotations

import numpy as np

from kdc.errors import KdcError
from kdc.mri.fft import centred_to_uncentred
from kdc.mri.masks import sampled_lines


class CoilError(KdcError):
    """Coil data that cannot be compressed: no coils, or more virtual coils than physical ones."""


def calibration_region(mask: np.ndarray | None, shape: tuple[int, int]) -> np.ndarray:
    """Boolean ``(H, W)`` calibration region of an uncentred mask: the contiguous run of sampled lines around the DC
    term (the auto-calibration lines), whole along the readout; all of k-space for ``mask=None`` (fully sampled)
    or a 2-D mask's contiguous sampled block around DC."""
    if mask is None:
        return np.ones(shape, dtype=bool)
    lines = sampled_lines(mask)
    if lines is None:
        return _dc_block(np.asarray(mask) != 0)
    axis, indices = lines
    sampled = np.zeros(mask.shape[axis], dtype=bool)
    sampled[indices] = True
    run = _dc_run(sampled)
    return np.broadcast_to(run if axis == -1 else run[:, None], shape).copy()


def _dc_run(sampled: np.ndarray) -> np.ndarray:
    """The contiguous run of True around index 0 of an uncentred 1-D line mask (wrapping around the end)."""
    run = np.zeros_like(sampled)
    if not sampled[0]:
        return run
    size = sampled.size
    for step in (1, -1):
        index = 0
        while sampled[index % size] and abs(index) < size:
            run[index % size] = True
            index += step
    return run


def _dc_block(sampled: np.ndarray) -> np.ndarray:
    """The largest square around the DC term of an uncentred 2-D mask that is fully sampled."""
    centred = np.fft.fftshift(sampled)
    (cy, cx), half = (size // 2 for size in centred.shape), 0
    while half < min(centred.shape) // 2 and centred[cy - half - 1 : cy + half + 2, cx - half - 1 : cx + half + 2].all():
        half += 1
    block = np.zeros_like(centred)
    block[cy - half : cy + half + 1, cx - half : cx + half + 1] = centred[cy, cx]
    return np.fft.ifftshift(block)


def coil_covariance(kspace: np.ndarray, region: np.ndarray) -> np.ndarray:
    """``(C, C)`` covariance ``Y Y^H`` of the calibration samples of ``(..., C, H, W)`` k-space; sums over slices."""
    coils = kspace.shape[-3]
    # All of k-space (fully sampled data): a reshape, not a 28 MB boolean-indexed copy per fastMRI slice.
    samples = np.moveaxis(kspace, -3, 0) if region.all() else np.moveaxis(kspace[..., region], -2, 0)
    samples = samples.reshape(coils, -1)
    return samples @ samples.conj().T


def compression_matrix(covariance: np.ndarray, virtual: int = 1) -> np.ndarray:
    """``(V, C)`` matrix of the ``virtual`` leading eigenvectors (conjugated), each scaled to a real, non-negative
    weight on the strongest coil so that the virtual coil's phase follows that coil's and is reproducible."""
    coils = covariance.shape[0]
    if coils == 0:
        raise CoilError("no coils to compress (coil count 0)")
    if not 1 <= virtual <= coils:
        raise CoilError(f"{virtual} virtual coil(s) from {coils} coil(s): expected 1 to {coils}")
    _, vectors = np.linalg.eigh(covariance)
    leading = vectors[:, ::-1][:, :virtual]
    strongest = np.argmax(np.abs(leading), axis=0)
    phase = leading[strongest, np.arange(virtual)]
    leading = leading * (np.abs(phase) / np.where(phase == 0, 1, phase))
    return leading.conj().T.astype(np.complex64)


def apply_compression(kspace: np.ndarray, matrix: np.ndarray) -> np.ndarray:
    """``(..., C, H, W)`` k-space -> ``(..., V, H, W)`` virtual coils (linear: works on k-space or images)."""
    *batch, coils, height, width = kspace.shape
    flat = kspace.reshape(*batch, coils, height * width)
    return np.matmul(matrix, flat).reshape(*batch, matrix.shape[0], height, width).astype(np.complex64, copy=False)


def volume_compression(kspace: np.ndarray, mask: np.ndarray | None = None, virtual: int = 1,
                       centred: bool = False) -> np.ndarray:
    """The ``(V, C)`` compression matrix of one volume's ``(S, C, H, W)`` k-space, from the covariance of its
    calibration region over every slice; ``mask`` is uncentred whatever the k-space's centring (None: fully
    sampled, all of k-space); ``centred=True``: the k-space has its DC term in the middle."""
    if kspace.ndim != 4 or kspace.shape[1] == 0:
        raise CoilError(f"expected (slices, coils, H, W) k-space with at least one coil, got shape {kspace.shape}")
    region = calibration_region(mask, kspace.shape[-2:])
    if centred:
        region = np.fft.fftshift(region)
    return compression_matrix(coil_covariance(kspace, region), virtual)


def compress_coils(kspace: np.ndarray, mask: np.ndarray | None = None, virtual: int = 1,
                   centred: bool = False) -> np.ndarray:
    """``(S, C, H, W)`` k-space of one volume -> ``(S, V, H, W)``, compressed with :func:`volume_compression`."""
    return apply_compression(kspace, volume_compression(kspace, mask, virtual, centred))


def virtual_coil(kspace: np.ndarray, matrix: np.ndarray | None, centred: bool) -> np.ndarray:
    """``(S, H, W)`` uncentred complex64 k-space of one virtual coil, what kdc's single-coil networks take:
    ``(S, C, H, W)`` k-space combined with the ``(1, C)`` ``matrix`` (None: its only coil), uncentred when
    ``centred`` (:func:`kdc.mri.fft.centred_to_uncentred`)."""
    single = (kspace if matrix is None else apply_compression(kspace, matrix))[:, 0]
    return (centred_to_uncentred(single) if centred else single).astype(np.complex64, copy=False)


def root_sum_of_squares(coil_images: np.ndarray, axis: int = -3) -> np.ndarray:
    """Root sum of squares over the coil axis (fastMRI's ``rss``): the multi-coil magnitude image, fastMRI's target
    when computed from the fully sampled coils."""
    return np.sqrt(np.sum(np.abs(coil_images) ** 2, axis=axis))
