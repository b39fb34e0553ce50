"""fastMRI-style h5 ``NAME.h5``: ``reconstruction`` ``(S, H, W)`` float32, as fastMRI's evaluation script reads it.

fastMRI names the reconstruction of ``file1000.h5`` ``file1000.h5`` too, so the output keeps the input's stem.
Attributes record the model, its contract version, the acceleration and the mask.
"""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np

from kdc._io import atomic_path, printable
from kdc.runtime.writers import OutputVolume, WriteOptions, file_stem, register_writer


def write_fastmri_h5(volume: OutputVolume, directory: Path, options: WriteOptions) -> list[Path]:
    import h5py

    target = directory / f"{file_stem(volume.name)}.h5"
    provenance = volume.provenance
    buffer = io.BytesIO()  # built in memory, so that a full disk fails in a plain write, not inside HDF5's close
    with h5py.File(buffer, "w") as file:
        file.create_dataset("reconstruction", data=np.asarray(volume.image, dtype=np.float32))
        file.attrs["model"] = printable(provenance.model)
        file.attrs["role"] = printable(provenance.role)
        file.attrs["contract_version"] = provenance.contract_version
        file.attrs["acceleration"] = provenance.acceleration or 1.0
        file.attrs["mask"] = printable(provenance.mask)
        file.attrs["source"] = printable(provenance.source)
        file.attrs["description"] = printable(provenance.describe())
    with atomic_path(target) as tmp:
        tmp.write_bytes(buffer.getbuffer())
    return [target]


register_writer("h5", write_fastmri_h5, ("h5py",))
