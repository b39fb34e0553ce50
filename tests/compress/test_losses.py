import pytest
import torch

from kdc.compress.losses import KD_LOSSES, Outputs, build_kd_loss, check_batch_size
from kdc.compress.losses.attention import attention_map
from kdc.compress.losses.fsp import fsp_matrix
from kdc.compress.losses.pkt import conditional_probabilities
from kdc.compress.losses.rkd import angles
from kdc.compress.tasks import RECON
from kdc.compress.trainer import Stage, TrainSettings, train_stage
from kdc.errors import KdcError
from kdc.models import DCCNN
from tests.compress.test_trainer import tiny_split

outputs_of = RECON.outputs  # the reconstruction task's (image, distilled features, hidden maps)


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


FEATURE_METHODS = ["at", "fitnet", "fsp", "sp", "cc", "rkd", "pkt"]
RELATIONAL = ["sp", "cc", "rkd", "pkt"]


def network_outputs(seed: int, batch: int = 4, channels: int = 32, size: int = 6, cascades: int = 5) -> Outputs:
    """Outputs shaped like a KD-MRI network's: ``hidden`` has three maps per cascade, ``features`` the middle one."""
    generator = torch.Generator().manual_seed(seed)
    shape = (batch, channels, size, size)
    hidden = [[torch.randn(shape, generator=generator) for _ in range(3)] for _ in range(cascades)]
    return Outputs(torch.rand(batch, 1, size, size, generator=generator), [h[1] for h in hidden], hidden)


def scaled(outputs: Outputs, factor: float) -> Outputs:
    hidden = [[f * factor for f in h] for h in outputs.hidden]
    return Outputs(outputs.image, [f * factor for f in outputs.features], hidden)


def identity_fitnet() -> torch.nn.Module:
    loss = build_kd_loss("fitnet")
    with torch.no_grad():
        for regressor in loss.regressors:
            regressor.weight.copy_(torch.eye(32)[:, :, None, None])
            regressor.bias.zero_()
    return loss


def test_registry_has_every_method():
    assert set(FEATURE_METHODS) | {"imitation"} <= set(KD_LOSSES)


@pytest.mark.parametrize("method", FEATURE_METHODS)
def test_zero_when_student_features_equal_the_teachers(method):
    loss = identity_fitnet() if method == "fitnet" else build_kd_loss(method)
    teacher = network_outputs(0)
    assert loss(teacher, teacher).item() == pytest.approx(0, abs=1e-6)


@pytest.mark.parametrize("method", FEATURE_METHODS)
def test_positive_and_differentiable_otherwise(method):
    loss = build_kd_loss(method)
    student = network_outputs(1, channels=32, size=2)
    for feature in [*student.features, *(f for h in student.hidden for f in h)]:
        feature.requires_grad_(True)
    value = loss(student, network_outputs(2, channels=32, size=2))
    assert value.item() > 1e-5
    value.backward()
    gradients = [f.grad for f in student.features if f.grad is not None]
    gradients += [f.grad for h in student.hidden for f in h if f.grad is not None]
    assert gradients and all(torch.isfinite(g).all() for g in gradients)
    assert sum(g.abs().sum() for g in gradients) > 0


@pytest.mark.parametrize("method", ["at", *RELATIONAL])
def test_invariant_to_scaling_the_features(method):
    loss = build_kd_loss(method)
    student, teacher = network_outputs(1, size=3), network_outputs(2, size=3)
    reference = loss(student, teacher).item()
    assert reference > 1e-6
    assert loss(scaled(student, 7.0), scaled(teacher, 0.2)).item() == pytest.approx(reference, rel=1e-3)


def test_fsp_and_fitnet_are_not_scale_invariant():
    teacher = network_outputs(0)
    for loss in (build_kd_loss("fsp"), identity_fitnet()):
        assert loss(scaled(teacher, 2.0), teacher).item() > 0.1


def test_rkd_is_invariant_to_translation_of_the_samples():
    loss = build_kd_loss("rkd")
    student, teacher = network_outputs(1, size=2), network_outputs(2, size=2)
    shifted = Outputs(student.image, [f + 3.0 for f in student.features])
    assert loss(shifted, teacher).item() == pytest.approx(loss(student, teacher).item(), rel=1e-3)


@pytest.mark.parametrize("method", RELATIONAL)
def test_relational_losses_are_zero_on_a_batch_of_one_and_refuse_batch_size_one(method):
    student = network_outputs(1, batch=1)
    student.features[0].requires_grad_(True)
    value = build_kd_loss(method)(student, network_outputs(2, batch=1))
    assert value.item() == 0
    value.backward()  # still part of the graph: a last batch of one slice trains on
    assert student.features[0].grad is not None
    with pytest.raises(KdcError, match=f"--method {method} .* --batch-size must be >= 2"):
        check_batch_size(method, 1)
    check_batch_size(method, 2)
    check_batch_size("at", 1)


def test_fsp_matrix_is_the_spatially_averaged_channel_product():
    first, second = torch.randn(2, 3, 4, 5), torch.randn(2, 6, 4, 5)
    expected = torch.stack([a.flatten(1) @ b.flatten(1).T / 20 for a, b in zip(first, second)])
    torch.testing.assert_close(fsp_matrix(first, second), expected)


def test_fsp_needs_hidden_maps_with_matching_channels():
    teacher = network_outputs(0)
    with pytest.raises(KdcError, match="Outputs.hidden"):
        build_kd_loss("fsp")(Outputs(teacher.image, teacher.features), teacher)
    with pytest.raises(KdcError, match="channels must match"):
        build_kd_loss("fsp")(network_outputs(1, channels=8), teacher)


def test_fitnet_regressor_maps_student_to_teacher_channels():
    loss = build_kd_loss("fitnet", student_channels=8, teacher_channels=32, cascades=5)
    student, teacher = network_outputs(1, channels=8), network_outputs(2)
    loss(student, teacher).backward()
    assert all(r.weight.grad is not None and r.weight.grad.abs().sum() > 0 for r in loss.regressors)
    with pytest.raises(KdcError, match="8 student -> 32 teacher channels, got 32 -> 32"):
        loss(teacher, teacher)


def test_fitnet_regressors_are_saved_in_the_resumable_state(tmp_path):
    train, val = tiny_split(4, 0), tiny_split(2, 1)

    def stage(loss: torch.nn.Module) -> Stage:
        torch.manual_seed(0)
        model = DCCNN(cascades=2, convs=3, channels=4)
        teacher = DCCNN(cascades=2, convs=5, channels=6).requires_grad_(False)
        return Stage("student_at", model, lambda b: loss(outputs_of(model, b), outputs_of(teacher, b)), extra=[loss])

    trained = build_kd_loss("fitnet", student_channels=4, teacher_channels=6, cascades=2)
    untrained = {k: v.clone() for k, v in trained.state_dict().items()}
    train_stage(stage(trained), train, val, TrainSettings(epochs=1, lr=1e-2), tmp_path)
    assert any(not torch.equal(untrained[k], v) for k, v in trained.state_dict().items())
    saved = torch.load(tmp_path / "state" / "student_at.pt", weights_only=True)["extra"][0]
    assert all(torch.equal(saved[k], v) for k, v in trained.state_dict().items())

    torch.manual_seed(1)
    restarted = build_kd_loss("fitnet", student_channels=4, teacher_channels=6, cascades=2)  # a new process
    train_stage(stage(restarted), train, val, TrainSettings(epochs=1, lr=1e-2), tmp_path)  # finished: loads state
    assert all(torch.equal(restarted.state_dict()[k], v) for k, v in trained.state_dict().items())


def test_pkt_rows_are_probabilities_and_rkd_angles_are_cosines():
    points = torch.tensor([[1.0, 0.0], [0.0, 0.0], [0.0, 2.0]])
    torch.testing.assert_close(conditional_probabilities(points).sum(dim=1), torch.ones(3))
    assert angles(points)[1, 0, 2].item() == pytest.approx(0.0, abs=1e-6)  # right angle at the origin
    assert angles(points)[1, 0, 0].item() == pytest.approx(1.0)
