"""Coil sensitivities by ESPIRiT (Uecker et al. 2014) and the SENSE operators, numpy only.

ESPIRiT calibrates from the fully sampled centre of k-space (the auto-calibration region): every ``kernel x kernel``
patch of the calibration block, over all coils, is a row of the calibration matrix; its right singular vectors
above ``threshold`` span the signal subspace. In image space this becomes, per pixel ``x``, the ``(C, C)`` operator
``W(x) = 1/k^2 sum_n g_n(x) g_n(x)^H`` (``g_n`` the kernel ``n`` Fourier-transformed to the image grid), whose
eigenvector of eigenvalue ~1 is the coil sensitivity at ``x``; pixels whose largest eigenvalue is below ``crop``
(outside the object) get no sensitivity. This is ``bart ecalib -m 1`` (one set of maps), with BART's defaults:
6x6 kernel, calibration region at most 24x24, threshold 0.001, crop 0.8, and the phase of every pixel rotated so
that the maps' combination with the first principal component (kdc's virtual coil,
:func:`kdc.mri.coils.compression_matrix`) is real and positive: a SENSE-combined image has the virtual coil's phase.

Speed: ``W(x)`` is a trigonometric polynomial of degree ``kernel - 1`` in each direction (a product of two
kernel-sized sums), so it is computed exactly on a ``2k x 2k`` grid and evaluated on the image grid from its
``(2k - 1)^2`` Fourier coefficients, in blocks of rows; only the per-pixel ``(C, C)`` eigen-decomposition runs at
full resolution, and only where ``||W(x)||_F`` (a bound on the largest eigenvalue) reaches ``crop``. The eigenvalue
map is exact where it reaches ``crop`` and 0 where the bound rules that out.

ESPIRiT needs a calibration region at least as wide as its kernel. Fewer centre lines (8x with fastMRI's 4 % centre
on 128 columns leaves 4) get :func:`direct_maps`: the coils' low-resolution images divided by their root sum of
squares (Pruessmann et al. 1999), which any run of centre lines calibrates. A 6x3 ESPIRiT kernel (``bart ecalib
-k 6:3``) on those 4 lines was measured worse than the zero-filled image on a brain slice at 8x (its eigenvalue map
cut 18 % of the object at crop 0.8; crop 0.5: 18.0 dB, zero-filled 17.6, direct maps 19.7).

k-space is kdc's: uncentred (DC at index 0), orthonormal FFT (:mod:`kdc.mri.fft`). Maps are ``(C, H, W)``
complex64, unit norm over the coils inside the support (``sum_c |S_c|^2 = 1``) and zero outside.
"""

from __future__ import annotations

import numpy as np

from kdc.mri.coils import CoilError, calibration_region, coil_covariance, compression_matrix, root_sum_of_squares
from kdc.mri.fft import fft2, ifft2

#: BART ``ecalib`` defaults: kernel size (``-k``), largest calibration region (``-r``), singular-value threshold
#: (``-t``, on ``(s / s_max)^2``) and eigenvalue crop (``-c``).
KERNEL = 6
CALIBRATION = 24
THRESHOLD = 0.001
CROP = 0.8
#: Pixels per block of the full-resolution eigen-decomposition (bounds the ``(pixels, C, C)`` working arrays).
BLOCK_PIXELS = 1 << 15
#: :func:`direct_maps` are zero where the low-resolution root sum of squares is below this share of its maximum.
DIRECT_SUPPORT = 0.05


def calibration_block(kspace: np.ndarray, mask: np.ndarray | None = None, size: int = CALIBRATION) -> np.ndarray:
    """The centred ``(C, h, w)`` fully sampled block around DC of uncentred ``(C, H, W)`` k-space, ``h, w`` at most
    ``size`` and of the parity of ``H, W`` (``mask=None``: fully sampled)."""
    region = np.fft.fftshift(calibration_region(mask, kspace.shape[-2:]))
    centred = np.fft.fftshift(kspace, axes=(-2, -1))
    centre = [n // 2 for n in region.shape]
    extents = []
    for axis, line in ((0, region[:, centre[1]]), (1, region[centre[0], :])):
        # Extents of the line count's parity, as BART picks them: as many lines on either side of DC.
        extent = min(size, line.size)
        extent -= (extent - line.size) % 2
        while extent > 0 and not line[centre[axis] - extent // 2 : centre[axis] - extent // 2 + extent].all():
            extent -= 2
        extents.append(max(extent, 0))
    # The region is a rectangle (a run of lines, or a square for 2-D masks): its centre row and column bound it.
    top, left = (c - e // 2 for c, e in zip(centre, extents))
    return centred[:, top : top + extents[0], left : left + extents[1]]


def espirit_calibrates(kspace: np.ndarray, mask: np.ndarray | None = None, kernel: int = KERNEL,
                       calibration: int = CALIBRATION) -> bool:
    """True when the calibration block of uncentred ``(C, H, W)`` k-space sampled with ``mask`` is at least
    ``kernel`` wide along both axes (what :func:`espirit_maps` and ``bart ecalib`` need)."""
    return min(calibration_block(kspace, mask, calibration).shape[-2:]) >= kernel


def direct_maps(kspace: np.ndarray, mask: np.ndarray | None = None, support: float = DIRECT_SUPPORT) -> np.ndarray:
    """``(C, H, W)`` coil sensitivities by the direct method (Pruessmann et al. 1999): the images of the calibration
    region of uncentred ``(C, H, W)`` k-space (the run of sampled lines around DC, whole along the readout) divided by
    their root sum of squares, zero where that is below ``support`` of its maximum. Coarser than ESPIRiT (the maps
    carry the low-resolution images' blur), but calibrated by as few centre lines as were sampled."""
    region = calibration_region(mask, kspace.shape[-2:])
    if not region.any():
        raise CoilError("coil sensitivities: the mask samples no lines around DC to calibrate them from")
    low = ifft2(np.asarray(kspace) * region)
    rss = root_sum_of_squares(low)
    inside = rss >= support * rss.max()
    return np.where(inside, low / np.where(inside, rss, 1), 0).astype(np.complex64)


def signal_kernels(block: np.ndarray, kernel: int = KERNEL, threshold: float = THRESHOLD) -> np.ndarray:
    """``(N, C, k, k)`` orthonormal kernels spanning the calibration matrix's row space (the patches): the singular
    vectors whose ``(s / s_max)^2`` exceeds ``threshold``."""
    coils, height, width = block.shape
    if min(height, width) < kernel:
        raise CoilError(f"ESPIRiT: calibration region {height}x{width} is smaller than the {kernel}x{kernel} kernel")
    patches = np.lib.stride_tricks.sliding_window_view(block, (kernel, kernel), axis=(-2, -1))
    matrix = patches.transpose(1, 2, 0, 3, 4).reshape(-1, coils * kernel * kernel)
    matrix = matrix.astype(np.complex128)
    # Eigenvectors of A^T conj(A) (squared singular values): the patches (rows of A) lie in their span; a 288x288
    # eigh instead of the SVD of the (positions, 288) matrix.
    energy, vectors = np.linalg.eigh(matrix.T @ matrix.conj())
    energy, vectors = energy[::-1], vectors[:, ::-1]
    keep = int(np.count_nonzero(energy / energy[0] > threshold)) if energy[0] > 0 else 0
    if keep == 0:
        raise CoilError("ESPIRiT: the calibration region holds no signal")
    return vectors[:, :keep].T.reshape(keep, coils, kernel, kernel)


def _operator_coefficients(kernels: np.ndarray) -> np.ndarray:
    """Fourier coefficients ``(C, C, 2k, 2k)`` (wrapped frequency order) of ``W(x) = 1/k^2 sum_n g_n g_n^H``,
    ``g_n(x) = sum_p kernel_n(p) exp(+2 pi i p.x / N)``."""
    size = 2 * kernels.shape[-1]
    padded = np.zeros((*kernels.shape[:2], size, size), np.complex128)
    padded[..., : kernels.shape[-2], : kernels.shape[-1]] = kernels
    images = np.fft.ifft2(padded) * size**2  # g_n on a 2k x 2k grid: exact samples of the trigonometric polynomial
    operator = np.einsum("nahw,nbhw->abhw", images, images.conj()) / kernels.shape[-1] ** 2
    return np.fft.fft2(operator) / size**2


def _synthesis(coefficients: int, points: int) -> np.ndarray:
    """``(points, coefficients)`` matrix ``exp(2 pi i d x / points)`` for the wrapped frequencies ``d``."""
    frequencies = np.fft.fftfreq(coefficients, 1 / coefficients)
    return np.exp(2j * np.pi * np.outer(np.arange(points), frequencies) / points)


def espirit_maps(kspace: np.ndarray, mask: np.ndarray | None = None, kernel: int = KERNEL,
                 calibration: int = CALIBRATION, threshold: float = THRESHOLD, crop: float = CROP,
                 eigenvalues: bool = False) -> np.ndarray | tuple[np.ndarray, np.ndarray]:
    """``(C, H, W)`` coil sensitivities of one slice of uncentred ``(C, H, W)`` k-space by ESPIRiT (one set of maps);
    ``mask`` (uncentred, ``None`` = fully sampled) locates the calibration region. ``eigenvalues=True`` also returns
    the ``(H, W)`` largest eigenvalue (BART's eigenvalue map; the maps are zero where it is below ``crop``; 0 where
    its bound ``||W(x)||_F`` is already below ``crop``)."""
    kspace = np.asarray(kspace)
    if kspace.ndim != 3 or kspace.shape[0] == 0:
        raise CoilError(f"ESPIRiT: expected (coils, H, W) k-space with at least one coil, got shape {kspace.shape}")
    coils, height, width = kspace.shape
    block = calibration_block(kspace, mask, calibration)
    coefficients = _operator_coefficients(signal_kernels(block, kernel, threshold))
    along_h = np.einsum("yi,abij->yjab", _synthesis(coefficients.shape[-2], height), coefficients)
    along_w = _synthesis(coefficients.shape[-1], width)
    reference = compression_matrix(coil_covariance(block, np.ones(block.shape[-2:], bool)))[0].astype(np.complex128)
    maps = np.zeros((height, width, coils), np.complex64)
    largest = np.zeros((height, width), np.float32)
    rows = max(1, BLOCK_PIXELS // width)
    for top in range(0, height, rows):
        block_rows = along_h[top : top + rows]
        operator = np.matmul(along_w, block_rows.reshape(*block_rows.shape[:2], -1)).reshape(-1, coils, coils)
        # ||W||_F bounds the largest eigenvalue: pixels below the crop (background) need no eigen-decomposition.
        candidates = np.flatnonzero(np.linalg.norm(operator, axis=(-2, -1)) >= crop)
        values, vectors = np.linalg.eigh(operator[candidates])
        vector = vectors[..., -1]
        virtual = vector @ reference  # the map's combination with the first principal component
        vector *= np.exp(-1j * np.angle(virtual))[..., None]
        maps[top : top + rows].reshape(-1, coils)[candidates] = vector
        largest[top : top + rows].reshape(-1)[candidates] = values[..., -1]
    maps[largest < crop] = 0
    maps = np.ascontiguousarray(maps.transpose(2, 0, 1))
    return (maps, largest) if eigenvalues else maps


def expand(image: np.ndarray, maps: np.ndarray) -> np.ndarray:
    """SENSE expand: ``(..., H, W)`` image -> ``(..., C, H, W)`` coil images ``S_c x``."""
    return maps * np.asarray(image)[..., None, :, :]


def combine(coil_images: np.ndarray, maps: np.ndarray) -> np.ndarray:
    """SENSE combine (reduce): ``(..., C, H, W)`` coil images -> ``(..., H, W)`` image ``sum_c conj(S_c) x_c``,
    the adjoint of :func:`expand`."""
    return np.sum(maps.conj() * coil_images, axis=-3)


def sense_forward(image: np.ndarray, maps: np.ndarray, mask: np.ndarray | None = None) -> np.ndarray:
    """The SENSE encoding ``A x = M F S x``: image -> uncentred multi-coil k-space (``mask=None``: all of it)."""
    kspace = fft2(expand(image, maps))
    return kspace if mask is None else kspace * mask


def sense_adjoint(kspace: np.ndarray, maps: np.ndarray, mask: np.ndarray | None = None) -> np.ndarray:
    """``A^H y = S^H F^H M y``: uncentred multi-coil k-space -> image (the zero-filled SENSE combination)."""
    return combine(ifft2(kspace if mask is None else kspace * mask), maps)
