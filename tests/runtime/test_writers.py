"""The output writers, read back with nibabel, pydicom and h5py; every DICOM file checked by dciodvfy."""

import shutil
import subprocess

import h5py
import numpy as np
import pytest

from kdc.mri.geometry import Geometry
from kdc.runtime.writers import WRITERS, OutputError, OutputVolume, Provenance, WriteOptions, writers_for

GEOMETRY = Geometry(spacing=(0.5, 0.75, 3.0), origin=(-10.0, 20.0, 5.0), row_direction=(0.0, 1.0, 0.0),
                    column_direction=(0.0, 0.0, -1.0), slice_thickness=2.5, note=None)
PROVENANCE = Provenance("student", "kd_student", 1, 4.0, "random seed 0", "/data/file1.h5")


@pytest.fixture
def volume():
    image = np.random.default_rng(0).random((3, 40, 32), dtype=np.float32) * 7
    return OutputVolume("file1", image, GEOMETRY, PROVENANCE)


def dciodvfy(path) -> str:
    """dciodvfy's report on one file (it writes to stderr); skip the test where dicom3tools is not installed."""
    if shutil.which("dciodvfy") is None:
        pytest.skip("dciodvfy (Debian dicom3tools) is not installed: `make deps` installs it where apt exists")
    result = subprocess.run(["dciodvfy", str(path)], capture_output=True, text=True, timeout=60)
    return result.stdout + result.stderr


def test_nifti_holds_the_volume_and_its_affine(tmp_path, volume):
    import nibabel as nib

    (path,) = WRITERS["nifti"].write(volume, tmp_path, WriteOptions())
    image = nib.load(path)
    assert path.name == "file1.nii.gz" and image.shape == (32, 40, 3)
    np.testing.assert_array_equal(np.asarray(image.dataobj).transpose(2, 1, 0), volume.image)
    assert image.header.get_zooms() == (0.75, 0.5, 3.0)
    # voxel (column 2, row 4, slice 1) in LPS is origin + 2*0.75*row_dir + 4*0.5*col_dir + 1*3*normal
    lps = np.array([-10.0, 20.0, 5.0]) + 2 * 0.75 * np.array([0, 1, 0]) + 4 * 0.5 * np.array([0, 0, -1]) \
        + 3.0 * np.cross([0, 1, 0], [0, 0, -1])
    np.testing.assert_allclose(image.affine @ [2, 4, 1, 1], [-lps[0], -lps[1], lps[2], 1])
    assert b"student kd_student contract v1 4x" in image.header["descrip"].tobytes()
    assert [p.name for p in tmp_path.iterdir()] == ["file1.nii.gz"]


@pytest.mark.parametrize("bits", [12, 16])
def test_dicom_series_is_valid_and_placed(tmp_path, volume, bits):
    import pydicom
    from pydicom.uid import UID

    paths = WRITERS["dicom"].write(volume, tmp_path, WriteOptions(dicom_bits=bits))
    assert [p.name for p in paths] == ["IM_0001.dcm", "IM_0002.dcm", "IM_0003.dcm"]
    for path in paths:
        report = dciodvfy(path)
        assert "Error" not in report, report
    datasets = [pydicom.dcmread(path) for path in paths]
    top = (1 << bits) - 1
    stack = np.stack([ds.pixel_array for ds in datasets])
    assert stack.max() == top and stack.dtype == np.uint16
    np.testing.assert_allclose(stack / top, volume.image / volume.image.max(), atol=0.5 / top + 1e-7)
    for index, ds in enumerate(datasets):
        assert ds.Modality == "MR" and ds.BitsStored == bits and ds.InstanceNumber == index + 1
        assert [float(v) for v in ds.PixelSpacing] == [0.5, 0.75] and float(ds.SliceThickness) == 2.5
        assert [float(v) for v in ds.ImageOrientationPatient] == [0, 1, 0, 0, 0, -1]
        np.testing.assert_allclose([float(v) for v in ds.ImagePositionPatient], [-10 - 3 * index, 20, 5])
        assert ds.SeriesDescription == "kdc student kd_student contract v1 4x random seed 0"
        assert all(UID(uid).is_valid for uid in (ds.SOPInstanceUID, ds.SeriesInstanceUID, ds.StudyInstanceUID))
    assert len({ds.SOPInstanceUID for ds in datasets}) == 3 and len({ds.SeriesInstanceUID for ds in datasets}) == 1


def test_fastmri_h5_reconstruction(tmp_path, volume):
    (path,) = WRITERS["h5"].write(volume, tmp_path, WriteOptions())
    with h5py.File(path) as file:
        np.testing.assert_array_equal(file["reconstruction"][()], volume.image)
        assert file.attrs["contract_version"] == 1 and file.attrs["acceleration"] == 4.0
        assert file.attrs["model"] == "student"


def test_unknown_format_and_bits(tmp_path, volume):
    with pytest.raises(OutputError, match="unknown output format png"):
        writers_for(["nifti", "png"])
    with pytest.raises(OutputError, match="DICOM bits must be one of"):
        WRITERS["dicom"].write(volume, tmp_path, WriteOptions(dicom_bits=8))
    assert not list(tmp_path.iterdir())


@pytest.mark.parametrize("spacing, field", [((0.0, 0.0, 3.0), r"PixelSpacing \[0, 0\]"),
                                            ((float("inf"), float("nan"), 3.0), r"PixelSpacing \[inf, nan\]"),
                                            ((-7.8e297, -2.34, 3.0), r"PixelSpacing \[-7.8e\+297, -2.34\]"),
                                            ((0.5, 0.5, 0.0), r"SpacingBetweenSlices \[0\]")])
@pytest.mark.parametrize("fmt", ["dicom", "nifti"])
def test_impossible_voxel_sizes_are_refused_naming_the_file_and_field(tmp_path, volume, spacing, field, fmt):
    from dataclasses import replace

    broken = replace(volume, geometry=replace(GEOMETRY, spacing=spacing))
    with pytest.raises(OutputError, match=f"^/data/file1.h5: {field} mm: expected voxel sizes > 0"):
        WRITERS[fmt].write(broken, tmp_path, WriteOptions())
    assert not list(tmp_path.iterdir())


def test_degenerate_orientation_is_refused(tmp_path, volume):
    from dataclasses import replace

    flat = replace(volume, geometry=replace(GEOMETRY, column_direction=GEOMETRY.row_direction))
    with pytest.raises(OutputError, match=r"slice direction \[0, 0, 0\]: expected a direction, got length 0"):
        WRITERS["dicom"].write(flat, tmp_path, WriteOptions())


NAMES = {"backslash": ("back\\slash", "back_slash", "ISO_IR 100"), "newline": ("new\nline", "new_line", "ISO_IR 100"),
         "control": ("bell\x07\x1b", "bell__", "ISO_IR 100"),
         "japanese": ("患者名", "患者名", "ISO_IR 192"), "not utf-8": ("scan\udcff", "scan_xff", "ISO_IR 100"),
         "long": ("p" * 100, "p" * 64, "ISO_IR 100")}


@pytest.mark.parametrize("case", NAMES)
def test_names_from_files_become_valid_dicom(tmp_path, volume, case):
    """Names taken from file names are made valid LO values in the character set that holds them (dciodvfy)."""
    import pydicom

    name, patient_id, charset = NAMES[case]
    source = f"/data/{name}.h5"
    named = OutputVolume(name, volume.image, GEOMETRY, Provenance(name, "kd_student", 1, 4.0, "random", source))
    paths = WRITERS["dicom"].write(named, tmp_path, WriteOptions())
    for path in paths:
        report = dciodvfy(path)
        assert "Error" not in report, report
    ds = pydicom.dcmread(paths[0])
    assert ds.PatientID == patient_id and ds.SpecificCharacterSet == charset
    assert ds.SeriesDescription.startswith(f"kdc {patient_id}"[:64].rstrip()[:20])
    assert ds.DerivationDescription.endswith(".h5")


def test_long_names_give_files_that_fit(tmp_path, volume):
    """A 250-character name (a file system takes 255 bytes) gives output names cut short with a hash, each
    distinct, in every format."""
    from dataclasses import replace

    names = ["n" * 250, "n" * 249 + "m"]
    for name in names:
        for writer in WRITERS.values():
            writer.write(replace(volume, name=name), tmp_path, WriteOptions())
    written = sorted(p.name for p in tmp_path.iterdir())
    assert len(written) == 6 and all(len(n.encode()) <= 255 and n.startswith("n" * 200) for n in written)
    assert len({n.split(".")[0] for n in written}) == 2
