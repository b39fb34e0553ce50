"""The input readers of kdc reconstruct, on real h5/npy files in the fastMRI, KD-MRI and ISMRMRD layouts."""

import h5py
import numpy as np
import pytest

from kdc.errors import KdcError
from kdc.mri.fft import fft2, fft2c
from kdc.runtime.readers import READERS, read_input
from tests.ismrmrd_files import generate

HEADER = """<?xml version="1.0" encoding="utf-8"?>
<ismrmrdHeader xmlns="http://www.ismrm.org/ISMRMRD"><experimentalConditions><H1resonanceFrequency_Hz>63500000</H1resonanceFrequency_Hz></experimentalConditions><encoding>
<encodedSpace><matrixSize><x>{h}</x><y>{w}</y><z>1</z></matrixSize>
<fieldOfView_mm><x>{fx}</x><y>{fy}</y><z>3</z></fieldOfView_mm></encodedSpace>
<reconSpace><matrixSize><x>{h}</x><y>{w}</y><z>1</z></matrixSize>
<fieldOfView_mm><x>{fx}</x><y>{fy}</y><z>3</z></fieldOfView_mm></reconSpace>
<encodingLimits></encodingLimits><trajectory>cartesian</trajectory></encoding></ismrmrdHeader>"""


def test_fastmri_single_coil_fully_sampled(tmp_path, write_fastmri, phantom):
    images = phantom(3, 40, 32)
    path = write_fastmri(tmp_path / "file1.h5", images)
    with h5py.File(path, "a") as file:
        file["ismrmrd_header"] = HEADER.format(h=40, w=32, fx=80, fy=16).encode()
    (volume,) = read_input(path)
    with h5py.File(path) as file:
        np.testing.assert_array_equal(volume.kspace[:, 0], file["kspace"][()])
    assert volume.centred and volume.fully_sampled and volume.coils == 1 and volume.name == "file1"
    assert volume.reference is None and volume.line_axis == -1
    assert volume.geometry.spacing == (2.0, 0.5, 3.0) and "voxel size from the ISMRMRD header" in volume.geometry.note


def test_fastmri_header_of_another_matrix_is_not_trusted(tmp_path, write_fastmri, phantom):
    path = write_fastmri(tmp_path / "file1.h5", phantom(1, 40, 32))
    with h5py.File(path, "a") as file:
        file["ismrmrd_header"] = HEADER.format(h=640, w=368, fx=280, fy=140).encode()
    (volume,) = read_input(path)
    assert volume.geometry.spacing == (1.0, 1.0, 1.0) and "640x368" in volume.geometry.note


def test_fastmri_acquired_mask_and_multi_coil(tmp_path):
    mask = np.zeros(32, np.float32)
    mask[::3] = 1
    kspace = (np.random.default_rng(0).standard_normal((2, 4, 40, 32)) * mask).astype(np.complex64)
    with h5py.File(tmp_path / "multi.h5", "w") as file:
        file["kspace"], file["mask"] = kspace, mask
    (volume,) = read_input(tmp_path / "multi.h5")
    assert volume.coils == 4 and not volume.fully_sampled and volume.reference is None
    np.testing.assert_array_equal(volume.mask, np.fft.ifftshift(np.broadcast_to(mask, (40, 32))))
    assert volume.line_axis == -1 and volume.geometry.note.startswith("no geometry")


def test_kdmri_volfs_gives_uncentred_kspace_and_reference(tmp_path, write_kdmri, phantom):
    images = phantom(2, 40, 32)
    (volume,) = read_input(write_kdmri(tmp_path / "vol.h5", images))
    assert not volume.centred and volume.fully_sampled
    np.testing.assert_allclose(volume.kspace[:, 0], fft2(images), atol=1e-5)
    np.testing.assert_allclose(volume.reference, images)


def test_ismrmrd_rows_are_its_sampled_lines(tmp_path):
    path = generate(tmp_path / "scan.h5", "-m", "32", "-c", "4", "-a", "4", "-w", "8")
    (volume,) = read_input(path)
    assert volume.kspace.shape == (1, 4, 32, 32) and volume.centred and volume.phase_encode_axis == -2
    assert volume.line_axis == -2 and (volume.mask == volume.mask[:, :1]).all() and not volume.mask.all()


def test_npy_centred_kspace_mask_from_its_lines(tmp_path, phantom):
    kspace = fft2c(phantom(2, 40, 32)).astype(np.complex64)
    np.save(tmp_path / "full.npy", kspace)
    (full,) = read_input(tmp_path / "full.npy")
    assert full.fully_sampled and full.centred and full.mask is None
    kspace[..., 1::2] = 0
    np.save(tmp_path / "under.npy", kspace[0])
    (under,) = read_input(tmp_path / "under.npy")
    assert under.kspace.shape == (1, 1, 40, 32) and under.reference is None
    np.testing.assert_array_equal(under.mask, np.fft.ifftshift(np.broadcast_to(np.arange(32) % 2 == 0, (40, 32))))


def write_h5(path, key, data):
    with h5py.File(path, "w") as file:
        file[key] = data


@pytest.mark.parametrize("make,message", [
    (lambda p: np.save(p / "x.npy", np.fft.fft2(np.ones((8, 8)))), "looks uncentred"),
    (lambda p: np.save(p / "x.npy", np.ones((8, 8))), "expected complex k-space"),
    (lambda p: (p / "x.h5").write_text("not hdf5"), "unknown input layout; kdc reconstruct reads npy, h5"),
    (lambda p: write_h5(p / "x.h5", "other", 1), "expected 'volfs' (KD-MRI) or 'kspace' (fastMRI"),
    (lambda p: write_h5(p / "x.h5", "kspace", np.ones((2, 8, 8))), "'kspace' is float64, expected complex"),
    (lambda p: write_h5(p / "x.h5", "volfs", np.ones((2, 8))), "'volfs' must be a 3-D array"),
])
def test_bad_inputs_name_the_file(tmp_path, make, message):
    make(tmp_path)
    (path,) = tmp_path.iterdir()
    with pytest.raises(KdcError) as caught:
        list(read_input(path))
    assert message in str(caught.value)
    assert str(path) in str(caught.value) and "\n" not in str(caught.value)


def test_missing_file_and_registered_readers(tmp_path):
    with pytest.raises(KdcError, match="not found"):
        list(read_input(tmp_path / "absent.h5"))
    assert list(READERS) == ["npy", "h5"]
