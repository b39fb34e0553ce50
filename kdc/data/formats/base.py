"""What a format reader yields, and the registry that picks the reader of a file.

A reader turns one h5 file into complex k-space slices ``(S, C, H, W)`` with a stated centring, the acquired mask
when the file is undersampled, a stored fully sampled reference image when it has one, and the geometry writers
need. It reads any range of slices on request, so that datasets never hold a whole volume or split in memory.
"""

from __future__ import annotations

import math
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, ClassVar

import h5py
import numpy as np

from kdc._io import printable  # noqa: F401  (re-exported: kdc.data.formats.printable)

from kdc.data.errors import DataError
from kdc.data.formats.limits import check_dataset
from kdc.mri.fft import centred_to_uncentred
from kdc.mri.geometry import Geometry
from kdc.mri.partial_fourier import Band, PartialFourier

_SHOWN: set[str] = set()
#: Notices held back by :func:`notices_after_success` blocks, innermost last.
_HELD: list[dict[str, str]] = []


def notice_once(key: str, message: str) -> None:
    """Print ``kdc: message`` on stderr the first time ``key`` is seen in this process (inside a
    :func:`notices_after_success` block: when the block succeeds)."""
    if _HELD:
        _HELD[-1].setdefault(key, message)
    elif key not in _SHOWN:
        _SHOWN.add(key)
        print(f"kdc: {message}", file=sys.stderr)


@contextmanager
def notices_after_success() -> Iterator[None]:
    """Hold the notices of a read back until it succeeds, so that a refused file gets its one-line error alone."""
    held: dict[str, str] = {}
    _HELD.append(held)
    try:
        yield
    finally:  # by identity: list.remove would take an equal (say empty) dict of an enclosing block
        del _HELD[next(index for index, block in enumerate(_HELD) if block is held)]
    for key, message in held.items():
        notice_once(key, message)


@dataclass(frozen=True)
class VolumeInfo:
    """What a file holds, read from its header without loading the arrays."""

    path: Path
    format: str
    slices: int
    image_shape: tuple[int, int]
    coils: int = 1


@dataclass(frozen=True)
class RawSlices:
    """Slices as a file stores them.

    ``kspace`` ``(S, C, H, W)`` complex64, zero where not acquired; ``centred``: DC term in the middle (fastMRI,
    ISMRMRD) rather than at index 0 (KD-MRI); ``reference``
    ``(S, H, W)`` a stored fully sampled magnitude image (KD-MRI's ``volfs``) that is the target instead of the
    image of ``kspace``; ``measured_phase``: the k-space was measured (its image has a phase), not simulated from a
    magnitude image.
    """

    kspace: np.ndarray
    centred: bool
    reference: np.ndarray | None
    measured_phase: bool

    def uncentred(self) -> np.ndarray:
        """``kspace`` in kdc's uncentred convention: ``fft2(image)`` of the upright image.

        Centred k-space is ``fftshift(fft2(ifftshift(image)))``; shifting k-space alone would return the image
        rolled by half the field of view, so :func:`kdc.mri.fft.centred_to_uncentred` also removes that roll.
        """
        return centred_to_uncentred(self.kspace).astype(np.complex64, copy=False) if self.centred else self.kspace


class Reader:
    """One registered input format: ``claims`` a file by its keys, ``inspect``s its header, ``read``s slices."""

    name: ClassVar[str]
    #: What identifies the format, for the error listing every format: ``'volfs' (KD-MRI)``.
    signature: ClassVar[str]
    #: The axis of the phase encodes (the lines a Cartesian acquisition skips): -1 along W, -2 along H.
    phase_encode_axis: ClassVar[int] = -1

    def claims(self, file: h5py.File) -> bool:
        raise NotImplementedError

    def inspect(self, file: h5py.File) -> VolumeInfo:
        raise NotImplementedError

    def read(self, file: h5py.File, slices: slice, acceleration: int | None = None,
             check_finite: bool = True) -> RawSlices:
        """Slices ``slices`` of the file; ``acceleration`` picks a stored undersampling where a format has several.

        ``check_finite=False`` skips the pass that refuses NaN and Inf, for a caller that checks what it derives
        from the slices instead (a pass over 15-coil k-space costs as much as coil-compressing it)."""
        raise NotImplementedError

    def acquired_mask(self, file: h5py.File, acceleration: int | None = None) -> np.ndarray | None:
        """The ``(H, W)`` samples the file's k-space holds, **uncentred**; None when it is fully sampled."""
        return None

    def geometry(self, file: h5py.File) -> Geometry:
        """Where the pixels of :meth:`read`'s images are; the default geometry (with its note) when unknown."""
        return Geometry()

    def partial_fourier(self, file: h5py.File) -> PartialFourier | None:
        """Where :meth:`read`'s ``(H, W)`` grid was acquired when asymmetrically about DC (phase partial Fourier);
        its missing band is left zero by ``read`` and absent from :meth:`acquired_mask`. None: symmetric."""
        return None


READERS: dict[str, Reader] = {}


def register(reader: type[Reader]) -> type[Reader]:
    """Class decorator: make ``reader`` the reader of its format (detection tries readers in registration order)."""
    READERS[reader.name] = reader()
    return reader


#: Links :func:`open_h5` looks at before refusing a file as too complex to check.
MAX_LINKS = 10_000
INSIDE_ONLY = ": kdc reads only data stored in the file itself"


def open_h5(path: str | Path) -> h5py.File:
    """Open an h5 file for reading; a missing or unreadable file, or one that reaches outside itself
    (:func:`refuse_outside_data`), is a :class:`DataError`."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: file not found")
    try:
        file = h5py.File(path, "r")
    except OSError as err:
        raise DataError(f"{path}: not a readable HDF5 file ({err})") from None
    try:
        refuse_outside_data(file)
    except BaseException:
        file.close()
        raise
    return file


def refuse_outside_data(file: h5py.File) -> None:
    """Refuse external links, external raw storage and virtual datasets: what a reader reads must be in the file
    itself (an external storage pointing at ``/etc/passwd`` would otherwise be read as k-space)."""
    seen = 0

    def resolves(name: str) -> bool:
        try:
            file[name]
        except KeyError:
            return False
        return True

    def check(name: str, link: h5py.HardLink | h5py.SoftLink | h5py.ExternalLink) -> str | None:
        nonlocal seen
        seen += 1
        if seen > MAX_LINKS:
            return f"holds more than {MAX_LINKS} objects, more than an MRI file has"
        if isinstance(link, h5py.ExternalLink):
            return f"'{name}' is an external link to {link.filename}:{link.path}{INSIDE_ONLY}"
        if not isinstance(link, (h5py.HardLink, h5py.SoftLink)):
            return f"'{name}' is a user-defined link{INSIDE_ONLY}"
        if isinstance(link, h5py.SoftLink) and not resolves(name):
            return f"'{name}' is a soft link to {link.path}, which does not exist"
        if isinstance(link, h5py.HardLink):
            item = file.get(name)
            if isinstance(item, h5py.Dataset) and item.external:
                files = [entry[0] for entry in item.external]
                return f"'{name}' keeps its data in external file(s) {files}{INSIDE_ONLY}"
            if isinstance(item, h5py.Dataset) and item.is_virtual:
                return f"'{name}' is a virtual dataset (its data are in other files){INSIDE_ONLY}"
        return None

    problem = file.visititems_links(check)
    if problem:
        raise DataError(f"{file.filename}: {problem}")


def detect(file: h5py.File) -> Reader:
    """The reader that claims ``file``, else a DataError listing what each format needs."""
    for reader in READERS.values():
        if reader.claims(file):
            return reader
    expected = " or ".join(dict.fromkeys(reader.signature for reader in READERS.values()))
    raise DataError(f"{file.filename}: expected {expected}, found keys {sorted(file.keys())}")


def inspect_volume(path: str | Path) -> VolumeInfo:
    """Format, slice count, image shape and coil count of an h5 file, from its header."""
    with notices_after_success(), open_h5(path) as file:
        info = replace(detect(file).inspect(file), path=Path(path))
    if info.slices == 0:
        raise DataError(f"{path}: volume has no slices")
    if info.coils == 0:
        raise DataError(f"{path}: coil count 0")
    return info


def read_slices(path: str | Path, slices: slice = slice(None), acceleration: int | None = None) -> RawSlices:
    """Slices of the file at ``path``, read by its format's reader."""
    with open_h5(path) as file:
        return detect(file).read(file, slices, acceleration)


def dataset(file: h5py.File, key: str, expected: str, ndim: int, complex_values: bool = False) -> h5py.Dataset:
    """The ``ndim``-D array ``key`` of ``file``, else a DataError naming file, field and what was ``expected``."""
    if key not in file:
        raise DataError(f"{file.filename}: missing '{key}' {expected}, found keys {sorted(file.keys())}")
    data = file[key]
    if not isinstance(data, h5py.Dataset) or data.ndim != ndim:
        raise DataError(f"{file.filename}: '{key}' must be a {ndim}-D array {expected}, "
                        f"got {getattr(data, 'shape', None) or 'a group'}")
    if complex_values and data.dtype.kind != "c":
        raise DataError(f"{file.filename}: '{key}' is {data.dtype}, expected complex")
    check_dataset(f"{file.filename}: '{key}'", data)
    return data


#: dtype kinds of image fields: float as it is, signed and unsigned integers converted to float32.
IMAGE_KINDS = {"f": "float", "i": "integer", "u": "integer"}


def image_dataset(file: h5py.File, key: str, expected: str) -> h5py.Dataset:
    """The 3-D ``(H, W, slices)`` image field ``key``: real numbers (float, or integers converted to float32 on
    read), at least 2x2; bool, complex and non-numeric data are refused with one line."""
    data = dataset(file, key, expected, 3)
    if data.dtype.kind not in IMAGE_KINDS:
        hint = "; store its magnitude" if data.dtype.kind == "c" else ""
        raise DataError(f"{file.filename}: '{key}' holds {data.dtype} data, expected a real (float or integer) "
                        f"image{hint}")
    if min(data.shape[:2]) < 2:
        raise DataError(f"{file.filename}: '{key}' holds {data.shape[0]}x{data.shape[1]} images, expected at least "
                        "2x2")
    return data


def read_leading(data: h5py.Dataset, slices: slice) -> np.ndarray:
    """``data[slices]`` along the first axis, read straight into a new array (h5py's indexing zero-fills its output
    first: one more pass over every 28 MB fastMRI multi-coil slice)."""
    count = len(range(*slices.indices(data.shape[0])))
    values = np.empty((count, *data.shape[1:]), data.dtype)
    if count:
        data.read_direct(values, np.s_[slices])
    return values


def finite(file: h5py.File, key: str, values: np.ndarray, first_slice: int = 0, check: bool = True) -> np.ndarray:
    """``values`` (slices first), unless one of them holds NaN or Inf (not looked at with ``check=False``)."""
    if not check:
        return values
    # A sum is non-finite when any term is (NaN and Inf propagate), and is cheaper than testing every value.
    bad = np.flatnonzero(~np.isfinite(values.reshape(len(values), -1).sum(axis=1)))
    if bad.size:
        raise DataError(f"{file.filename}: '{key}' has NaN or Inf in slice {first_slice + bad[0]} "
                        f"({bad.size} slice(s) in all)")
    return values


def slice_start(slices: slice) -> int:
    return slices.start or 0


def header_geometry(xml: bytes | str, rows: str = "y") -> Geometry:
    """Voxel size from an ISMRMRD XML header (fastMRI files carry one too): the encoded space's field of view over
    its matrix, whose readout axis is ``x``; ``rows`` names the axis along the image's rows (H). Orientation and
    position are not in the XML: the default ones, with a note saying so."""
    encoding = parse_header(xml).encoding[0]
    fov, matrix = encoding.encodedSpace.fieldOfView_mm, encoding.encodedSpace.matrixSize
    spacing = {"x": fov.x / matrix.x, "y": fov.y / matrix.y}
    columns = "x" if rows == "y" else "y"
    thickness = fov.z / max(matrix.z, 1)
    return Geometry((spacing[rows], spacing[columns], thickness), slice_thickness=thickness,
                    note="voxel size from the ISMRMRD header; slice positions and orientation are not in the file "
                         "(slices stacked along z from 0, axial assumed)")


def limits_band(encoding: Any, size: int) -> Band | None:
    """The phase encodes an ISMRMRD header's ``encodingLimits`` ``kspace_encoding_step_1`` says were acquired:
    ``minimum`` .. ``maximum``, numbered with ``center`` at line ``size // 2`` of a grid of ``size`` lines (as
    ISMRMRD and fastMRI number them; asymmetric: partial Fourier), clipped to the grid; None without limits (or
    with limits of one line, 0..0: unset). Limits that contradict themselves (the centre outside them) are a
    DataError (the caller names the file)."""
    limits = encoding.encodingLimits.kspace_encoding_step_1 if encoding.encodingLimits is not None else None
    if limits is None or None in (limits.minimum, limits.maximum, limits.center):
        return None
    low, high, centre = int(limits.minimum), int(limits.maximum), int(limits.center)
    if high <= low:  # 0..0: what a header with unset limits holds (the MRD stream ignores them too)
        return None
    if not low <= centre <= high:
        raise DataError(f"encodingLimits kspace_encoding_step_1 minimum {low}, maximum {high}, center {centre}: "
                        "expected minimum <= center <= maximum")
    return Band(max(low - centre + size // 2, 0), min(high - centre + size // 2 + 1, size), size)


def header_text(file: h5py.File, key: str) -> bytes:
    """The XML string stored in ``key``: a scalar or one-element string dataset (fixed or variable length), else a
    DataError; its declared size is checked first."""
    data = file[key]
    if not (isinstance(data, h5py.Dataset) and data.size == 1 and data.dtype.kind in "SUO"):
        raise DataError(f"{file.filename}: '{key}' must hold one XML string, got "
                        f"{f'{data.dtype} {data.shape}' if isinstance(data, h5py.Dataset) else 'a group'}")
    check_dataset(f"{file.filename}: '{key}'", data, itemsize=1)
    value = data[()].reshape(-1)[0] if data.shape else data[()]
    if isinstance(value, str):
        value = value.encode()
    if not isinstance(value, bytes) or not value.strip():
        found = "an empty string" if isinstance(value, bytes) else type(value).__name__
        raise DataError(f"{file.filename}: '{key}' holds {found}, expected the ISMRMRD XML header")
    return value


def parse_header(xml: bytes | str) -> Any:
    """The ``ismrmrd.xsd`` header object of an ISMRMRD XML string, else a DataError."""
    import ismrmrd

    try:
        header = ismrmrd.xsd.CreateFromDocument(xml)
    except Exception as err:  # xsdata raises parser-specific errors
        raise DataError(f"ISMRMRD XML header is not valid ({type(err).__name__}: {err})") from None
    if not header.encoding:
        raise DataError("ISMRMRD XML header has no <encoding>")
    encoded = header.encoding[0].encodedSpace
    for axis in "xyz":
        size = getattr(encoded.fieldOfView_mm, axis)
        if not (isinstance(size, (int, float)) and math.isfinite(size) and size > 0):
            raise DataError(f"encodedSpace fieldOfView_mm {axis}={size}, expected a finite size above 0 mm")
    matrix = encoded.matrixSize
    if not (matrix.x > 0 and matrix.y > 0):
        raise DataError(f"encodedSpace matrixSize {matrix.x}x{matrix.y}, expected sizes above 0")
    return header
