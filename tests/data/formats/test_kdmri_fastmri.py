import h5py
import numpy as np
import pytest

from kdc.data import DataError
from kdc.mri.fft import fft2
from kdc.data.formats import inspect_volume
from kdc.data.volumes import read_volume
from kdc.mri.masks import cartesian_mask


def test_kdmri_volume_is_read_slices_first_and_scaled_with_its_kspace(tmp_path, write_kdmri, phantom):
    images = 3.0 * phantom(4, 24, 20)
    mask = cartesian_mask("random", 4, (24, 20))
    path = write_kdmri(tmp_path / "vol.h5", images, {4: mask})

    info = inspect_volume(path)
    assert (info.format, info.slices, info.image_shape) == ("kd-mri", 4, (24, 20))
    volume = read_volume(path, 4)
    assert volume.target.dtype == np.float32 and volume.target.shape == (4, 24, 20)
    assert volume.target.max() == 1.0
    np.testing.assert_allclose(volume.target, images / images.max(), rtol=1e-6)
    assert volume.kspace.dtype == np.complex64
    np.testing.assert_allclose(volume.kspace, fft2(volume.target) * mask, atol=1e-6)
    assert read_volume(path, 8).kspace is None  # no kspace_volus_8: simulate it
    assert read_volume(path).kspace is None


def test_fastmri_target_is_the_magnitude_of_the_centred_ifft(tmp_path, write_fastmri, phantom):
    images = phantom(2, 640, 368)
    path = write_fastmri(tmp_path / "file1000001.h5", images)

    info = inspect_volume(path)
    assert (info.format, info.slices, info.image_shape) == ("fastmri", 2, (640, 368))
    volume = read_volume(path, 4)
    assert volume.kspace is None
    np.testing.assert_allclose(volume.target, images / images.max(), atol=1e-5)


def test_float16_volfs_is_returned_as_float32(tmp_path, phantom):
    path = tmp_path / "half.h5"
    with h5py.File(path, "w") as file:
        file.create_dataset("volfs", data=np.moveaxis(phantom(2, 8, 8), 0, -1).astype(np.float16), compression="gzip")
    assert read_volume(path).target.dtype == np.float32


def write_keys(path, **arrays):
    with h5py.File(path, "w") as file:
        for key, value in arrays.items():
            file[key] = value
    return path


@pytest.mark.parametrize(
    ("arrays", "message"),
    [
        ({"image": np.zeros((4, 4, 2))}, r"expected 'volfs' \(KD-MRI\) or 'kspace' .* or 'dataset' .*found keys \['image'\]"),
        ({"volfs": np.ones((4, 4))}, r"'volfs' must be a 3-D array \(H, W, slices\), got \(4, 4\)"),
        ({"kspace": np.ones((2, 4), np.complex64)}, r"'kspace' must be a 3-D array \(slices, H, W\), complex, got \(2, 4\)"),
        ({"kspace": np.ones((2, 4, 4), np.float32)}, "'kspace' is float32, expected complex"),
        ({"volfs": np.zeros((4, 4, 2))}, "all zero"),
        (
            {"volfs": np.ones((4, 4, 2)), "kspace_volus_4": np.ones((4, 4, 3), np.complex64)},
            r"'kspace_volus_4' is complex64 \(4, 4, 3\), expected complex \(4, 4, 2\)",
        ),
    ],
)
def test_bad_files_name_the_file_and_field(tmp_path, arrays, message):
    path = write_keys(tmp_path / "bad.h5", **arrays)
    with pytest.raises(DataError, match=message) as err:
        read_volume(path, 4)
    assert str(path) in str(err.value) and "\n" not in str(err.value)


@pytest.mark.parametrize(
    ("volfs", "message"),
    [
        (np.zeros((0, 0, 5)), r"'volfs' holds 0x0 images, expected at least 2x2"),
        (np.ones((1, 8, 2)), r"'volfs' holds 1x8 images"),
        (np.full((4, 4, 2), b"abc"), r"'volfs' holds \|S3 data, expected a real \(float or integer\) image"),
        (np.ones((4, 4, 2), np.complex64), r"'volfs' holds complex64 data, .*; store its magnitude"),
        (np.ones((4, 4, 2), bool), r"'volfs' holds bool data"),
    ],
)
def test_images_that_are_not_real_2d_slices_are_refused(tmp_path, volfs, message):
    path = write_keys(tmp_path / "bad.h5", volfs=volfs)
    with pytest.raises(DataError, match=message) as err:
        inspect_volume(path)
        read_volume(path)
    assert str(path) in str(err.value) and "\n" not in str(err.value)


def test_integer_images_are_converted_to_float32(tmp_path):
    volfs = np.arange(4 * 4 * 2, dtype=np.int16).reshape(4, 4, 2)
    path = write_keys(tmp_path / "int16.h5", volfs=volfs)
    target = read_volume(path).target
    assert target.dtype == np.float32
    np.testing.assert_array_equal(target, np.moveaxis(volfs, -1, 0) / np.float32(volfs.max()))


def test_nan_is_reported_with_its_slice(tmp_path):
    volfs = np.ones((4, 4, 3))
    volfs[1, 2, 2] = np.nan
    path = write_keys(tmp_path / "nan.h5", volfs=volfs)
    with pytest.raises(DataError, match=r"'volfs' has NaN or Inf in slice 2"):
        read_volume(path)


def test_inf_in_stored_kspace_is_reported(tmp_path):
    kspace = np.ones((4, 4, 2), np.complex64)
    kspace[0, 0, 0] = np.inf
    path = write_keys(tmp_path / "inf.h5", volfs=np.ones((4, 4, 2)), kspace_volus_5=kspace)
    with pytest.raises(DataError, match=r"'kspace_volus_5' has NaN or Inf in slice 0"):
        read_volume(path, 5)


def test_missing_and_unreadable_files(tmp_path):
    with pytest.raises(DataError, match="missing.h5: file not found"):
        inspect_volume(tmp_path / "missing.h5")
    (tmp_path / "text.h5").write_text("not hdf5")
    with pytest.raises(DataError, match="text.h5: not a readable HDF5 file"):
        inspect_volume(tmp_path / "text.h5")
