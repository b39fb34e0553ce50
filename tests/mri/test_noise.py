"""Noise prewhitening: the whitened noise covariance is the identity (times Gadgetron's scale)."""

import numpy as np
import pytest

from kdc.mri.noise import (NoiseError, bandwidth_scale, noise_covariance, prewhiten, prewhitening_matrix)


def correlated_noise(count: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    mixing = np.array([[1, 0, 0], [0.7, 0.5, 0], [0.2j, 0.3, 4.0]])
    white = rng.standard_normal((3, count)) + 1j * rng.standard_normal((3, count))
    return mixing @ white, mixing


def test_whitened_covariance_is_the_identity():
    samples, mixing = correlated_noise(20000)
    covariance = noise_covariance(samples)
    np.testing.assert_allclose(covariance, 2 * mixing @ mixing.conj().T, atol=0.15)
    scale = bandwidth_scale(5.0, 10.0)  # image dwell 5 us, noise dwell 10 us, receiver bandwidth 0.793
    assert scale == pytest.approx(0.5 * 0.793)
    whitening = prewhitening_matrix(covariance, scale)
    whitened = prewhiten(samples[:, None, :], whitening)[:, 0]  # coils on axis -3 of (C, 1, M)
    np.testing.assert_allclose(noise_covariance(whitened) / (2 * scale), np.eye(3), atol=1e-4)
    np.testing.assert_allclose(whitening @ covariance @ whitening.conj().T, 2 * scale * np.eye(3), atol=1e-4)


def test_unusable_noise_is_one_line():
    samples, _ = correlated_noise(100)
    with pytest.raises(NoiseError, match="3 noise sample\\(s\\) per coil for 3 coils: expected at least 6"):
        noise_covariance(samples[:, :3])
    duplicated = np.concatenate([samples, samples[:1]])
    with pytest.raises(NoiseError, match="not positive definite"):
        prewhitening_matrix(noise_covariance(duplicated))
    assert bandwidth_scale(0.0, 5.0) == 1.0
