"""1-D Cartesian masks along either axis (kdc.mri.masks) and the smooth phase of complex test images."""

import numpy as np
import pytest

from kdc.mri.masks import MaskError, cartesian_mask, line_mask_input, sampled_lines
from kdc.mri.simulate import smooth_phase, with_smooth_phase


def test_sampled_lines_finds_columns_rows_or_none():
    columns = cartesian_mask("random", 4, (12, 10), seed=2)
    axis, indices = sampled_lines(columns)
    assert axis == -1 and np.array_equal(indices, np.flatnonzero(columns[0]))
    rows = columns.T
    axis, indices = sampled_lines(rows)
    assert axis == -2 and np.array_equal(indices, np.flatnonzero(rows[:, 0]))
    assert sampled_lines(np.eye(6)) is None


def test_line_mask_input_takes_a_line_or_the_whole_mask():
    rows = cartesian_mask("random", 4, (10, 12), seed=2).T  # (12, 10), rows sampled
    expected = rows[:, :1][None, None]
    for given in (rows, rows[:, 0], expected):
        assert np.array_equal(line_mask_input(given, (12, 10), -2), expected)
    centred = np.fft.fftshift(rows[:, 0])
    assert np.array_equal(line_mask_input(centred, (12, 10), -2, centred=True), expected)


@pytest.mark.parametrize("mask,message", [
    (np.ones(7), "image height 12"),
    (cartesian_mask("random", 4, (12, 10)), "not 1-D Cartesian along the rows"),
    (np.full(12, 2.0), "only 0 and 1"),
])
def test_line_mask_input_errors(mask, message):
    with pytest.raises(MaskError, match=message):
        line_mask_input(mask, (12, 10), -2)


def test_smooth_phase_is_unit_seeded_and_smooth():
    phase = smooth_phase((32, 24), seed=3)
    assert phase.dtype == np.complex64 and np.allclose(np.abs(phase), 1, atol=1e-6)
    assert np.array_equal(phase, smooth_phase((32, 24), seed=3)) and not np.allclose(phase, smooth_phase((32, 24), 4))
    assert np.abs(np.angle(phase[1:] * phase[:-1].conj())).max() < 0.5  # neighbours differ by a small angle
    images = np.random.default_rng(0).random((2, 32, 24)).astype(np.float32)
    assert np.allclose(np.abs(with_smooth_phase(images)), images, atol=1e-6)
