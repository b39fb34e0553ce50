"""fastMRI h5, single-coil and multi-coil (the layouts of the fastMRI knee and brain sets).

Single-coil: ``kspace`` (S, H, W) complex64, ``reconstruction_esc`` (S, 320, 320). Multi-coil: ``kspace``
(S, C, H, W), ``reconstruction_rss`` (S, 320, 320). Both: k-space **centred** (fastMRI's ``fft2c``), H the
readout (640, oversampled twice), W the phase encodes; attributes ``acquisition``, ``max``, ``norm``, an
``ismrmrd_header`` XML string; test-set files add a ``mask`` (W,) of the acquired phase encodes. The stored
reconstructions are cropped to 320x320; the target is formed from the full k-space instead.
"""

from __future__ import annotations

from typing import ClassVar

import h5py
import numpy as np

from kdc.data.errors import DataError
from kdc.data.formats.base import (Geometry, RawSlices, Reader, VolumeInfo, dataset, finite, header_geometry,
                                   header_text, limits_band, notice_once, parse_header, read_leading, register,
                                   slice_start)
from kdc.mri.masks import MaskError, check_sampling, mask_from_kspace
from kdc.mri.partial_fourier import Band, PartialFourier


class FastmriReader(Reader):
    """The layout shared by the single-coil and multi-coil files; ``coil_axis`` says whether ``kspace`` has one."""

    signature = "'kspace' (fastMRI single- or multi-coil)"
    coil_axis: ClassVar[bool]
    expected: ClassVar[str]

    def claims(self, file: h5py.File) -> bool:
        data = file.get("kspace")
        return isinstance(data, h5py.Dataset) and (data.ndim == 4) == self.coil_axis

    def _kspace(self, file: h5py.File) -> h5py.Dataset:
        kspace = dataset(file, "kspace", self.expected, 4 if self.coil_axis else 3, complex_values=True)
        if 0 in kspace.shape[1:]:
            raise DataError(f"{file.filename}: 'kspace' has shape {kspace.shape}: no samples, expected {self.expected}")
        return kspace

    def inspect(self, file: h5py.File) -> VolumeInfo:
        shape = self._kspace(file).shape
        coils = shape[1] if self.coil_axis else 1
        return VolumeInfo(file.filename, self.name, shape[0], shape[-2:], coils)

    def read(self, file: h5py.File, slices: slice, acceleration: int | None = None,
             check_finite: bool = True) -> RawSlices:
        kspace = read_leading(self._kspace(file), slices)
        kspace = finite(file, "kspace", kspace, slice_start(slices), check_finite)
        if not self.coil_axis:
            kspace = kspace[:, None]
        return RawSlices(kspace.astype(np.complex64, copy=False), True, None, True)

    def acquired_mask(self, file: h5py.File, acceleration: int | None = None) -> np.ndarray | None:
        if "mask" not in file:
            return None
        height, width = self._kspace(file).shape[-2:]
        stored = file["mask"]
        if not isinstance(stored, h5py.Dataset) or stored.shape != (width,):
            found = f"has shape {stored.shape}" if isinstance(stored, h5py.Dataset) else "is a group"
            raise DataError(f"{file.filename}: 'mask' {found}, expected ({width},) phase encodes")
        values = stored[()]
        try:
            check_sampling(values, f"{file.filename}: 'mask'")
        except (MaskError, TypeError) as err:  # TypeError: strings, compounds
            raise DataError(str(err) if isinstance(err, MaskError) else
                            f"{file.filename}: 'mask' holds {stored.dtype} data, expected 0 and 1") from None
        lines = values.astype(bool)
        return None if lines.all() else np.fft.ifftshift(mask_from_kspace(np.broadcast_to(lines, (height, width))))

    def geometry(self, file: h5py.File) -> Geometry:
        """Voxel size from ``ismrmrd_header`` when its encoded matrix is the k-space's (readout along H)."""
        if "ismrmrd_header" not in file:
            return Geometry()
        header = header_text(file, "ismrmrd_header")
        try:
            matrix = parse_header(header).encoding[0].encodedSpace.matrixSize
            voxels = header_geometry(header, rows="x")
        except DataError as err:
            raise DataError(f"{file.filename}: 'ismrmrd_header': {err}") from None
        shape = self._kspace(file).shape[-2:]
        if (matrix.x, matrix.y) != shape:
            return Geometry(note=f"ismrmrd_header's encoded matrix {matrix.x}x{matrix.y} is not the k-space's "
                                 f"{shape[0]}x{shape[1]}: 1 mm voxels assumed")
        return voxels

    def partial_fourier(self, file: h5py.File) -> PartialFourier | None:
        """The phase encodes (columns) ``ismrmrd_header``'s ``encodingLimits`` say were acquired, when asymmetric
        (fastMRI's ``padding_left`` / ``padding_right``) and the k-space is zero outside them (checked on the first
        slice; else read as stored, said once). None for files kdc prepared: their k-space is complete."""
        if "ismrmrd_header" not in file or "kdc_source" in file.attrs:
            return None
        height, width = self._kspace(file).shape[-2:]
        try:
            encoding = parse_header(header_text(file, "ismrmrd_header")).encoding[0]
            if encoding.encodedSpace.matrixSize.y != width:
                return None
            band = limits_band(encoding, width)
        except DataError as err:
            raise DataError(f"{file.filename}: 'ismrmrd_header': {err}") from None
        if band is None or not band.asymmetric:
            return None
        outside = ~np.fft.fftshift(band.lines())  # centred, as the k-space is stored
        if np.any(self.read(file, slice(0, 1), check_finite=False).kspace[..., outside]):
            notice_once(f"{file.filename}:limits", f"{file.filename}: ismrmrd_header's encodingLimits say phase "
                                                   f"encodes {band.text()}, but 'kspace' holds samples outside them: "
                                                   "read as stored (no partial Fourier)")
            return None
        return PartialFourier(Band(0, height, height), band, phase_axis=-1)


@register
class FastmriMulticoilReader(FastmriReader):
    name = "fastmri-multicoil"
    coil_axis = True
    expected = "(slices, coils, H, W), complex"


@register
class FastmriSinglecoilReader(FastmriReader):
    name = "fastmri"
    coil_axis = False
    expected = "(slices, H, W), complex"

    def claims(self, file: h5py.File) -> bool:
        return "kspace" in file and not FastmriMulticoilReader().claims(file)
