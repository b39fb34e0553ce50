import pickle

import pytest
import torch

from kdc.models import DCCNN, load_checkpoint, save_checkpoint
from kdc.models.checkpoint import CheckpointError, build_model


def test_round_trip_keeps_weights_config_and_meta(tmp_path):
    model = DCCNN(cascades=2, convs=3, channels=8)
    path = tmp_path / "m.pt"
    save_checkpoint(path, model, {"role": "student", "acceleration": 4})
    loaded, meta = load_checkpoint(path)
    assert meta == {"role": "student", "acceleration": 4}
    assert len(loaded.cascades) == 2 and loaded.cascades[0].convs[0].out_channels == 8
    for a, b in zip(model.state_dict().values(), loaded.state_dict().values()):
        assert torch.equal(a, b)
    assert [p.name for p in tmp_path.iterdir()] == ["m.pt"]  # no temp file left


class Evil:
    def __reduce__(self):
        return (print, ("unpickled!",))


def test_refuses_pickled_objects(tmp_path, capsys):
    path = tmp_path / "evil.pt"
    torch.save({"format": "kdc-checkpoint/1", "payload": Evil()}, path)
    with pytest.raises(CheckpointError, match="not a kdc checkpoint"):
        load_checkpoint(path)
    assert "unpickled!" not in capsys.readouterr().out


@pytest.mark.parametrize(
    "content, message",
    [
        (b"not a checkpoint", "not a kdc checkpoint"),
        (pickle.dumps([1, 2]), "not a kdc checkpoint"),
    ],
)
def test_foreign_files_are_refused(tmp_path, content, message):
    path = tmp_path / "x.pt"
    path.write_bytes(content)
    with pytest.raises(CheckpointError, match=message):
        load_checkpoint(path)


def test_missing_file_and_wrong_weights(tmp_path):
    with pytest.raises(CheckpointError, match="not found"):
        load_checkpoint(tmp_path / "nope.pt")
    path = tmp_path / "m.pt"
    save_checkpoint(path, DCCNN(cascades=1, convs=2, channels=4))
    payload = torch.load(path, weights_only=True)
    payload["config"] = '{"arch": "dccnn", "cascades": 1, "convs": 2, "channels": 5}'
    torch.save(payload, path)
    with pytest.raises(CheckpointError, match="do not match"):
        load_checkpoint(path)


def test_unknown_preset_and_architecture():
    with pytest.raises(CheckpointError, match="unknown model preset"):
        build_model("giant")
    with pytest.raises(CheckpointError, match="unknown architecture"):
        build_model({"arch": "unet"})


def crafted(tmp_path, **changes):
    """A checkpoint that ``weights_only`` loads, with ``changes`` to its payload (None deletes a key)."""
    path = tmp_path / "crafted.pt"
    save_checkpoint(path, DCCNN(cascades=1, convs=2, channels=4))
    payload = torch.load(path, weights_only=True)
    for key, value in changes.items():
        if value is None:
            del payload[key]
        else:
            payload[key] = value
    torch.save(payload, path)
    return path


@pytest.mark.parametrize("changes, message", [
    ({"config": '{"arch": "dccnn", "cascades": 1, "convs": 2, "channels": 1000000}'}, "each must be an integer from 1"),
    ({"config": '{"arch": "dccnn", "cascades": 1, "convs": 2, "channels": -4}'}, "{'channels': -4}"),
    ({"config": '{"arch": "dccnn", "cascades": 1, "convs": 2, "channels": "4"}'}, "{'channels': '4'}"),
    ({"config": '{"arch": "dccnn", "cascades": 1, "convs": 1, "channels": 4}'}, "at least 2 convolutions"),
    ({"config": '{"arch": "dccnn", "cascades": 1, "convs": 2, "channels": 64}'}, "expected (64, 1, 3, 3)"),
    ({"config": "[1, 2]"}, "'config' must be the JSON text of an object"),
    ({"config": 7}, "'config' must be the JSON text of an object"),
    ({"meta": "3"}, "'meta' must be the JSON text of an object"),
    ({"meta": None}, "'meta' must be the JSON text of an object"),
    ({"state_dict": None}, "'state_dict' must map names to tensors"),
    ({"state_dict": {"w": 3}}, "'state_dict' must map names to tensors"),
    ({"state_dict": {}}, "weights do not match the config: missing"),
])
def test_crafted_checkpoints_get_one_line_errors(tmp_path, changes, message):
    path = crafted(tmp_path, **changes)
    with pytest.raises(CheckpointError) as err:
        load_checkpoint(path)
    assert message in str(err.value) and "\n" not in str(err.value)


def test_a_users_model_is_rebuilt_only_for_a_class_the_caller_names(tmp_path):
    """A checkpoint names its class; importing a module runs its code, so the file alone never imports it."""
    from kdc.models.user import load_user_model

    model = load_user_model("torch.nn:Conv2d", '{"in_channels": 2, "out_channels": 3, "kernel_size": 1}')
    path = tmp_path / "user.pt"
    save_checkpoint(path, model, {"role": "student"})
    with pytest.raises(CheckpointError, match=r"user.pt: holds a torch.nn:Conv2d model: rebuilding it imports "
                                              r"'torch.nn', which runs its code; pass --user-class torch.nn:Conv2d"):
        load_checkpoint(path)
    with pytest.raises(CheckpointError, match="pass --user-class torch.nn:Conv2d"):
        load_checkpoint(path, ["torch.nn:Linear"])
    loaded, _ = load_checkpoint(path, ["torch.nn:Conv2d"])
    assert isinstance(loaded, torch.nn.Conv2d) and torch.equal(loaded.weight, model.weight)
    assert loaded.kdc_config == {"arch": "user", "class": "torch.nn:Conv2d",
                                 "init": {"in_channels": 2, "out_channels": 3, "kernel_size": 1}}
    with pytest.raises(CheckpointError, match="bad config for a user's model"):
        build_model({"arch": "user", "class": "torch.nn:Conv2d", "init": "in_channels=2"}, ["torch.nn:Conv2d"])
