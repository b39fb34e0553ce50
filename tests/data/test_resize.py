import numpy as np
import pytest

from kdc.data.resize import fit_images, pad_to_aspect, resample_matrix


@pytest.mark.parametrize(("size_in", "size_out"), [(10, 10), (181, 128), (128, 640), (7, 3)])
def test_resample_weights_are_convex(size_in, size_out):
    weights = resample_matrix(size_in, size_out)
    assert weights.shape == (size_out, size_in) and weights.min() >= 0
    np.testing.assert_allclose(weights.sum(axis=1), 1)


def test_same_size_is_identity_and_downsampling_antialiases():
    np.testing.assert_allclose(resample_matrix(9, 9), np.eye(9))
    stripes = np.tile([0.0, 1.0], 48)[None].repeat(3, axis=0)  # highest frequency along W
    shrunk = fit_images(stripes, (1, 32))  # point sampling would give 1, 0, 1, 0, ...
    np.testing.assert_allclose(shrunk[:, 1:-1], 0.5, atol=0.06)  # averaged away, not aliased


def test_padding_is_centred_and_keeps_the_aspect():
    image = np.ones((2, 10, 6))
    padded = pad_to_aspect(image, (20, 20))
    assert padded.shape == (2, 10, 10)
    np.testing.assert_array_equal(padded[:, :, 2:8], 1)
    assert padded[:, :, :2].max() == padded[:, :, 8:].max() == 0
    assert pad_to_aspect(image, (30, 10)).shape == (2, 18, 6)


def test_a_disc_stays_a_disc_in_a_tall_image():
    y, x = np.mgrid[-1:1:101j, -1:1:101j]
    disc = (x**2 + y**2 < 0.5).astype(np.float32)
    fitted = fit_images(disc, (160, 92))
    rows, cols = np.nonzero(fitted > 0.5)
    assert abs((rows.max() - rows.min()) - (cols.max() - cols.min())) <= 2
    assert fitted.dtype == np.float32
