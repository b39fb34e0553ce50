"""Input readers of ``kdc reconstruct``: one registered reader per file layout, one entry point, :func:`read_input`.

A reader turns a file into :class:`RawVolume` objects: complex k-space slices ``(S, C, H, W)`` in a stated centring,
the mask that was acquired (when the file says), the fully sampled reference image (when the data allow one) and
the geometry the writers need. A new layout (ISMRMRD, fastMRI multi-coil, ...) is one module that calls
:func:`register_reader`; nothing else changes. The interface is documented in docs/reconstruct.md.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from kdc.errors import KdcError


class InputError(KdcError):
    """An input file that cannot be reconstructed: unreadable, unknown layout, wrong shape or dtype."""


#: Orientation used when a file carries none: rows along patient x, columns along patient y (DICOM LPS axes).
DEFAULT_ROW_DIRECTION = (1.0, 0.0, 0.0)
DEFAULT_COLUMN_DIRECTION = (0.0, 1.0, 0.0)


@dataclass(frozen=True)
class Geometry:
    """Where the image voxels are, in DICOM patient coordinates (LPS, millimetres).

    ``spacing`` is ``(between rows, between columns, between slices)``: the pixel size along H, along W, and the
    slice distance. ``origin`` is the centre of the first pixel of the first slice. ``row_direction`` is the
    direction of increasing column index (along a row, W), ``column_direction`` that of increasing row index (H),
    as DICOM's ImageOrientationPatient. ``note`` says what was assumed rather than read from the file.
    """

    spacing: tuple[float, float, float] = (1.0, 1.0, 1.0)
    origin: tuple[float, float, float] = (0.0, 0.0, 0.0)
    row_direction: tuple[float, float, float] = DEFAULT_ROW_DIRECTION
    column_direction: tuple[float, float, float] = DEFAULT_COLUMN_DIRECTION
    slice_thickness: float | None = None
    note: str | None = "no geometry in the input: 1 mm voxels, origin 0, axial orientation assumed"

    @property
    def normal(self) -> np.ndarray:
        """Unit vector from one slice to the next."""
        return np.cross(self.row_direction, self.column_direction)

    def slice_position(self, index: int) -> tuple[float, float, float]:
        """Centre of the first pixel of slice ``index`` (DICOM ImagePositionPatient)."""
        position = np.asarray(self.origin) + index * self.spacing[2] * self.normal
        return (float(position[0]), float(position[1]), float(position[2]))

    def cropped(self, offset: tuple[int, int]) -> Geometry:
        """The geometry of the image cut out from row ``offset[0]``, column ``offset[1]`` on."""
        shift = (offset[0] * self.spacing[0] * np.asarray(self.column_direction)
                 + offset[1] * self.spacing[1] * np.asarray(self.row_direction))
        origin = tuple(float(v) for v in np.asarray(self.origin) + shift)
        return Geometry(self.spacing, origin, self.row_direction, self.column_direction, self.slice_thickness,
                        self.note)


@dataclass
class RawVolume:
    """One volume as a reader delivers it.

    ``kspace``: complex64 ``(S, C, H, W)`` (slices, coils, rows, columns), phase encodes along W, orthonormal FFT
    scale not required (the runtime normalises each volume). ``centred``: True if the DC term is at
    ``(H // 2, W // 2)`` (fastMRI, ISMRMRD), False if at ``(0, 0)`` (KD-MRI). ``mask``: ``(W,)`` 0/1 phase-encode
    columns that were acquired, in the same centring as ``kspace``; None when the file does not say and every
    column holds data. ``reference``: ``(S, H, W)`` float32 fully sampled magnitude image, or None.
    ``name``: stem of the output files. ``header``: extra facts for the output (acquisition, field strength, ...).
    """

    source: Path
    name: str
    kspace: np.ndarray
    centred: bool
    mask: np.ndarray | None = None
    reference: np.ndarray | None = None
    geometry: Geometry = field(default_factory=Geometry)
    header: dict[str, str] = field(default_factory=dict)

    @property
    def slices(self) -> int:
        return int(self.kspace.shape[0])

    @property
    def coils(self) -> int:
        return int(self.kspace.shape[1])

    @property
    def matrix(self) -> tuple[int, int]:
        return int(self.kspace.shape[-2]), int(self.kspace.shape[-1])

    @property
    def fully_sampled(self) -> bool:
        return self.mask is None or bool(np.all(self.mask))


@dataclass(frozen=True)
class Reader:
    """A registered layout: ``claims(path)`` says whether the file is one (cheaply), ``read(path)`` yields its
    volumes one at a time, so that memory is bounded by one volume."""

    name: str
    claims: Callable[[Path], bool]
    read: Callable[[Path], Iterator[RawVolume]]


READERS: dict[str, Reader] = {}


def register_reader(name: str, claims: Callable[[Path], bool], read: Callable[[Path], Iterator[RawVolume]]) -> None:
    """Register a layout; readers are asked in registration order and the first that claims a file reads it."""
    if name in READERS:
        raise ValueError(f"reader {name!r} is registered twice")
    READERS[name] = Reader(name, claims, read)


def reader_for(path: Path) -> Reader:
    """The registered reader that claims ``path``, else :class:`InputError` naming the layouts known."""
    if not path.is_file():
        raise InputError(f"{path}: input file not found")
    for reader in READERS.values():
        if reader.claims(path):
            return reader
    raise InputError(f"{path}: unknown input layout; kdc reconstruct reads {', '.join(READERS)}")


def read_input(path: str | Path) -> Iterator[RawVolume]:
    """The volumes of one input file, read by the reader registered for its layout and checked."""
    path = Path(path)
    for volume in reader_for(path).read(path):
        yield checked(volume)


def checked(volume: RawVolume) -> RawVolume:
    """``volume`` if its arrays have the documented shapes and are finite, else :class:`InputError`."""
    kspace, where = volume.kspace, volume.source
    if kspace.ndim != 4 or not np.iscomplexobj(kspace) or 0 in kspace.shape:
        raise InputError(f"{where}: reader gave k-space {kspace.dtype} {kspace.shape}, expected complex (S, C, H, W)")
    if not np.isfinite(kspace).all():
        raise InputError(f"{where}: k-space holds NaN or infinity")
    width = kspace.shape[-1]
    if volume.mask is not None and (volume.mask.shape != (width,) or not np.isin(volume.mask, (0, 1)).all()):
        raise InputError(f"{where}: mask must be 0/1 of shape ({width},), got {volume.mask.shape}")
    if volume.reference is not None and volume.reference.shape != (kspace.shape[0], *kspace.shape[-2:]):
        raise InputError(f"{where}: reference {volume.reference.shape} does not match k-space {kspace.shape}")
    return volume


# The built-in layouts register themselves, in the order they are asked; imported last because they import the
# names above.
from kdc.runtime.readers import npy, fastmri, kdmri  # noqa: E402,F401  (registration)
