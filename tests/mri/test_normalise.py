import numpy as np

from kdc.mri.fft import fft2, fft2c
from kdc.mri.layout import from_channels, to_channels
from kdc.mri.normalise import zero_filled_peak


def test_peak_is_the_zero_filled_maximum_in_every_layout():
    rng = np.random.default_rng(0)
    image = rng.random((3, 17, 12)) * np.exp(1j * rng.random((3, 17, 12)))
    peak = float(np.abs(image).max())
    assert np.isclose(zero_filled_peak(fft2(image)), peak)
    assert np.isclose(zero_filled_peak(fft2c(image)), peak)  # centring moves pixels only
    assert np.isclose(zero_filled_peak(to_channels(fft2(image))), peak)
    assert zero_filled_peak(np.zeros((0, 2, 4, 4), np.float32)) == 0.0


def test_channels_round_trip():
    values = (np.arange(12) + 1j * np.arange(12)[::-1]).reshape(1, 3, 4)
    channels = to_channels(values)
    assert channels.shape == (1, 2, 3, 4) and channels.dtype == np.float32
    np.testing.assert_array_equal(from_channels(channels), values)
