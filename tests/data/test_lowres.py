import numpy as np
import pytest

from kdc.data import DataError
from kdc.mri.fft import ifft2c
from kdc.data.lowres import low_resolution, lowpass_window, open_lowres_split


@pytest.mark.parametrize("scale", [2, 4])
def test_low_resolution_keeps_exactly_the_central_kspace(phantom, scale):
    image = phantom(1, 32, 24)[0]
    lowres = low_resolution(image, scale)
    assert lowres.shape == image.shape and lowres.dtype == np.float32
    window = lowpass_window((32, 24), scale)
    assert window.sum() == (32 // scale) * (24 // scale) and window[16, 12] == 1
    # k-space outside the central band does not reach the low-resolution image ...
    mirrored = np.roll(np.flip(window), (1, 1), axis=(0, 1))  # frequency -f of every kept f (a real image has both)
    noise = np.random.default_rng(0).standard_normal((32, 24)) * (1 - window) * (1 - mirrored)
    outside = np.real(ifft2c(noise))
    np.testing.assert_allclose(low_resolution(image + outside, scale), lowres, atol=1e-5)
    # ... while a band-limited (smooth, positive) image comes through unchanged
    y, x = np.meshgrid(np.arange(32), np.arange(24), indexing="ij")
    smooth = 1 + 0.5 * np.cos(2 * np.pi * y / 32) * np.cos(2 * np.pi * 2 * x / 24)
    np.testing.assert_allclose(low_resolution(smooth, scale), smooth, atol=1e-5)
    assert np.abs(lowres - image).mean() > 0.01  # the phantom's detail is lost


def test_split_of_lowres_and_targets(tmp_path, write_kdmri, phantom):
    write_kdmri(tmp_path / "train" / "a.h5", phantom(3, 24, 20, seed=1))
    write_kdmri(tmp_path / "train" / "b.h5", phantom(2, 24, 20, seed=2))
    dataset = open_lowres_split(tmp_path, "train", 4)
    assert len(dataset) == 5 and dataset.image_shape == (24, 20) and dataset.scale == 4
    item = dataset[4]
    assert (item["volume"], item["slice"]) == ("b", 1)
    assert item["image"].shape == item["target"].shape == (1, 24, 20)
    assert item["target"].max() <= 1
    np.testing.assert_allclose(item["image"][0], low_resolution(item["target"][0], 4), atol=1e-6)


def test_demo_split_at_scale_2():
    dataset = open_lowres_split("demo", "val", 2)
    item = dataset[0]
    assert item["image"].shape == (1, *dataset.image_shape)


@pytest.mark.parametrize("scale", [3, 8, 1])
def test_unsupported_scale(scale):
    with pytest.raises(DataError, match=f"scale {scale}"):
        open_lowres_split("demo", "val", scale)
