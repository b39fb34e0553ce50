import numpy as np
import pytest

from kdc.mri.masks import MaskError, acceleration_of, cartesian_mask, center_fraction_for, mask_like, sampled_lines


@pytest.mark.parametrize("kind", ["random", "equispaced"])
def test_row_and_column_masks_sample_whole_lines_around_dc(kind):
    columns = cartesian_mask(kind, 4, (24, 40), seed=1)
    rows = cartesian_mask(kind, 4, (40, 24), seed=1, axis=-2)
    np.testing.assert_array_equal(rows, columns.T)  # the same lines, along the other axis
    axis, indices = sampled_lines(rows)
    assert axis == -2 and 0 in indices  # DC row sampled (uncentred)
    assert sampled_lines(columns)[0] == -1
    assert (rows == rows[:, :1]).all() and not (rows == rows[:1]).all()


def test_random_2d_mask_has_a_full_centre_and_the_requested_density():
    mask = cartesian_mask("random2d", 4, (128, 96), seed=0)
    assert sampled_lines(mask) is None
    centred = np.fft.fftshift(mask)
    assert centred[60:68, 44:52].all()  # 8 % of each axis around DC
    assert 3.6 < mask.size / mask.sum() < 4.4


def test_accelerations_beyond_the_table_take_a_centre_fraction():
    with pytest.raises(MaskError, match=r"unknown acceleration 6x: expected one of \[4, 5, 8\], or give its centre"):
        center_fraction_for(6)
    mask = cartesian_mask("equispaced", 6, (16, 200), center_fraction=0.07)
    lines = np.fft.fftshift(mask[0])
    assert lines[93:107].all()  # round(200 * 0.07) = 14 central lines
    assert 5.0 < mask.size / mask.sum() < 7.0
    with pytest.raises(MaskError, match="centre fraction 1.5"):
        center_fraction_for(6, 1.5)


@pytest.mark.parametrize("axis", [-1, -2])
def test_mask_like_draws_the_same_scheme_along_the_same_axis_with_another_seed(axis):
    mask = cartesian_mask("equispaced", 4, (32, 48), seed=0, axis=axis)
    draws = [mask_like(mask, "equispaced", 4, (0, epoch, 3)) for epoch in range(4)]
    for draw in draws:
        assert draw.shape == mask.shape and sampled_lines(draw)[0] == axis
        assert 3.4 < acceleration_of(draw) < 4.6  # equispaced: about the same number of lines
    np.testing.assert_array_equal(draws[2], mask_like(mask, "equispaced", 4, (0, 2, 3)))
    assert len({draw.tobytes() for draw in draws}) > 1
    two_d = cartesian_mask("random2d", 4, (32, 48), seed=0)
    assert sampled_lines(mask_like(two_d, "random2d", 4, 1)) is None
