"""From what a format reader yields to training pairs: per-volume statistics, targets and single-coil k-space.

A volume's **target** is its stored fully sampled reference (KD-MRI's ``volfs``) or else the image of its fully
sampled k-space, coil-compressed to one virtual coil (``kdc.mri.coils``) when it has several coils: a complex
image. Every volume is scaled by its target's peak magnitude, so that targets lie in [0, 1]. Statistics (that
scale and the coil compression matrix) are computed once per volume by streaming its slices, and kept in a small
cache file per volume (``$KDC_CACHE_DIR``, default ``~/.cache/kdc``, under ``volume-stats/``) keyed by the file's
path, size and modification time; slices are then read one at a time.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass, replace
from pathlib import Path

import h5py
import numpy as np

from kdc._io import atomic_path
from kdc.data.errors import DataError
from kdc.data.formats import RawSlices, Reader, VolumeInfo, detect, open_h5
from kdc.mri.coils import apply_compression, calibration_region, coil_covariance, compression_matrix, virtual_coil
from kdc.mri.fft import ifft2, ifft2c


@dataclass(frozen=True)
class VolumeStats:
    """``scale``: the target's peak magnitude (divide by it); ``coil_matrix``: ``(1, C)`` virtual-coil weights,
    None for single-coil data."""

    scale: float
    coil_matrix: np.ndarray | None


@dataclass(frozen=True)
class Volume:
    """One volume, slices first, scaled so that ``abs(target).max() == 1``."""

    target: np.ndarray  # (S, H, W) float32 magnitude
    kspace: np.ndarray | None  # (S, H, W) complex64 stored undersampled uncentred k-space, or None: simulate it


def single_coil(raw: RawSlices, matrix: np.ndarray | None) -> np.ndarray:
    """``(S, H, W)`` uncentred single-coil k-space: the only coil, or the virtual coil of ``matrix``
    (:func:`kdc.mri.coils.virtual_coil`, as ``kdc reconstruct`` makes it)."""
    return virtual_coil(raw.kspace, matrix, raw.centred)


def target_images(raw: RawSlices, matrix: np.ndarray | None) -> np.ndarray:
    """``(S, H, W)`` complex64 targets: the stored reference, else the image of the (virtual-coil) k-space."""
    if raw.reference is not None:
        return raw.reference.astype(np.complex64)
    kspace = (raw.kspace if matrix is None else apply_compression(raw.kspace, matrix))[:, 0]
    return (ifft2c(kspace) if raw.centred else ifft2(kspace)).astype(np.complex64)


def volume_stats(file: h5py.File, reader: Reader, info: VolumeInfo) -> VolumeStats:
    """Scale and coil compression of a fully sampled volume, streaming one slice at a time."""
    matrix = None
    if info.coils > 1:
        region = np.fft.fftshift(calibration_region(None, info.image_shape))
        covariance = np.zeros((info.coils, info.coils), np.complex128)
        for index in range(info.slices):
            covariance += coil_covariance(reader.read(file, slice(index, index + 1)).kspace, region)
        matrix = compression_matrix(covariance)
    checked = matrix is not None  # the covariance pass checked every slice for NaN and Inf
    scale = max(float(np.abs(target_images(reader.read(file, slice(index, index + 1), check_finite=not checked),
                                           matrix)).max())
                for index in range(info.slices))
    if scale <= 0:
        raise DataError(f"{info.path}: target volume is all zero, cannot scale it to [0, 1]")
    return VolumeStats(scale, matrix)


#: Bump when what :func:`volume_stats` computes changes (2: ISMRMRD coils prewhitened, asymmetric echoes completed):
#: older cache files are then ignored.
STATS_VERSION = 2


def stats_cache_dir() -> Path:
    """Where volume statistics are cached: ``$KDC_CACHE_DIR/volume-stats``, default ``~/.cache/kdc/volume-stats``."""
    return Path(os.environ.get("KDC_CACHE_DIR") or Path.home() / ".cache" / "kdc") / "volume-stats"


def cached_volume_stats(file: h5py.File, reader: Reader, info: VolumeInfo) -> VolumeStats:
    """:func:`volume_stats`, read from the cache when this file (path, size, modification time) was seen before.

    A fastMRI-sized split takes minutes to stream; the cache makes every later open (each run, each evaluation)
    instant. A cache that cannot be read or written is ignored: the statistics are then computed again.
    """
    stat = Path(info.path).stat()
    key = f"{STATS_VERSION}|{Path(info.path).resolve()}|{stat.st_size}|{stat.st_mtime_ns}|{reader.name}"
    digest = hashlib.sha256(key.encode("utf-8", "surrogateescape")).hexdigest()  # file names need not be UTF-8
    path = stats_cache_dir() / f"{digest}.npz"
    try:
        with np.load(path, allow_pickle=False) as saved:
            matrix = saved["coil_matrix"]
            return VolumeStats(float(saved["scale"]), matrix if matrix.size else None)
    except (OSError, KeyError, ValueError):
        pass
    stats = volume_stats(file, reader, info)
    matrix = np.zeros((0, 0), np.complex64) if stats.coil_matrix is None else stats.coil_matrix
    try:
        with atomic_path(path) as tmp, tmp.open("wb") as handle:
            np.savez(handle, scale=np.float64(stats.scale), coil_matrix=matrix)
    except OSError:
        pass
    return stats


def read_volume(path: str | Path, acceleration: int | None = None) -> Volume:
    """Load and scale a whole volume (small volumes: the demo set, tests); with ``acceleration``, also KD-MRI's
    stored ``kspace_volus_{acc}`` if present. Training reads slices lazily through :mod:`kdc.data.slices`."""
    with open_h5(path) as file:
        reader = detect(file)
        info = replace(reader.inspect(file), path=Path(path))
        stats = volume_stats(file, reader, info)
        raw = reader.read(file, slice(None), acceleration)
        stored = reader.acquired_mask(file, acceleration) is not None and not raw.measured_phase
    target = (np.abs(target_images(raw, stats.coil_matrix)) / stats.scale).astype(np.float32)
    kspace = (single_coil(raw, stats.coil_matrix) / stats.scale).astype(np.complex64) if stored else None
    return Volume(target, kspace)
