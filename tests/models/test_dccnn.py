import pytest
import torch

from kdc.mri.masks import cartesian_mask
from kdc.models import DCCNN, build_model


def n_params(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def test_paper_parameter_counts():
    assert n_params(build_model("teacher")) == 141_765
    assert n_params(build_model("student")) == 49_285


@pytest.mark.parametrize("shape", [(150, 150), (64, 48), (37, 52)])
def test_any_image_size(shape):
    torch.manual_seed(0)
    model = DCCNN(cascades=2, convs=3, channels=4)
    mask = torch.from_numpy(cartesian_mask("random", 4, shape))[None, None]
    kspace = torch.randn(2, 2, *shape)
    assert model(kspace, mask).shape == (2, 1, *shape)


def test_features_are_hidden_activations_of_every_cascade():
    model = DCCNN(cascades=3, convs=4, channels=6)
    kspace, mask = torch.randn(1, 2, 16, 16), torch.ones(1, 1, 1, 16)
    image, features = model.forward_features(kspace, mask)
    assert len(features) == 3
    assert [f.shape for f in features[0]] == [(1, 6, 16, 16)] * 3
    assert torch.equal(image, model(kspace, mask))


def test_fully_sampled_input_is_returned_unchanged():
    """With every line sampled, DC overwrites whatever the CNN did: the output is the measured image."""
    model = DCCNN(cascades=2, convs=3, channels=4)
    image = torch.rand(1, 1, 20, 24)
    kspace = torch.fft.fft2(image.to(torch.complex64), norm="ortho")
    out = model(torch.cat([kspace.real, kspace.imag], 1), torch.ones(1, 1, 1, 24))
    torch.testing.assert_close(out, image, atol=1e-5, rtol=0)


def test_cascade_needs_two_convs():
    with pytest.raises(ValueError, match="at least 2"):
        DCCNN(convs=1)


def test_complex_parameter_counts():
    assert n_params(build_model("complex_teacher")) == 144_650
    assert n_params(build_model("complex_student")) == 52_170


def test_complex_dc_keeps_the_measured_kspace_and_the_phase():
    """Exact complex DC: the output's k-space equals the measurement on the sampled lines, and the imaginary part is
    not dropped (it is for a real image)."""
    torch.manual_seed(0)
    shape = (24, 20)
    mask = torch.from_numpy(cartesian_mask("random", 4, shape))[None, None, :1]
    kspace = torch.randn(2, 2, *shape) * mask
    complex_image = DCCNN(cascades=2, convs=3, channels=4, image_channels=2)(kspace, mask)
    assert complex_image.shape == (2, 2, *shape)
    predicted = torch.fft.fft2(torch.complex(complex_image[:, 0], complex_image[:, 1]), norm="ortho")
    measured = torch.complex(kspace[:, 0], kspace[:, 1])
    assert ((predicted - measured) * mask[:, 0]).abs().max() < 1e-5
    real_image = DCCNN(cascades=2, convs=3, channels=4)(kspace, mask)
    assert ((torch.fft.fft2(real_image[:, 0], norm="ortho") - measured) * mask[:, 0]).abs().max() > 0.1


def test_image_channels_must_be_real_or_complex():
    with pytest.raises(ValueError, match="image_channels"):
        DCCNN(image_channels=3)
