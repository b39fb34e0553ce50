import torch

from kdc.mri.masks import cartesian_mask
from kdc.models.dc import DataConsistency, as_channels, as_complex


def test_channels_round_trip():
    z = torch.randn(2, 1, 5, 7, dtype=torch.complex64)
    assert torch.equal(as_complex(as_channels(z)), z)


def test_dc_replaces_sampled_kspace_by_measurement():
    """Re(F^H [M y + (1 - M) F x]) for a real image x: the definition of hard data consistency."""
    torch.manual_seed(0)
    shape = (24, 30)
    mask = torch.from_numpy(cartesian_mask("equispaced", 4, shape))[None, None]
    truth = torch.rand(1, 1, *shape)
    measured = torch.fft.fft2(truth.to(torch.complex64), norm="ortho") * mask
    estimate = torch.rand(1, 1, *shape)
    expected = torch.fft.ifft2(
        mask * measured + (1 - mask) * torch.fft.fft2(estimate.to(torch.complex64), norm="ortho"), norm="ortho"
    ).real
    out = DataConsistency()(estimate, as_channels(measured), mask)
    torch.testing.assert_close(out, expected, atol=1e-6, rtol=0)
    # the unsampled k-space of the estimate is kept
    unsampled = (1 - mask).bool().expand(1, 1, *shape)
    k_out = torch.fft.fft2(out.to(torch.complex64), norm="ortho")
    k_est = torch.fft.fft2(estimate.to(torch.complex64), norm="ortho")
    assert not torch.allclose(k_out, k_est)
    assert unsampled.any()


def test_zero_filled_is_real_part_of_inverse_fft():
    kspace = torch.randn(1, 2, 8, 8)
    expected = torch.fft.ifft2(torch.complex(kspace[:, :1], kspace[:, 1:]), norm="ortho").real
    torch.testing.assert_close(DataConsistency().zero_filled(kspace), expected)
