"""Input readers of ``kdc reconstruct``: one registered reader per kind of file, one entry point, :func:`read_input`.

h5 files (KD-MRI, fastMRI single- and multi-coil, ISMRMRD) are read by the format readers that training uses,
:mod:`kdc.data.formats` (numpy, h5py and ismrmrd only: no torch), through one adapter (:mod:`.formats`); ``.npy``
k-space has its own reader (:mod:`.npy`). A reader yields :class:`RawVolume` objects, one volume at a time, so that
memory is bounded by one volume. The interface is documented in docs/formats.md.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from kdc.errors import KdcError
from kdc.mri.geometry import Geometry
from kdc.mri.masks import sampled_lines
from kdc.mri.partial_fourier import PartialFourier


class InputError(KdcError):
    """An input file that cannot be reconstructed: unreadable, unknown layout, wrong shape or dtype."""


@dataclass
class RawVolume:
    """One volume as a reader delivers it.

    ``kspace``: complex64 ``(S, C, H, W)`` (slices, coils, rows, columns); ``centred``: True if the DC term is at
    ``(H // 2, W // 2)`` (fastMRI, ISMRMRD, ``.npy``), False if at ``(0, 0)`` (KD-MRI). ``mask``: the ``(H, W)``
    samples that were acquired, **uncentred**, as :meth:`kdc.data.formats.Reader.acquired_mask` gives it; None when
    fully sampled. ``reference``: ``(S, H, W)`` float32 stored fully sampled magnitude image, or None.
    ``phase_encode_axis``: -1 when the phase encodes run along W, -2 along H (ISMRMRD). ``name``: stem of the
    output files. ``partial_fourier``: the band of phase encodes acquired when asymmetric about DC (the lines
    outside it are zero and absent from ``mask``), else None.
    """

    source: Path
    name: str
    kspace: np.ndarray
    centred: bool
    mask: np.ndarray | None = None
    reference: np.ndarray | None = None
    geometry: Geometry = field(default_factory=Geometry)
    phase_encode_axis: int = -1
    partial_fourier: PartialFourier | None = None

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

    @property
    def line_axis(self) -> int:
        """The axis of the sampled lines: the acquired mask's, else the phase encodes' (-1 columns, -2 rows)."""
        lines = None if self.fully_sampled else sampled_lines(self.mask)
        return self.phase_encode_axis if lines is None else lines[0]


@dataclass(frozen=True)
class Reader:
    """A registered kind of file: ``claims(path)`` says whether the file is one (cheaply), ``read(path)`` yields its
    volumes one at a time."""

    name: str
    claims: Callable[[Path], bool]
    read: Callable[[Path], Iterator[RawVolume]]


READERS: dict[str, Reader] = {}


def register_reader(name: str, claims: Callable[[Path], bool], read: Callable[[Path], Iterator[RawVolume]]) -> None:
    """Register a kind of file; readers are asked in registration order and the first that claims a file reads it."""
    if name in READERS:
        raise ValueError(f"reader {name!r} is registered twice")
    READERS[name] = Reader(name, claims, read)


def reader_for(path: Path) -> Reader:
    """The registered reader that claims ``path``, else :class:`InputError` naming the kinds known."""
    if not path.is_file():
        raise InputError(f"{path}: input file not found")
    for reader in READERS.values():
        if reader.claims(path):
            return reader
    raise InputError(f"{path}: unknown input layout; kdc reconstruct reads {', '.join(READERS)}")


def read_input(path: str | Path) -> Iterator[RawVolume]:
    """The volumes of one input file, read by the reader registered for it and checked."""
    path = Path(path)
    for volume in reader_for(path).read(path):
        yield checked(volume)


def checked(volume: RawVolume) -> RawVolume:
    """``volume`` if its arrays have the documented shapes and are finite, else :class:`InputError`."""
    kspace, where = volume.kspace, volume.source
    if kspace.ndim != 4 or not np.iscomplexobj(kspace) or 0 in kspace.shape:
        raise InputError(f"{where}: reader gave k-space {kspace.dtype} {kspace.shape}, expected complex (S, C, H, W)")
    if not np.isfinite(kspace.sum()):  # NaN and Inf make the sum non-finite: one pass, no boolean copy
        raise InputError(f"{where}: k-space holds NaN or infinity")
    if volume.mask is not None and (volume.mask.shape != volume.matrix or not np.isin(volume.mask, (0, 1)).all()):
        raise InputError(f"{where}: mask must be 0/1 of shape {volume.matrix}, got {volume.mask.shape}")
    if volume.reference is not None and volume.reference.shape != (kspace.shape[0], *kspace.shape[-2:]):
        raise InputError(f"{where}: reference {volume.reference.shape} does not match k-space {kspace.shape}")
    return volume


# The built-in readers register themselves, in the order they are asked; imported last because they import the
# names above.
from kdc.runtime.readers import npy, formats  # noqa: E402,F401  (registration)
