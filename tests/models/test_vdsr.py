import pytest
import torch

from kdc.models import VDSR, build_model, load_checkpoint, save_checkpoint
from kdc.models.checkpoint import CheckpointError


def count(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def test_presets_have_the_papers_depths_and_parameter_counts():
    teacher, student = build_model("sr_teacher"), build_model("sr_student")
    assert (len(teacher.convs), len(student.convs)) == (11, 7)
    # 1->64 (640) + hidden 64->64 (36,928 each) + 64->1 (577)
    assert count(teacher) == 640 + 9 * 36_928 + 577 == 333_569
    assert count(student) == 640 + 5 * 36_928 + 577 == 185_857


def test_global_residual_and_hidden_features():
    model = VDSR(depth=4, channels=8)
    torch.nn.init.zeros_(model.convs[-1].weight)
    torch.nn.init.zeros_(model.convs[-1].bias)
    image = torch.rand(2, 1, 20, 12)
    output, features = model.forward_features(image)
    assert torch.equal(output, image)  # a zero last layer leaves the input untouched
    assert [tuple(f.shape) for f in features] == [(2, 8, 20, 12)] * 3
    assert all((f >= 0).all() for f in features)  # post-ReLU


def test_checkpoint_round_trip_with_weights_only(tmp_path):
    model = VDSR(depth=3, channels=4)
    save_checkpoint(tmp_path / "m.pt", model, {"role": "student", "task": "sr", "scale": 2})
    loaded, meta = load_checkpoint(tmp_path / "m.pt")
    assert isinstance(loaded, VDSR) and loaded.config == {"arch": "vdsr", "depth": 3, "channels": 4}
    assert meta["scale"] == 2
    image = torch.rand(1, 1, 8, 8)
    assert torch.equal(loaded(image), model.eval()(image))


def test_bad_depth_is_a_checkpoint_error():
    with pytest.raises(CheckpointError, match="bad config for vdsr"):
        build_model({"arch": "vdsr", "depth": 5, "layers": 3})
    with pytest.raises(ValueError, match="at least 2"):
        VDSR(depth=1)
