"""Readers for per-volume h5 files in the KD-MRI and fastMRI single-coil layouts (layout detected per file).

KD-MRI: ``volfs`` (H, W, S) fully sampled image (the target), ``img_volus_{acc}`` (H, W, S) zero-filled image,
``kspace_volus_{acc}`` (H, W, S) complex undersampled k-space, uncentred, orthonormal FFT; slices on the last axis.

fastMRI single-coil: ``kspace`` (S, H, W) complex64, **centred**, ``reconstruction_esc`` (S, 320, 320), attributes
``acquisition``, ``max``, ``norm``. The target is the magnitude of the centred inverse FFT of the full k-space
(``H x W``, e.g. 640x368, not the cropped ``reconstruction_esc``). Its k-space is then simulated from that target
(uncentred FFT of the magnitude image, undersampled by the dataset's mask), the way KD-MRI built its data: the
network outputs a real image, so the measured k-space, whose image has a phase, would not match its target.

Every volume is scaled by its target's maximum so that targets are in [0, 1]; stored k-space gets the same factor.
Image fields (``volfs``) must be real: float, or integer (converted to float32, e.g. int16 from DICOM); bool,
complex and non-numeric data are refused, as are images smaller than 2x2.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
import h5py
import numpy as np

from kdc.data.errors import DataError
from kdc.mri.fft import ifft2c

KDMRI = "kd-mri"
FASTMRI = "fastmri"


@dataclass(frozen=True)
class VolumeInfo:
    """What a file holds, read from its header without loading the arrays."""

    path: Path
    layout: str
    slices: int
    image_shape: tuple[int, int]


@dataclass(frozen=True)
class Volume:
    """One volume, slices first, scaled so that ``target.max() == 1``."""

    target: np.ndarray  # (S, H, W) float32
    kspace: np.ndarray | None  # (S, H, W) complex64 uncentred undersampled k-space, or None: simulate it


def open_h5(path: str | Path) -> h5py.File:
    """Open an h5 file for reading; a missing or unreadable file is a :class:`DataError`."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: file not found")
    try:
        return h5py.File(path, "r")
    except OSError as err:
        raise DataError(f"{path}: not a readable HDF5 file ({err})") from None


def detect_layout(file: h5py.File) -> str:
    """``"kd-mri"`` if the file has ``volfs``, ``"fastmri"`` if it has ``kspace``."""
    if "volfs" in file:
        return KDMRI
    if "kspace" in file:
        return FASTMRI
    raise DataError(
        f"{file.filename}: expected 'volfs' (KD-MRI) or 'kspace' (fastMRI single-coil), "
        f"found keys {sorted(file.keys())}"
    )


def _dataset(file: h5py.File, key: str, expected: str) -> h5py.Dataset:
    """The 3-D array ``key`` of ``file``, else a DataError naming what ``expected`` describes."""
    if key not in file:
        raise DataError(f"{file.filename}: missing '{key}' {expected}, found keys {sorted(file.keys())}")
    data = file[key]
    if not isinstance(data, h5py.Dataset) or data.ndim != 3:
        shape = getattr(data, "shape", None)
        hint = " (multi-coil data is not supported)" if key == "kspace" and shape and len(shape) == 4 else ""
        raise DataError(f"{file.filename}: '{key}' must be a 3-D array {expected}, got {shape or 'a group'}{hint}")
    return data


#: dtype kinds of image fields: float as it is, signed and unsigned integers converted to float32.
IMAGE_KINDS = {"f": "float", "i": "integer", "u": "integer"}


def _check_image(file: h5py.File, key: str, data: h5py.Dataset) -> None:
    """Refuse an image field that is not real numbers (see the module docstring)."""
    if data.dtype.kind not in IMAGE_KINDS:
        hint = "; store its magnitude" if data.dtype.kind == "c" else ""
        raise DataError(f"{file.filename}: '{key}' holds {data.dtype} data, expected a real (float or integer) "
                        f"image{hint}")


def _check_image_size(path: str | Path, key: str, height: int, width: int) -> None:
    if height < 2 or width < 2:
        raise DataError(f"{path}: '{key}' holds {height}x{width} images, expected at least 2x2")


def inspect_volume(path: str | Path) -> VolumeInfo:
    """Layout, slice count and image shape of a KD-MRI or fastMRI h5 file."""
    with open_h5(path) as file:
        layout = detect_layout(file)
        if layout == KDMRI:
            volfs = _dataset(file, "volfs", "(H, W, slices)")
            _check_image(file, "volfs", volfs)
            key, (height, width, slices) = "volfs", volfs.shape
        else:
            key, (slices, height, width) = "kspace", _dataset(file, "kspace", "(slices, H, W)").shape
    if slices == 0:
        raise DataError(f"{path}: volume has no slices")
    _check_image_size(path, key, height, width)
    return VolumeInfo(Path(path), layout, slices, (height, width))


def read_volume(path: str | Path, acceleration: int | None = None) -> Volume:
    """Load and scale one volume; with ``acceleration``, also KD-MRI's stored ``kspace_volus_{acc}`` if present."""
    with open_h5(path) as file:
        if detect_layout(file) == KDMRI:
            target, kspace = _read_kdmri(file, acceleration)
        else:
            target, kspace = _read_fastmri_target(file), None
    target = target.astype(np.float32)
    scale = float(target.max())
    if scale <= 0:
        raise DataError(f"{path}: target volume is all zero, cannot scale it to [0, 1]")
    return Volume(target / np.float32(scale), None if kspace is None else (kspace / scale).astype(np.complex64))


def _read_kdmri(file: h5py.File, acceleration: int | None) -> tuple[np.ndarray, np.ndarray | None]:
    volfs = _dataset(file, "volfs", "(H, W, slices)")
    _check_image(file, "volfs", volfs)
    target = _finite(file, "volfs", np.moveaxis(volfs[()], -1, 0))
    key = f"kspace_volus_{acceleration}"
    if acceleration is None or key not in file:
        return target, None
    stored = _dataset(file, key, "(H, W, slices), complex")
    if stored.shape != volfs.shape or stored.dtype.kind != "c":
        raise DataError(f"{file.filename}: '{key}' is {stored.dtype} {stored.shape}, expected complex {volfs.shape}")
    return target, _finite(file, key, np.moveaxis(stored[()], -1, 0))


def _read_fastmri_target(file: h5py.File) -> np.ndarray:
    stored = _dataset(file, "kspace", "(slices, H, W), complex")
    if stored.dtype.kind != "c":
        raise DataError(f"{file.filename}: 'kspace' is {stored.dtype}, expected complex")
    return np.abs(ifft2c(_finite(file, "kspace", stored[()])))


def _finite(file: h5py.File, key: str, slices: np.ndarray) -> np.ndarray:
    """``slices`` (slices first), unless one of them holds NaN or Inf."""
    bad = np.flatnonzero(~np.isfinite(slices).all(axis=(-2, -1)))
    if bad.size:
        raise DataError(f"{file.filename}: '{key}' has NaN or Inf in slice {bad[0]} ({bad.size} slice(s) in all)")
    return slices
