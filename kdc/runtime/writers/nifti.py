"""NIfTI-1 ``NAME.nii.gz``: the volume as float32 ``(W, H, S)`` voxels with the affine of its geometry.

Voxel ``(i, j, k)`` is column ``i``, row ``j`` of slice ``k``; the affine maps it to RAS millimetres (DICOM's LPS
with x and y negated), so viewers place it as the DICOM series of the same volume.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from kdc._io import atomic_path
from kdc.mri.geometry import Geometry
from kdc.runtime.writers import OutputVolume, WriteOptions, file_stem, placed, register_writer

LPS_TO_RAS = np.diag([-1.0, -1.0, 1.0])


def affine_of(geometry: Geometry) -> np.ndarray:
    """4x4 voxel ``(column, row, slice)`` -> RAS mm affine."""
    affine = np.eye(4)
    axes = np.stack([np.asarray(geometry.row_direction) * geometry.spacing[1],
                     np.asarray(geometry.column_direction) * geometry.spacing[0],
                     geometry.slice_axis * geometry.spacing[2]], axis=1)
    affine[:3, :3] = LPS_TO_RAS @ axes
    affine[:3, 3] = LPS_TO_RAS @ np.asarray(geometry.origin)
    return affine


def write_nifti(volume: OutputVolume, directory: Path, options: WriteOptions) -> list[Path]:
    import nibabel as nib
    from isal import igzip

    # (W, H, S) as a view: NIfTI stores x fastest, which is the C order of the (S, H, W) volume (no copy).
    image = nib.Nifti1Image(np.asarray(volume.image, dtype=np.float32).transpose(2, 1, 0), affine_of(placed(volume)))
    image.header.set_xyzt_units("mm")
    image.header["descrip"] = volume.provenance.describe().encode(errors="replace")[:79]
    image.header.set_qform(image.affine, code=1)
    image.header.set_sform(image.affine, code=1)
    target = directory / f"{file_stem(volume.name)}.nii.gz"
    with atomic_path(target) as tmp:  # ISA-L's gzip: the stream zlib writes at level 1, 7x faster
        tmp.write_bytes(igzip.compress(image.to_bytes(), compresslevel=1))
    return [target]


register_writer("nifti", write_nifti, ("nibabel", "isal"))
