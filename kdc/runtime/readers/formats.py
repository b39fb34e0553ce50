"""h5 inputs (KD-MRI, fastMRI single- and multi-coil, ISMRMRD), read by the registered format readers of
:mod:`kdc.data.formats`: their slices, acquired mask and geometry become one :class:`RawVolume` per file."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

from kdc.data.formats import detect, notices_after_success, open_h5
from kdc.runtime.readers import RawVolume, register_reader

HDF5_SIGNATURE = b"\x89HDF\r\n\x1a\n"


def is_hdf5(path: Path) -> bool:
    with path.open("rb") as file:
        return file.read(len(HDF5_SIGNATURE)) == HDF5_SIGNATURE


def read_h5(path: Path) -> Iterator[RawVolume]:
    with notices_after_success(), open_h5(path) as file:
        reader = detect(file)
        raw = reader.read(file, slice(None), check_finite=False)  # read_input checks every volume
        mask = reader.acquired_mask(file)
        geometry = reader.geometry(file)
        partial_fourier = reader.partial_fourier(file)
    yield RawVolume(path, path.stem, raw.kspace, raw.centred, mask, raw.reference, geometry, reader.phase_encode_axis,
                    partial_fourier)


register_reader("h5", is_hdf5, read_h5)
