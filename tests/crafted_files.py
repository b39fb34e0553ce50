"""Crafted input files: one registered maker per kind of bad file, for every reader (ISMRMRD, fastMRI single- and
multi-coil, KD-MRI, ``.npy``). Each is small on disk; several declare gigabytes. Every reader must refuse each one
with a one-line error naming the file and the field, before allocating what the file declares.

``CRAFTED[kind](directory)`` writes ``directory/KIND.h5`` (or ``.npy``) and returns its path; ``FIELDS[kind]`` is
the field the error must name.
"""

from __future__ import annotations

import re
import zlib
from collections.abc import Callable
from pathlib import Path

import h5py
import numpy as np

from tests import ismrmrd_files

CRAFTED: dict[str, Callable[[Path], Path]] = {}
FIELDS: dict[str, str] = {}
#: Size of the valid files the crafted ones start from: the runtime tests' model size (H, W).
HEIGHT, WIDTH = 40, 32
BILLION_LAUGHS = ('<?xml version="1.0"?>\n<!DOCTYPE lolz [<!ENTITY lol0 "lol">'
                  + "".join(f'<!ENTITY lol{n} "{f"&lol{n - 1};" * 10}">' for n in range(1, 10)) + "]>")


def crafted(kind: str, field: str) -> Callable[[Callable[[Path], None]], Callable[[Path], None]]:
    """Register ``make(path)`` as the maker of ``kind``, whose error names ``field``."""

    def register(make: Callable[[Path], None]) -> Callable[[Path], None]:
        suffix = ".npy" if kind.startswith("npy") else ".h5"

        def write(directory: Path) -> Path:
            path = directory / f"{kind}{suffix}"
            path.unlink(missing_ok=True)
            make(path)
            return path

        CRAFTED[kind], FIELDS[kind] = write, field
        return make

    return register


# --- ISMRMRD -----------------------------------------------------------------------------------------------------


def ismrmrd(path: Path) -> Path:
    """A valid fully sampled 2-coil ISMRMRD scan (32 x 32, readout oversampled twice)."""
    return ismrmrd_files.generate(path, "-m", "32", "-c", "2", "-O", "2", "-a", "1")


def edit_heads(path: Path, edit: Callable[[np.ndarray], None]) -> None:
    """Rewrite the acquisition headers of an ISMRMRD file with ``edit(heads)`` (in place)."""
    with h5py.File(path, "r+") as file:
        data = file["dataset/data"]
        rows = data[()]
        edit(rows["head"])
        data[...] = rows


def edit_xml(path: Path, pattern: str, replacement: str) -> None:
    """Replace the first match of the regular expression ``pattern`` in the file's XML header."""
    with h5py.File(path, "r+") as file:
        xml = file["dataset/xml"][0].decode()
        edited = re.sub(pattern, replacement, xml, count=1, flags=re.DOTALL)
        assert edited != xml, pattern
        file["dataset/xml"][0] = edited.encode()


def replace_item(path: Path, key: str, make: Callable[[h5py.File], None]) -> None:
    """Delete ``key`` and let ``make(file)`` write something else there."""
    with h5py.File(path, "r+") as file:
        del file[key]
        make(file)


@crafted("ismrmrd-channels-lie", "dataset/data")
def _(path: Path) -> None:
    ismrmrd(path)
    edit_heads(path, lambda heads: heads.__setitem__("active_channels", 3))


@crafted("ismrmrd-samples-lie", "dataset/data")
def _(path: Path) -> None:
    ismrmrd(path)
    edit_heads(path, lambda heads: heads.__setitem__("number_of_samples", 48))


@crafted("ismrmrd-data-is-a-group", "dataset/data")
def _(path: Path) -> None:
    ismrmrd(path)
    replace_item(path, "dataset/data", lambda file: file.create_group("dataset/data"))


@crafted("ismrmrd-data-is-float", "dataset/data")
def _(path: Path) -> None:
    ismrmrd(path)
    replace_item(path, "dataset/data", lambda file: file.create_dataset("dataset/data", data=np.ones((32, 8))))


@crafted("ismrmrd-xml-is-a-group", "dataset/xml")
def _(path: Path) -> None:
    ismrmrd(path)
    replace_item(path, "dataset/xml", lambda file: file.create_group("dataset/xml"))


@crafted("ismrmrd-xml-empty", "dataset/xml")
def _(path: Path) -> None:
    ismrmrd(path)
    replace_item(path, "dataset/xml",
                 lambda file: file.create_dataset("dataset/xml", data=[b""], dtype=h5py.string_dtype()))


@crafted("ismrmrd-xml-billion-laughs", "dataset/xml")
def _(path: Path) -> None:
    ismrmrd(path)
    edit_xml(path, r'<\?xml version="1.0"\?>', BILLION_LAUGHS)
    edit_xml(path, "ISMRM Synthetic Imaging Lab", "&lol9;")


RECON_X = r"(<reconSpace>\s*<matrixSize>\s*<x>)\d+"
ENCODED_FOV_X = r"(<encodedSpace>.*?<fieldOfView_mm>\s*<x>)[^<]+"
ENCODED_MATRIX = r"(<encodedSpace>\s*<matrixSize>\s*<x>)\d+(</x>\s*<y>)\d+"
LIMITS_MAXIMUM = r"(<kspace_encoding_step_1>\s*<minimum>0</minimum>\s*<maximum>)\d+"
#: Header edits, each a crafted kind: (regular expression, replacement) of the XML header.
HEADER_EDITS = {
    "ismrmrd-recon-matrix-0": (RECON_X, r"\g<1>0"),
    "ismrmrd-recon-matrix-negative": (RECON_X, r"\g<1>-32"),
    "ismrmrd-fov-0": (ENCODED_FOV_X, r"\g<1>0"),
    "ismrmrd-fov-nan": (ENCODED_FOV_X, r"\g<1>NaN"),
    "ismrmrd-matrix-16384": (ENCODED_MATRIX, r"\g<1>16384\g<2>16384"),  # 4.3 GB: above the input limit
    "ismrmrd-matrix-8192": (ENCODED_MATRIX, r"\g<1>8192\g<2>8192"),  # 1.1 GB, of which the readouts fill 33 kB
    "ismrmrd-limits-maximum-below-centre": (LIMITS_MAXIMUM, r"\g<1>5"),  # lines 0..5 around 16 of 32
}


def header_edit(pattern: str, replacement: str) -> Callable[[Path], None]:
    def make(path: Path) -> None:
        ismrmrd(path)
        edit_xml(path, pattern, replacement)

    return make


for _kind, _edit in HEADER_EDITS.items():
    crafted(_kind, "dataset/xml")(header_edit(*_edit))


@crafted("ismrmrd-lines-outside-the-limits", "dataset/data")
def _(path: Path) -> None:
    ismrmrd(path)
    edit_xml(path, r"(<kspace_encoding_step_1>\s*<minimum>)0", r"\g<1>8")  # the readouts of lines 0..7 stay


@crafted("ismrmrd-echo-without-a-centre", "dataset/data")
def _(path: Path) -> None:
    ismrmrd(path)
    ismrmrd_files.asymmetric_echo(path, 30)  # 34 of 64 samples, center_sample 2: no phase estimate


@crafted("ismrmrd-noise-duplicated-channel", "dataset/data")
def _(path: Path) -> None:
    ismrmrd_files.generate(path, "-m", "32", "-c", "2", "-O", "2", "-a", "1", "-C")

    def duplicate(row: np.void) -> np.void:
        if ismrmrd_files.is_noise(row):
            values = ismrmrd_files.samples(row).copy()
            values[1] = values[0]  # a singular noise covariance
            ismrmrd_files.set_samples(row, values)
        return row

    ismrmrd_files.rewrite_readouts(path, duplicate)


@crafted("ismrmrd-3e6-acquisitions", "dataset/data")
def _(path: Path) -> None:
    ismrmrd(path)
    with h5py.File(path, "r+") as file:
        file["dataset/data"].resize((3_000_000,))  # unwritten chunks: read as zero headers


@crafted("ismrmrd-a-slice-per-readout", "dataset/data")
def _(path: Path) -> None:
    ismrmrd(path)
    edit_heads(path, lambda heads: heads["idx"].__setitem__("slice", np.arange(len(heads))))


@crafted("ismrmrd-external-link", "dataset")
def _(path: Path) -> None:
    path.with_name("elsewhere.h5").unlink(missing_ok=True)
    ismrmrd(path.with_name("elsewhere.h5"))
    with h5py.File(path, "w") as file:
        file["dataset"] = h5py.ExternalLink("elsewhere.h5", "/dataset")


# --- fastMRI -----------------------------------------------------------------------------------------------------


def fastmri(path: Path, coils: int = 0, **extra: object) -> Path:
    """A valid fully sampled fastMRI file (single-coil when ``coils`` is 0), plus datasets ``extra``."""
    rng = np.random.default_rng(0)
    shape = (2, coils, HEIGHT, WIDTH) if coils else (2, HEIGHT, WIDTH)
    with h5py.File(path, "w") as file:
        file["kspace"] = (rng.normal(size=shape) + 1j * rng.normal(size=shape)).astype(np.complex64)
        for key, value in extra.items():
            file[key] = value
    return path


def unwritten(path: Path, key: str, shape: tuple[int, ...], dtype: type = np.complex64, **extra: object) -> None:
    """A file whose ``key`` declares ``shape`` in chunks never written (read back as zeros)."""
    with h5py.File(path, "w") as file:
        file.create_dataset(key, shape, dtype, chunks=(1, *shape[1:-1], min(shape[-1], 64)))
        for name, value in extra.items():
            file[name] = value


def header_of(xml: str) -> np.ndarray:
    return np.array(xml.encode(), dtype=h5py.string_dtype())


VALID_HEADER = ('<?xml version="1.0"?><ismrmrdHeader xmlns="http://www.ismrm.org/ISMRMRD"><experimentalConditions>'
                "<H1resonanceFrequency_Hz>63500000</H1resonanceFrequency_Hz></experimentalConditions><encoding>"
                "<encodedSpace>"
                f"<matrixSize><x>{HEIGHT}</x><y>{WIDTH}</y><z>1</z></matrixSize><fieldOfView_mm><x>200</x><y>160</y>"
                "<z>5</z></fieldOfView_mm></encodedSpace><reconSpace><matrixSize><x>32</x><y>32</y><z>1</z>"
                "</matrixSize><fieldOfView_mm><x>160</x><y>160</y><z>5</z></fieldOfView_mm></reconSpace>"
                "<encodingLimits/><trajectory>cartesian</trajectory></encoding></ismrmrdHeader>")


@crafted("fastmri-mask-0.5", "mask")
def _(path: Path) -> None:
    fastmri(path, mask=np.where(np.arange(WIDTH) % 4 == 0, 1.0, 0.5))


@crafted("fastmri-mask-minus-7", "mask")
def _(path: Path) -> None:
    fastmri(path, mask=np.where(np.arange(WIDTH) % 4 == 0, 1.0, -7.0))


@crafted("fastmri-mask-is-a-group", "mask")
def _(path: Path) -> None:
    fastmri(path)
    with h5py.File(path, "r+") as file:
        file.create_group("mask")


@crafted("fastmri-kspace-unwritten-1.9GB", "kspace")
def _(path: Path) -> None:
    unwritten(path, "kspace", (580, 640, 640))


@crafted("fastmri-kspace-external-storage", "kspace")
def _(path: Path) -> None:
    with h5py.File(path, "w") as file:
        file.create_dataset("kspace", (1, 4, 4), np.complex64, external=[("/etc/passwd", 0, 128)])


@crafted("fastmri-kspace-virtual", "kspace")
def _(path: Path) -> None:
    fastmri(path.with_name("source.h5"))
    layout = h5py.VirtualLayout((2, HEIGHT, WIDTH), np.complex64)
    layout[...] = h5py.VirtualSource("source.h5", "kspace", (2, HEIGHT, WIDTH))
    with h5py.File(path, "w") as file:
        file.create_virtual_dataset("kspace", layout)


@crafted("fastmri-kspace-dangling-link", "kspace")
def _(path: Path) -> None:
    with h5py.File(path, "w") as file:
        file["kspace"] = h5py.SoftLink("/nowhere")


@crafted("fastmri-kspace-no-samples", "kspace")
def _(path: Path) -> None:
    with h5py.File(path, "w") as file:
        file["kspace"] = np.zeros((2, 0, WIDTH), np.complex64)


@crafted("fastmri-limits-maximum-below-centre", "ismrmrd_header")
def _(path: Path) -> None:
    limits = ("<encodingLimits><kspace_encoding_step_1><minimum>0</minimum><maximum>5</maximum><center>16</center>"
              "</kspace_encoding_step_1></encodingLimits>")
    fastmri(path, coils=3, ismrmrd_header=header_of(VALID_HEADER.replace("<encodingLimits/>", limits)))


@crafted("fastmri-header-billion-laughs", "ismrmrd_header")
def _(path: Path) -> None:
    laughs = VALID_HEADER.replace('<?xml version="1.0"?>', BILLION_LAUGHS)
    laughs = laughs.replace("<encoding>", "<version>&lol9;</version><encoding>")
    fastmri(path, coils=3, ismrmrd_header=header_of(laughs))


@crafted("fastmri-header-empty", "ismrmrd_header")
def _(path: Path) -> None:
    fastmri(path, coils=3, ismrmrd_header=header_of(""))


@crafted("fastmri-header-fov-nan", "ismrmrd_header")
def _(path: Path) -> None:
    fastmri(path, ismrmrd_header=header_of(VALID_HEADER.replace("<x>200</x>", "<x>NaN</x>")))


@crafted("fastmri-multicoil-7GB", "kspace")
def _(path: Path) -> None:
    unwritten(path, "kspace", (16, 20, 2048, 1344))


@crafted("fastmri-multicoil-188GB", "kspace")
def _(path: Path) -> None:
    unwritten(path, "kspace", (180, 32, 2048, 2000))


# --- KD-MRI ------------------------------------------------------------------------------------------------------


@crafted("kdmri-gzip-bomb-0.9GB", "volfs")
def _(path: Path) -> None:
    """0.9 GB of float32 zeros in gzip chunks of 4 MB, written compressed (nothing of that size is ever in memory)."""
    shape, chunk = (1024, 1024, 220), (1024, 1024, 1)
    compressed = zlib.compress(bytes(4 * 1024 * 1024), 9)
    with h5py.File(path, "w") as file:
        volfs = file.create_dataset("volfs", shape, np.float32, chunks=chunk, compression="gzip")
        for index in range(shape[-1]):
            volfs.id.write_direct_chunk((0, 0, index), compressed)


@crafted("kdmri-volfs-is-a-group", "volfs")
def _(path: Path) -> None:
    with h5py.File(path, "w") as file:
        file.create_group("volfs")


# --- .npy --------------------------------------------------------------------------------------------------------


def npy_header(path: Path, header: dict, data: bytes = b"") -> None:
    """A .npy file (format 1.0) with ``header`` and ``data``, whatever the header declares."""
    text = repr(header).encode()
    text += b" " * (-(10 + len(text) + 1) % 64) + b"\n"
    path.write_bytes(b"\x93NUMPY\x01\x00" + len(text).to_bytes(2, "little") + text + data)


@crafted("npy-header-7.28TiB", ".npy header")
def _(path: Path) -> None:
    npy_header(path, {"descr": "<c8", "fortran_order": False, "shape": (1000, 1000, 1000000)})


@crafted("npy-truncated", "truncated")
def _(path: Path) -> None:
    npy_header(path, {"descr": "<c8", "fortran_order": False, "shape": (2, HEIGHT, WIDTH)}, bytes(100))


@crafted("npy-negative-shape", "expected complex k-space")
def _(path: Path) -> None:
    npy_header(path, {"descr": "<c8", "fortran_order": False, "shape": (-1, WIDTH)}, bytes(8 * WIDTH))


@crafted("npy-no-samples", "expected complex k-space")
def _(path: Path) -> None:
    np.save(path, np.zeros((0, HEIGHT, WIDTH), np.complex64))
