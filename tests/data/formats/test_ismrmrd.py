"""ISMRMRD files written by Debian's ismrmrd-tools (not by kdc), checked against the tools' own reconstruction."""

import subprocess

import h5py
import numpy as np
import pytest

from kdc.data import DataError
from kdc.data.formats import inspect_volume, open_h5, detect, read_slices
from kdc.mri.fft import ifft2c
from tests import ismrmrd_files
from tests.ismrmrd_files import RECON, edit_header, orient


def generate(path, *options):
    return ismrmrd_files.generate(path, "-m", "64", "-c", "8", "-O", "2", *options, tools=(ismrmrd_files.GENERATE, RECON))


def rss(raw):
    return np.sqrt((np.abs(ifft2c(raw.kspace)) ** 2).sum(axis=1))


def test_fully_sampled_coil_images_match_the_reference_reconstruction(tmp_path):
    path = generate(tmp_path / "full.h5", "-a", "1")
    subprocess.run([RECON, str(path)], check=True, capture_output=True)
    with h5py.File(path, "r") as file:
        reference = file["dataset/cpp/data"][0, 0, 0]  # (y, x) root sum of squares, written by the C++ tool
    info = inspect_volume(path)
    assert (info.format, info.slices, info.image_shape, info.coils) == ("ismrmrd", 1, (64, 64), 8)
    image = rss(read_slices(path))[0]
    scale = np.sqrt(64 * 128)  # the tool's FFT is not normalised (encoded matrix 128 x 64)
    error = np.linalg.norm(scale * image - reference) / np.linalg.norm(reference)
    print(f"ISMRMRD reader vs {RECON}: relative error {error:.2e}")
    assert error < 1e-5
    with open_h5(path) as file:
        reader = detect(file)
        assert reader.acquired_mask(file) is None
        geometry = reader.geometry(file)
    assert geometry.spacing == (300 / 64, 300 / 64, 6.0) and "no orientation" in geometry.note


def test_geometry_comes_from_the_acquisition_headers(tmp_path):
    path = generate(tmp_path / "oriented.h5", "-a", "1")
    orient(path, (10.0, -20.0, 30.0), (0.0, 1.0, 0.0), (0.0, 0.0, -1.0))  # a sagittal slice
    with open_h5(path) as file:
        geometry = detect(file).geometry(file)
    pixel = 300 / 64
    assert geometry.note is None and geometry.spacing == (pixel, pixel, 6.0)
    assert geometry.row_direction == (0.0, 1.0, 0.0) and geometry.column_direction == (0.0, 0.0, -1.0)
    # the centre pixel (32, 32) of a centred FFT sits at the slice position
    np.testing.assert_allclose(geometry.origin, (10.0, -20.0 - 32 * pixel, 30.0 + 32 * pixel))


def test_undersampled_file_gives_its_rows_as_the_mask_with_calibration_lines(tmp_path, capsys):
    path = generate(tmp_path / "us.h5", "-a", "4", "-w", "24")
    raw = read_slices(path)
    with open_h5(path) as file:
        mask = detect(file).acquired_mask(file)
    rows = np.flatnonzero(np.fft.fftshift(mask)[:, 0])
    expected = sorted(set(range(0, 64, 4)) | set(range(20, 44)))  # every 4th line + 24 calibration lines
    assert rows.tolist() == expected
    assert (mask == mask[:, :1]).all()  # whole rows: phase encodes along H
    acquired = np.abs(raw.kspace).sum(axis=(0, 1, 3)) > 0
    assert np.flatnonzero(acquired).tolist() == expected
    assert "repetition 0 only, of 4" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (lambda p: edit_header(p, "<trajectory>cartesian", "<trajectory>radial"),
         "'dataset/xml' encoding trajectory is 'radial', expected 'cartesian'"),
        (lambda p: edit_header(p, "<z>1</z>", "<z>16</z>"), "encodedSpace matrixSize z=16: a 3-D encoding"),
        (lambda p: h5py.File(p, "r+").__delitem__("dataset/xml"), "missing 'dataset/xml'"),
        (lambda p: edit_header(p, "<x>128</x>", "<x>64</x>"), r"number_of_samples is \[128\].*inconsistent matrix"),
    ],
)
def test_bad_files_name_the_file_and_field(tmp_path, edit, message):
    path = generate(tmp_path / "bad.h5", "-a", "1")
    edit(path)
    with pytest.raises(DataError, match=message) as err:
        inspect_volume(path)
    assert str(path) in str(err.value) and "\n" not in str(err.value)


def test_zero_coils_is_refused(tmp_path):
    path = generate(tmp_path / "nocoils.h5", "-a", "1")
    with h5py.File(path, "r+") as file:
        data = file["dataset/data"][()]
        data["head"]["active_channels"] = 0
        file["dataset/data"][...] = data
    with pytest.raises(DataError, match=r"active_channels is \[0\]: expected one coil count above 0"):
        inspect_volume(path)
