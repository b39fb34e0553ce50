"""kdc.models.user: a user's MODULE:CLASS built from --init and loaded from a state dict, never unpickled."""

import pickle

import pytest
import torch

from kdc.errors import KdcError
from kdc.models.user import is_user_spec, load_user_model

SPEC = "torch.nn:Conv2d"
INIT = '{"in_channels": 2, "out_channels": 3, "kernel_size": 3}'


def test_builds_and_loads_a_lightning_state_dict(tmp_path):
    reference = torch.nn.Conv2d(2, 3, 3)
    path = tmp_path / "model.ckpt"
    torch.save({"state_dict": {f"model.{k}": v for k, v in reference.state_dict().items()}}, path)
    model = load_user_model(SPEC, INIT, path)
    assert not model.training
    assert torch.equal(model.weight, reference.weight)


def test_a_kdc_checkpoint_of_a_users_class_gives_its_weights(tmp_path):
    """What ``kdc distill --student MODULE:CLASS`` writes (kdc.models.checkpoint's format) exports as a state dict."""
    reference = torch.nn.Conv2d(2, 3, 3)
    path = tmp_path / "kd_student.pt"
    torch.save({"format": "kdc-checkpoint/1", "config": '{"arch": "user"}', "meta": "{}",
                "state_dict": reference.state_dict()}, path)
    assert torch.equal(load_user_model(SPEC, INIT, path).bias, reference.bias)


@pytest.mark.parametrize("spec, init, message", [
    ("torch.nn.Conv2d", None, "expected MODULE:CLASS"),
    ("no_such_module:Net", None, "cannot import 'no_such_module'"),
    ("torch.nn:NoSuchNet", None, "no torch.nn.Module subclass 'NoSuchNet'"),
    ("torch:Tensor", None, "no torch.nn.Module subclass"),
    (SPEC, '{"in_channels": 2', "not JSON"),
    (SPEC, "[1, 2]", "expected a JSON object"),
    (SPEC, '{"channels": 2}', "cannot build it"),
])
def test_bad_specs_and_init_are_one_line_errors(spec, init, message):
    with pytest.raises(KdcError, match=message):
        load_user_model(spec, init)


def test_weights_that_do_not_fit_or_hold_objects_are_refused(tmp_path):
    wrong = tmp_path / "wrong.pt"
    torch.save(torch.nn.Conv2d(2, 4, 3).state_dict(), wrong)
    with pytest.raises(KdcError, match="weights do not fit"):
        load_user_model(SPEC, INIT, wrong)
    renamed = tmp_path / "renamed.pt"
    torch.save({"conv.weight": torch.zeros(3, 2, 3, 3)}, renamed)
    with pytest.raises(KdcError, match="missing"):
        load_user_model(SPEC, INIT, renamed)
    pickled = tmp_path / "pickled.pt"
    pickled.write_bytes(pickle.dumps({"weight": object()}))
    with pytest.raises(KdcError, match="never unpickled"):
        load_user_model(SPEC, INIT, pickled)


def test_user_specs_are_told_from_files_and_pretrained_names():
    assert is_user_spec("fastmri.models:VarNet")
    assert not is_user_spec("pretrained:demo-4x-kd")
    assert not is_user_spec("runs/demo/kd_student.pt")
    assert not is_user_spec("C:/models/x.pt")
