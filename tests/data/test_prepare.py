"""``kdc data prepare``: raw multi-coil files -> one virtual coil per volume, training on the same items."""

import h5py
import numpy as np
from typer.testing import CliRunner

from kdc.data.cli import data_app
from kdc.data.slices import open_split
from tests import ismrmrd_files
from tests.data.test_slices import multicoil_volume


def test_prepared_split_gives_the_items_of_the_raw_split(tmp_path, write_fastmri_multicoil):
    for index, (split, name) in enumerate((("train", "a"), ("train", "b"), ("val", "c"))):
        write_fastmri_multicoil(tmp_path / "raw" / split / f"{name}.h5",
                                multicoil_volume(slices=2 + index, coils=6) * (index + 1))
    result = CliRunner().invoke(data_app, ["prepare", str(tmp_path / "raw/train"), str(tmp_path / "raw/val"),
                                           "--out", str(tmp_path / "prepared")])
    assert result.exit_code == 0, result.output
    assert "train a.h5: 2 slices, 6 coil(s) -> 1" in result.output and "(5 train, 4 val slices)" in result.output
    with h5py.File(tmp_path / "prepared/train/a.h5") as file:
        assert file["kspace"].shape == (2, 48, 40) and file["kspace"].dtype == np.complex64
        assert "ismrmrd_header" in file and file.attrs["coils"] == 6
    raw = open_split(tmp_path / "raw", "train", 4, image="complex")
    prepared = open_split(tmp_path / "prepared", "train", 4, image="complex")
    assert len(raw) == len(prepared) == 5
    np.testing.assert_array_equal(raw.mask, prepared.mask)
    for index in range(len(raw)):
        for key in ("kspace", "target"):
            np.testing.assert_allclose(prepared[index][key], raw[index][key], atol=2e-6)


def test_ismrmrd_scans_prepare_and_undersampled_ones_are_refused(tmp_path):
    (tmp_path / "raw").mkdir()
    for name in ("a", "b"):
        ismrmrd_files.generate(tmp_path / "raw" / f"{name}.h5", "-m", "32", "-c", "4", "-O", "2", "-a", "1")
    result = CliRunner().invoke(data_app, ["prepare", str(tmp_path / "raw"), "--out", str(tmp_path / "prepared")])
    assert result.exit_code == 0, result.output
    with h5py.File(tmp_path / "prepared/val/b.h5") as file:
        assert file["kspace"].shape == (1, 32, 32) and file.attrs["kdc_source_format"] == "ismrmrd"
    ismrmrd_files.generate(tmp_path / "raw" / "c.h5", "-m", "32", "-c", "4", "-a", "4", "-w", "8")
    result = CliRunner().invoke(data_app, ["prepare", str(tmp_path / "raw"), "--out", str(tmp_path / "again")])
    error, = result.output.splitlines()  # alone: the reader's notice (repetition 0 of 4) is not said
    assert result.exit_code == 1 and "Traceback" not in result.output
    assert error.startswith("error: ") and "c.h5: undersampled k-space (ismrmrd)" in error
    assert not (tmp_path / "again").exists()  # nothing half-written


def test_image_datasets_and_single_files_are_refused_in_one_line(tmp_path, write_kdmri, phantom):
    write_kdmri(tmp_path / "a.h5", phantom(2, 16, 16))
    write_kdmri(tmp_path / "b.h5", phantom(2, 16, 16))
    result = CliRunner().invoke(data_app, ["prepare", str(tmp_path / "a.h5"), str(tmp_path / "b.h5"), "--out",
                                           str(tmp_path / "p")])
    assert result.exit_code == 1 and "a.h5: holds images (kd-mri), not raw k-space" in result.output
    result = CliRunner().invoke(data_app, ["prepare", str(tmp_path / "a.h5"), "--out", str(tmp_path / "p")])
    assert result.exit_code == 1 and "--val-volumes 1: expected 1 to 0 of the 1 file(s)" in result.output
