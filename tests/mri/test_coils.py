import numpy as np
import pytest

from kdc.mri.coils import CoilError, calibration_region, compress_coils, virtual_coil, volume_compression
from kdc.mri.fft import centred_to_uncentred, fft2, fft2c, ifft2
from kdc.mri.masks import cartesian_mask
from kdc.mri.simulate import birdcage_maps


def test_one_virtual_coil_keeps_the_image_of_rank_one_coil_data():
    rng = np.random.default_rng(0)
    image = rng.random((2, 32, 32)) * np.exp(1j * rng.random((2, 32, 32)))
    weights = rng.standard_normal(6) + 1j * rng.standard_normal(6)
    kspace = fft2(weights[None, :, None, None] * image[:, None])  # every coil the same image, scaled
    virtual = compress_coils(kspace)
    assert virtual.shape == (2, 1, 32, 32)
    np.testing.assert_allclose(np.abs(ifft2(virtual[:, 0])), np.linalg.norm(weights) * np.abs(image), atol=1e-5)


def test_virtual_coil_magnitude_is_close_to_the_root_sum_of_squares():
    y, x = np.mgrid[-1:1:64j, -1:1:64j]
    image = ((x / 0.8) ** 2 + (y / 0.9) ** 2 < 1).astype(float)
    coils = birdcage_maps(8, (64, 64))[None] * image
    kspace = fft2(coils)
    mask = cartesian_mask("equispaced", 4, (64, 64))
    virtual = np.abs(ifft2(compress_coils(kspace * mask[None, None] + 0, mask)[:, 0] / mask.mean()))
    full = np.abs(ifft2(compress_coils(kspace)[:, 0]))
    rss = np.sqrt((np.abs(coils) ** 2).sum(axis=1))
    assert np.all(full <= rss + 1e-6)  # unit-norm weights: never above the RSS
    inside = image > 0
    assert np.median(full[0][inside] / rss[0][inside]) > 0.8
    assert virtual.shape == (1, 64, 64)


def test_calibration_region_is_the_run_of_lines_around_dc():
    mask = cartesian_mask("random", 4, (20, 50), axis=-2)  # rows sampled: 8 % of 20 -> 2 central rows
    region = calibration_region(mask, mask.shape)
    rows = np.flatnonzero(region[:, 0])
    assert set(rows) >= {0, 19} and region[rows].all() and not region[~region[:, 0]].any()
    assert calibration_region(None, (4, 4)).all()


def test_bad_coil_counts():
    with pytest.raises(CoilError, match="at least one coil"):
        compress_coils(np.zeros((1, 0, 4, 4), np.complex64))
    with pytest.raises(CoilError, match="3 virtual coil"):
        compress_coils(np.ones((1, 2, 4, 4), np.complex64), virtual=3)


def test_centred_kspace_compresses_as_its_uncentred_twin():
    coils = birdcage_maps(4, (24, 20))[None] * np.random.default_rng(1).random((2, 1, 24, 20))
    mask = cartesian_mask("equispaced", 4, (24, 20))
    uncentred = compress_coils(fft2(coils) * mask, mask)
    centred = compress_coils(fft2c(coils) * np.fft.fftshift(mask), mask, centred=True)
    np.testing.assert_allclose(centred_to_uncentred(centred), uncentred, atol=1e-5)


def test_the_virtual_coil_of_centred_and_uncentred_kspace_is_the_same_uncentred_kspace():
    """The one path of training (kdc.data.volumes) and kdc reconstruct: matrix, then virtual coil, uncentred."""
    coils = birdcage_maps(4, (24, 20))[None] * np.random.default_rng(2).random((2, 1, 24, 20))
    mask = cartesian_mask("equispaced", 4, (24, 20))
    centred = fft2c(coils) * np.fft.fftshift(mask)
    virtual = virtual_coil(centred, volume_compression(centred, mask, centred=True), centred=True)
    assert virtual.shape == (2, 24, 20) and virtual.dtype == np.complex64
    np.testing.assert_allclose(virtual, compress_coils(fft2(coils) * mask, mask)[:, 0], atol=1e-5)
    np.testing.assert_array_equal(virtual_coil(centred[:, :1], None, centred=True),
                                  centred_to_uncentred(centred[:, 0]).astype(np.complex64))
