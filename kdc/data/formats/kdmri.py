"""KD-MRI h5: ``volfs`` (H, W, S) fully sampled magnitude image (the target), ``img_volus_{acc}`` (H, W, S)
zero-filled image, ``kspace_volus_{acc}`` (H, W, S) complex undersampled k-space, uncentred, orthonormal FFT;
slices on the last axis. Without ``kspace_volus_{acc}``, the k-space is simulated from ``volfs``. ``volfs`` must be
real numbers (float, or integers converted to float32, e.g. int16 from DICOM) of at least 2x2."""

from __future__ import annotations

import h5py
import numpy as np

from kdc.data.errors import DataError
from kdc.data.formats.base import RawSlices, Reader, VolumeInfo, finite, image_dataset, register, slice_start
from kdc.data.formats.limits import check_dataset
from kdc.mri.fft import fft2
from kdc.mri.masks import mask_from_kspace


def stored_kspace_key(acceleration: int) -> str:
    return f"kspace_volus_{acceleration}"


def stored_kspace(file: h5py.File, key: str, volfs: h5py.Dataset) -> h5py.Dataset:
    """The complex ``kspace_volus_{acc}`` dataset ``key``, of ``volfs``'s shape, else a DataError."""
    stored = file[key]
    if not isinstance(stored, h5py.Dataset) or stored.shape != volfs.shape or stored.dtype.kind != "c":
        found = f"{stored.dtype} {stored.shape}" if isinstance(stored, h5py.Dataset) else "a group"
        raise DataError(f"{file.filename}: '{key}' is {found}, expected complex {volfs.shape}")
    check_dataset(f"{file.filename}: '{key}'", stored)
    return stored


@register
class KdmriReader(Reader):
    name = "kd-mri"
    signature = "'volfs' (KD-MRI)"

    def claims(self, file: h5py.File) -> bool:
        return "volfs" in file

    def inspect(self, file: h5py.File) -> VolumeInfo:
        height, width, slices = image_dataset(file, "volfs", "(H, W, slices)").shape
        return VolumeInfo(file.filename, self.name, slices, (height, width))

    def read(self, file: h5py.File, slices: slice, acceleration: int | None = None,
             check_finite: bool = True) -> RawSlices:
        volfs = image_dataset(file, "volfs", "(H, W, slices)")
        reference = finite(file, "volfs", np.moveaxis(volfs[:, :, slices], -1, 0), slice_start(slices),
                           check_finite)
        reference = reference.astype(np.float32)
        key = None if acceleration is None else stored_kspace_key(acceleration)
        if key is None or key not in file:
            return RawSlices(fft2(reference)[:, None].astype(np.complex64), False, reference, False)
        stored = stored_kspace(file, key, volfs)
        kspace = finite(file, key, np.moveaxis(stored[:, :, slices], -1, 0), slice_start(slices),
                        check_finite)
        return RawSlices(kspace[:, None].astype(np.complex64), False, reference, False)

    def acquired_mask(self, file: h5py.File, acceleration: int | None = None) -> np.ndarray | None:
        """The mask the stored ``kspace_volus_{acc}`` was undersampled with: the lines (or points) that hold
        non-zero samples in any slice (read one slice at a time); None without stored k-space."""
        key = None if acceleration is None else stored_kspace_key(acceleration)
        if key is None or key not in file:
            return None
        stored = stored_kspace(file, key, image_dataset(file, "volfs", "(H, W, slices)"))
        sampled = np.zeros(stored.shape[:2], dtype=bool)
        for index in range(stored.shape[-1]):
            sampled |= stored[:, :, index] != 0
        return mask_from_kspace(sampled)
