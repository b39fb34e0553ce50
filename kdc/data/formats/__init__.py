"""Input formats: one registered reader per h5 layout (KD-MRI, fastMRI single- and multi-coil, ISMRMRD).

:func:`detect` picks a file's reader by its keys; :func:`inspect_volume` and :func:`read_slices` are the entry
points. See docs/formats.md.
"""

# Registration order is detection order.
from kdc.data.formats import kdmri, fastmri, ismrmrd  # noqa: F401,I001  (registers the readers)
from kdc.data.formats.base import (READERS, Geometry, RawSlices, Reader, VolumeInfo, detect, inspect_volume,
                                   notice_once, notices_after_success, open_h5, printable,
                                   read_slices)

__all__ = ["READERS", "Geometry", "RawSlices", "Reader", "VolumeInfo", "detect", "inspect_volume", "notice_once",
           "notices_after_success", "open_h5", "printable", "read_slices"]
