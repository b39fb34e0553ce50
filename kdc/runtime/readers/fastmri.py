"""fastMRI h5: ``kspace`` complex ``(S, H, W)`` single-coil or ``(S, C, H, W)`` multi-coil, **centred**.

Optional ``mask`` ``(W,)`` marks the acquired columns (fastMRI's test and challenge files); ``ismrmrd_header`` XML
gives the voxel size (encoded field of view over encoded matrix). Without ``mask`` the file is fully sampled and,
single-coil, its reference is the magnitude of the centred inverse FFT.
"""

from __future__ import annotations

import xml.etree.ElementTree as ElementTree
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from kdc.mri.fft import ifft2c
from kdc.runtime.readers import Geometry, InputError, RawVolume, register_reader
from kdc.runtime.readers.h5 import complex_array, has_key, open_h5


def ismrmrd_geometry(header: str, matrix: tuple[int, int]) -> Geometry:
    """Voxel size from an ISMRMRD XML header: encoded field of view over encoded matrix, if the matrix is the
    k-space's ``(H, W)`` (readout along H, phase encodes along W); else the default geometry with a note why."""
    try:
        root = ElementTree.fromstring(header)
    except ElementTree.ParseError as err:
        return Geometry(note=f"ismrmrd_header is not valid XML ({err}): 1 mm voxels assumed")
    namespace = {"m": root.tag.split("}")[0].strip("{")} if root.tag.startswith("{") else {}
    prefix = "m:" if namespace else ""

    def triple(tag: str) -> list[float] | None:
        node = root.find(f"{prefix}encoding/{prefix}encodedSpace/{prefix}{tag}", namespace)
        if node is None:
            return None
        try:
            return [float(node.findtext(f"{prefix}{axis}", namespaces=namespace)) for axis in "xyz"]
        except (TypeError, ValueError):
            return None

    size, fov = triple("matrixSize"), triple("fieldOfView_mm")
    if size is None or fov is None or min(fov) <= 0:
        return Geometry(note="ismrmrd_header has no encoded matrix and field of view: 1 mm voxels assumed")
    if (int(size[0]), int(size[1])) != matrix:
        return Geometry(note=f"ismrmrd_header's encoded matrix {int(size[0])}x{int(size[1])} is not the k-space's "
                             f"{matrix[0]}x{matrix[1]}: 1 mm voxels assumed")
    spacing = (fov[0] / size[0], fov[1] / size[1], fov[2] / max(size[2], 1))
    return Geometry(spacing=spacing, slice_thickness=spacing[2],
                    note="voxel size from ismrmrd_header; slice positions and orientation are not in the file "
                         "(slices stacked along z from 0)")


def read_fastmri(path: Path) -> Iterator[RawVolume]:
    with open_h5(path) as file:
        kspace = complex_array(path, file, "kspace", (3, 4))
        mask = np.asarray(file["mask"][()], dtype=np.float32).reshape(-1) if "mask" in file else None
        header = file["ismrmrd_header"][()] if "ismrmrd_header" in file else None
        attributes = {key: str(value) for key, value in file.attrs.items() if key in ("acquisition", "patient_id")}
    if kspace.ndim == 3:
        kspace = kspace[:, None]
    kspace = kspace.astype(np.complex64, copy=False)
    if mask is not None and mask.shape != (kspace.shape[-1],):
        raise InputError(f"{path}: 'mask' has {mask.size} entries, expected the k-space width {kspace.shape[-1]}")
    fully_sampled = mask is None or bool(mask.all())
    reference = np.abs(ifft2c(kspace[:, 0])).astype(np.float32) if fully_sampled and kspace.shape[1] == 1 else None
    matrix = (kspace.shape[-2], kspace.shape[-1])
    geometry = ismrmrd_geometry(header.decode() if isinstance(header, bytes) else str(header), matrix) \
        if header is not None else Geometry()
    yield RawVolume(path, path.stem, kspace, centred=True, mask=mask, reference=reference, geometry=geometry,
                    header=attributes)


register_reader("fastmri-h5", lambda path: has_key(path, "kspace"), read_fastmri)
