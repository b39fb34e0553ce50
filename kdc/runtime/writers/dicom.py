"""DICOM MR image series ``NAME/IM_0001.dcm ...``: one MR Image Storage file per slice (pydicom).

Each series gets new study, series and frame-of-reference UIDs; pixels are the image rescaled to unsigned integers
of 12 or 16 stored bits, the series' maximum at the top value (one factor per series, so slices compare; MR images
carry no Modality LUT, so the factor is not stored: NIfTI and h5 keep the float values), with pixel spacing, slice
thickness, orientation and position from the geometry and a series description naming the model, its contract
version and the acceleration.
"""

from __future__ import annotations

import datetime
from pathlib import Path

import numpy as np

import kdc
from kdc._io import atomic_directory, atomic_path
from kdc.runtime.writers import OutputError, OutputVolume, WriteOptions, register_writer

DICOM_BITS = (12, 16)
#: DICOM LO (long string) values hold at most 64 characters.
LO_LENGTH = 64


def decimal_string(value: float) -> str:
    """A DICOM DS value (at most 16 characters)."""
    text = f"{value:.10g}"
    return text if len(text) <= 16 else f"{value:.6e}"


def series_datasets(volume: OutputVolume, bits: int) -> list:
    """One pydicom dataset per slice, ready to save."""
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, MRImageStorage, PYDICOM_IMPLEMENTATION_UID, generate_uid

    if bits not in DICOM_BITS:
        raise OutputError(f"DICOM bits must be one of {DICOM_BITS}, got {bits}")
    image = np.clip(np.asarray(volume.image, dtype=np.float64), 0, None)
    top = (1 << bits) - 1
    peak = float(image.max())
    stored = np.rint(image * (top / peak if peak > 0 else 0.0)).astype(np.uint16)
    geometry, provenance = volume.geometry, volume.provenance
    now = datetime.datetime.now()
    study, series, frame = generate_uid(), generate_uid(), generate_uid()
    datasets = []
    for index, pixels in enumerate(stored):
        meta = FileMetaDataset()
        meta.MediaStorageSOPClassUID = MRImageStorage
        meta.MediaStorageSOPInstanceUID = generate_uid()
        meta.TransferSyntaxUID = ExplicitVRLittleEndian
        meta.ImplementationClassUID = PYDICOM_IMPLEMENTATION_UID
        ds = Dataset()
        ds.file_meta = meta
        ds.SpecificCharacterSet = "ISO_IR 100"
        ds.SOPClassUID = MRImageStorage
        ds.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
        ds.ImageType = ["DERIVED", "PRIMARY", "OTHER"]
        ds.StudyDate = ds.SeriesDate = ds.ContentDate = now.strftime("%Y%m%d")
        ds.StudyTime = ds.SeriesTime = ds.ContentTime = now.strftime("%H%M%S")
        ds.AccessionNumber = ""
        ds.Modality = "MR"
        ds.Manufacturer = "kdc"
        ds.ReferringPhysicianName = ""
        ds.StudyDescription = "kdc reconstruct"
        ds.SeriesDescription = provenance.describe()[:LO_LENGTH]
        ds.ManufacturerModelName = f"kdc {kdc.__version__}"[:LO_LENGTH]
        ds.SoftwareVersions = f"kdc {kdc.__version__}"
        ds.DerivationDescription = f"{provenance.describe()} from {Path(provenance.source).name}"[:1024]
        ds.PatientName = ""
        ds.PatientID = volume.name[:LO_LENGTH]
        ds.PatientBirthDate = ""
        ds.PatientSex = ""
        ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.FrameOfReferenceUID = study, series, frame
        ds.StudyID = "1"
        ds.SeriesNumber = 1
        ds.InstanceNumber = index + 1
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
        ds.ImageOrientationPatient = [decimal_string(v) for v in (*geometry.row_direction,
                                                                  *geometry.column_direction)]
        ds.ImagePositionPatient = [decimal_string(v) for v in geometry.slice_position(index)]
        ds.SliceLocation = decimal_string(float(np.dot(geometry.slice_position(index), geometry.normal)))
        ds.SamplesPerPixel = 1
        ds.PhotometricInterpretation = "MONOCHROME2"
        ds.Rows, ds.Columns = pixels.shape
        ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, bits, bits - 1, 0
        ds.WindowCenter, ds.WindowWidth = decimal_string((top + 1) / 2), decimal_string(top + 1)
        ds.PixelData = np.ascontiguousarray(pixels).tobytes()
        datasets.append(ds)
    return datasets


def write_dicom(volume: OutputVolume, directory: Path, options: WriteOptions) -> list[Path]:
    series = directory / volume.name
    written = []
    with atomic_directory(series) as tmp:
        for index, ds in enumerate(series_datasets(volume, options.dicom_bits)):
            name = f"IM_{index + 1:04d}.dcm"
            with atomic_path(tmp / name) as part:
                ds.save_as(part, enforce_file_format=True)
            written.append(series / name)
    return written


register_writer("dicom", write_dicom, ("pydicom",))
