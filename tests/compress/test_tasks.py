import pytest
import torch

from kdc.compress.tasks import RECON, TASKS, get_task
from kdc.errors import KdcError
from kdc.models import build_model


def test_sr_pairs_teacher_conv_6_with_student_conv_4():
    sr = get_task("sr")
    batch = {"image": torch.rand(2, 1, 12, 12), "target": torch.rand(2, 1, 12, 12)}
    for preset, conv in (("sr_teacher", 6), ("sr_student", 4)):
        model = build_model(preset).eval()
        produced = sr.outputs(model, batch)
        image, features = model.forward_features(batch["image"])
        assert len(produced.features) == 1
        assert torch.equal(produced.features[0], features[conv - 1])  # features[0] is after conv 1
        assert torch.equal(produced.image, image) and torch.equal(sr.predict(model, batch), image)
    assert torch.equal(sr.baseline_image(batch), batch["image"])
    assert (sr.baseline, sr.presets) == ("low-res", {"teacher": "sr_teacher", "student": "sr_student"})


def test_recon_pairs_conv_3_with_conv_2_in_every_cascade():
    kspace, mask = torch.rand(1, 2, 8, 8), torch.ones(1, 1, 1, 8)
    for preset, conv in (("teacher", 3), ("student", 2)):
        model = build_model(preset).eval()
        produced = RECON.outputs(model, {"kspace": kspace, "mask": mask})
        _, features = model.forward_features(kspace, mask)
        assert len(produced.features) == 5
        assert all(torch.equal(a, taps[conv - 1]) for a, taps in zip(produced.features, features))


def test_unknown_task():
    assert sorted(TASKS) == ["recon", "recon_complex", "recon_image", "recon_multicoil", "sr"]
    with pytest.raises(KdcError, match="unknown task 'denoise'"):
        get_task("denoise")
