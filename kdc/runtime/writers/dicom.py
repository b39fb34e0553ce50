"""DICOM MR image series ``NAME/IM_0001.dcm ...``: one MR Image Storage file per slice (pydicom).

Each series gets new study, series and frame-of-reference UIDs; pixels are the image rescaled to unsigned integers
of 12 or 16 stored bits, the series' maximum at the top value (one factor per series, so slices compare; MR images
carry no Modality LUT, so the factor is not stored: NIfTI and h5 keep the float values), with pixel spacing, slice
thickness, orientation and position from the geometry (refused when impossible:
:func:`kdc.runtime.writers.placed`) and a series description naming the model, its contract version and the
acceleration. Strings from file names are made valid for their value representation (:func:`long_string`,
:func:`short_text`), in Latin-1 or else UTF-8.
"""

from __future__ import annotations

import datetime
import re
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

import kdc
from kdc._io import atomic_directory, atomic_path, printable
from kdc.runtime.writers import OutputError, OutputVolume, WriteOptions, file_stem, placed, register_writer

if TYPE_CHECKING:
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.filebase import DicomBytesIO
    from pydicom.tag import BaseTag

DICOM_BITS = (12, 16)
#: The series' SpecificCharacterSet: Latin-1 where every string fits it, else UTF-8.
LATIN_1, UTF_8 = "ISO_IR 100", "ISO_IR 192"
#: What precedes a DICOM file's meta information: a 128-byte preamble (zeros) and the prefix ``DICM``.
PREAMBLE = bytes(128) + b"DICM"
#: DICOM LO (long string) values hold at most 64 characters, ST (short text) ones 1024.
LO_LENGTH, ST_LENGTH = 64, 1024
#: Characters no LO value may hold: the value separator (backslash) and control characters (ESC too: the series
#: uses no code extensions).
NOT_IN_LO = re.compile(r"[\\\x00-\x1f\x7f]")
#: Control characters no ST value may hold (all but CR, LF and FF; ESC too, as in LO).
NOT_IN_ST = re.compile(r"[\x00-\x09\x0b\x0e-\x1f\x7f]")


def decimal_string(value: float) -> str:
    """A DICOM DS value (at most 16 characters)."""
    text = f"{value:.10g}"
    return text if len(text) <= 16 else f"{value:.6e}"


def long_string(value: str) -> str:
    """``value`` as a valid DICOM LO value: one value (a backslash would start another), no control characters,
    at most 64 characters, no padding spaces (not significant)."""
    return NOT_IN_LO.sub("_", printable(value))[:LO_LENGTH].strip(" ")


def short_text(value: str) -> str:
    """``value`` as a valid DICOM ST value: no control characters but CR, LF, FF; at most 1024 characters."""
    return NOT_IN_ST.sub(" ", printable(value))[:ST_LENGTH].rstrip(" ")


def character_set(values: list[str]) -> str:
    """The SpecificCharacterSet that encodes every string of ``values``: Latin-1 where it does, else UTF-8."""
    try:
        "".join(values).encode("latin-1")
    except UnicodeEncodeError:
        return UTF_8
    return LATIN_1


def series_files(volume: OutputVolume, bits: int) -> Iterator[bytes]:
    """The bytes of one DICOM file (Part 10) per slice, slice by slice.

    The elements the slices share are encoded once; each file adds its own few (UIDs, instance number, position,
    pixels) in tag order, so that a 48-slice series costs a fraction of encoding 48 whole datasets.
    """
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import generate_uid

    if bits not in DICOM_BITS:
        raise OutputError(f"DICOM bits must be one of {DICOM_BITS}, got {bits}")
    image = np.clip(np.asarray(volume.image, dtype=np.float64), 0, None)
    top = (1 << bits) - 1
    peak = float(image.max())
    stored = np.rint(image * (top / peak if peak > 0 else 0.0)).astype(np.uint16)
    series = _series_template(volume, bits, top)
    charset = series.SpecificCharacterSet
    shared = _encoded(series, charset)
    for index, pixels in enumerate(stored):
        meta = FileMetaDataset(dict(series.file_meta.items()))
        meta.MediaStorageSOPInstanceUID = generate_uid()
        own = Dataset()
        own.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
        own.InstanceNumber = index + 1
        position = volume.geometry.slice_position(index)
        own.ImagePositionPatient = [decimal_string(v) for v in position]
        own.SliceLocation = decimal_string(float(np.dot(position, volume.geometry.normal)))
        own.Rows, own.Columns = pixels.shape
        own.add_new("PixelData", "OW", np.ascontiguousarray(pixels).tobytes())  # 16 bits allocated: OW
        elements = {**shared, **_encoded(own, charset)}
        yield PREAMBLE + _meta_bytes(meta) + b"".join(elements[tag] for tag in sorted(elements))


def _stream() -> DicomBytesIO:
    from pydicom.filebase import DicomBytesIO

    stream = DicomBytesIO()
    stream.is_little_endian, stream.is_implicit_VR = True, False  # Explicit VR Little Endian
    return stream


def _encoded(ds: Dataset, charset: str) -> dict[BaseTag, bytes]:
    """Each element of ``ds`` encoded alone (Explicit VR Little Endian, the character set ``charset``), by tag."""
    from pydicom.charset import convert_encodings
    from pydicom.filewriter import write_data_element

    encodings = convert_encodings(charset)
    encoded = {}
    for element in ds:
        stream = _stream()
        write_data_element(stream, element, encodings)
        encoded[element.tag] = stream.getvalue()
    return encoded


def _meta_bytes(meta: FileMetaDataset) -> bytes:
    from pydicom.filewriter import write_file_meta_info

    stream = _stream()
    write_file_meta_info(stream, meta, enforce_standard=True)
    return stream.getvalue()


def _series_template(volume: OutputVolume, bits: int, top: int) -> Dataset:
    """The elements every slice of the series shares."""
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, MRImageStorage, PYDICOM_IMPLEMENTATION_UID, generate_uid

    geometry, provenance = placed(volume), volume.provenance
    description = long_string(provenance.describe())
    derivation = short_text(f"{provenance.describe()} from {Path(provenance.source).name}")
    patient_id = long_string(volume.name)
    now = datetime.datetime.now()
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = MRImageStorage
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    meta.ImplementationClassUID = PYDICOM_IMPLEMENTATION_UID
    ds = Dataset()
    ds.file_meta = meta
    ds.SpecificCharacterSet = character_set([description, derivation, patient_id])
    ds.SOPClassUID = MRImageStorage
    ds.ImageType = ["DERIVED", "PRIMARY", "OTHER"]
    ds.StudyDate = ds.SeriesDate = ds.ContentDate = now.strftime("%Y%m%d")
    ds.StudyTime = ds.SeriesTime = ds.ContentTime = now.strftime("%H%M%S")
    ds.AccessionNumber = ""
    ds.Modality = "MR"
    ds.Manufacturer = "kdc"
    ds.ReferringPhysicianName = ""
    ds.StudyDescription = "kdc reconstruct"
    ds.SeriesDescription = description
    ds.ManufacturerModelName = f"kdc {kdc.__version__}"[:LO_LENGTH]
    ds.SoftwareVersions = f"kdc {kdc.__version__}"
    ds.DerivationDescription = derivation
    ds.PatientName = ""
    ds.PatientID = patient_id
    ds.PatientBirthDate = ""
    ds.PatientSex = ""
    ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.FrameOfReferenceUID = generate_uid(), generate_uid(), generate_uid()
    ds.StudyID = "1"
    ds.SeriesNumber = 1
    ds.PositionReferenceIndicator = ""
    ds.Laterality = ""
    ds.PatientPosition = ""
    ds.ScanningSequence = "RM"
    ds.SequenceVariant = "NONE"
    ds.ScanOptions = ""
    ds.MRAcquisitionType = "2D"
    ds.RepetitionTime = ds.EchoTime = ds.EchoTrainLength = None
    ds.SliceThickness = decimal_string(geometry.slice_thickness or geometry.spacing[2])
    ds.SpacingBetweenSlices = decimal_string(geometry.spacing[2])
    ds.PixelSpacing = [decimal_string(geometry.spacing[0]), decimal_string(geometry.spacing[1])]
    ds.ImageOrientationPatient = [decimal_string(v) for v in (*geometry.row_direction, *geometry.column_direction)]
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, bits, bits - 1, 0
    ds.WindowCenter, ds.WindowWidth = decimal_string((top + 1) / 2), decimal_string(top + 1)
    return ds


def write_dicom(volume: OutputVolume, directory: Path, options: WriteOptions) -> list[Path]:
    series = directory / file_stem(volume.name)
    written = []
    with atomic_directory(series, mark=False) as tmp:
        for index, data in enumerate(series_files(volume, options.dicom_bits)):
            name = f"IM_{index + 1:04d}.dcm"
            with atomic_path(tmp / name) as part:
                part.write_bytes(data)
            written.append(series / name)
    return written


register_writer("dicom", write_dicom, ("pydicom",))
