import pytest
import torch

from kdc.compress.losses import KD_LOSSES, Outputs, build_kd_loss
from kdc.compress.losses.attention import attention_map
from kdc.errors import KdcError


def outputs(image: torch.Tensor, *features: torch.Tensor) -> Outputs:
    return Outputs(image, list(features))


def test_registry_has_the_kd_mri_losses():
    assert {"at", "imitation"} <= set(KD_LOSSES)
    with pytest.raises(KdcError, match="unknown KD method 'nope'"):
        build_kd_loss("nope")


def test_attention_map_is_normalised_channel_mean_of_squares():
    features = torch.randn(2, 5, 4, 6)
    expected = features.pow(2).mean(1).flatten(1)
    expected = expected / expected.norm(dim=1, keepdim=True)
    torch.testing.assert_close(attention_map(features), expected)
    assert attention_map(features).shape == (2, 24)


def test_attention_transfer_compares_maps_not_channels():
    """Teacher (32 ch) and student (8 ch) with the same spatial energy have zero AT loss."""
    energy = torch.rand(1, 1, 8, 8)
    teacher = energy.sqrt().expand(1, 32, 8, 8)
    student = 3 * energy.sqrt().expand(1, 8, 8, 8)  # scale does not matter after normalisation
    loss = build_kd_loss("at")
    image = torch.zeros(1, 1, 8, 8)
    assert loss(outputs(image, student), outputs(image, teacher)).item() == pytest.approx(0, abs=1e-7)
    other = torch.rand(1, 8, 8, 8)
    assert loss(outputs(image, other), outputs(image, teacher)).item() > 1e-4


def test_attention_transfer_gradients_reach_the_student_only():
    student = torch.rand(2, 4, 6, 6, requires_grad=True)
    teacher = torch.rand(2, 8, 6, 6)
    image = torch.zeros(2, 1, 6, 6)
    build_kd_loss("at")(outputs(image, student, student), outputs(image, teacher, teacher)).backward()
    assert student.grad is not None and student.grad.abs().sum() > 0


def test_imitation_is_l1_between_outputs():
    s, t = torch.zeros(1, 1, 2, 2), torch.full((1, 1, 2, 2), 0.25)
    assert build_kd_loss("imitation")(outputs(s), outputs(t)).item() == pytest.approx(0.25)


def test_attention_transfer_is_squared_distance_of_unit_maps():
    """Orthogonal maps (disjoint energy) are at squared distance 2, whatever their size."""
    a = torch.zeros(1, 3, 4, 4)
    b = torch.zeros(1, 3, 4, 4)
    a[..., :2, :] = 1.0
    b[..., 2:, :] = 1.0
    image = torch.zeros(1, 1, 4, 4)
    assert build_kd_loss("at")(outputs(image, a), outputs(image, b)).item() == pytest.approx(2.0)
