"""The imaginary share of an image, measured from undersampled k-space (what the runtime's phase warning uses)."""

import numpy as np
import pytest

from kdc.mri.fft import fft2
from kdc.mri.masks import cartesian_mask
from kdc.mri.phase import imaginary_fraction, symmetric_centre


@pytest.mark.parametrize("shape", [(40, 32), (41, 33)])
def test_imaginary_share_of_real_and_phased_images(shape):
    lines = cartesian_mask("random", 4, shape, seed=2)[0]
    image = np.random.default_rng(0).random(shape)
    assert imaginary_fraction(fft2(image) * lines, lines) < 1e-12
    assert imaginary_fraction(fft2(image * np.exp(0.3j)) * lines, lines) == pytest.approx(np.sin(0.3) ** 2)
    assert imaginary_fraction(fft2(image * 1j) * lines, lines) == pytest.approx(1.0)


def test_symmetric_centre():
    lines = np.zeros(10)
    lines[[0, 1, 2, 8, 9, 5]] = 1
    np.testing.assert_array_equal(symmetric_centre(lines), [0, 1, 2, 8, 9])
    assert symmetric_centre(np.roll(lines, 3)) is None
