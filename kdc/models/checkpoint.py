"""Checkpoint format: one ``.pt`` file holding weights and a JSON config, safe to load with ``weights_only=True``.

``config`` names the architecture and its hyper-parameters (``{"arch": "dccnn", "cascades": 5, ...}``); ``meta``
carries what was learned about the model (acceleration, image size, metrics). Nothing is unpickled on load.

A user's model (:mod:`kdc.models.user`) is recorded as ``{"arch": "user", "class": "MODULE:CLASS", "init": {...}}``.
Rebuilding it imports ``MODULE``, which runs that module's code, so a checkpoint is never enough: the class is
imported only when the caller names the same ``MODULE:CLASS`` (``trusted``; on the command line ``--teacher``,
``--student`` or ``--user-class``), else loading stops with one line saying what to pass.
"""

from __future__ import annotations

import json
from collections.abc import Collection
from pathlib import Path
from typing import Any

import torch
from torch import nn

from kdc._io import atomic_path
from kdc.errors import KdcError
from kdc.models.dccnn import DCCNN
from kdc.models.sense_dccnn import SenseDCCNN
from kdc.models.sense_varnet import SenseVarNet
from kdc.models.user import USER_ARCH, load_tensors, load_user_model
from kdc.models.vdsr import VDSR

FORMAT = "kdc-checkpoint/1"
#: Largest value of an architecture hyper-parameter (cascades, convs, channels, depth) a checkpoint may give.
MAX_HYPERPARAMETER = 1024
ARCHITECTURES: dict[str, type[nn.Module]] = {"dccnn": DCCNN, "vdsr": VDSR, "sense_varnet": SenseVarNet,
                                             "sense_dccnn": SenseDCCNN}
#: Named configurations of the paper.
PRESETS: dict[str, dict[str, Any]] = {
    "teacher": {"arch": "dccnn", "cascades": 5, "convs": 5, "channels": 32},
    "student": {"arch": "dccnn", "cascades": 5, "convs": 3, "channels": 32},
    # Complex images (real and imaginary channels in and out, exact complex DC): 144,650 and 52,170 parameters.
    "complex_teacher": {"arch": "dccnn", "cascades": 5, "convs": 5, "channels": 32, "image_channels": 2},
    "complex_student": {"arch": "dccnn", "cascades": 5, "convs": 3, "channels": 32, "image_channels": 2},
    # MRI super-resolution (VDSR, 64 channels): teacher 11 convolutions, student 7.
    "sr_teacher": {"arch": "vdsr", "depth": 11, "channels": 64},
    "sr_student": {"arch": "vdsr", "depth": 7, "channels": 64},
    # Multi-coil with SENSE (kdc.models.sense_varnet, sense_dccnn): 424,772, 95,647 and 22,008 parameters.
    "multicoil_teacher": {"arch": "sense_varnet", "cascades": 6, "channels": 12, "pools": 2, "sens_channels": 8,
                          "sens_pools": 2},
    "multicoil_student": {"arch": "sense_varnet", "cascades": 3, "channels": 8, "pools": 2, "sens_channels": 4,
                          "sens_pools": 2},
    "multicoil_dccnn": {"arch": "sense_dccnn", "cascades": 5, "convs": 3, "channels": 16, "sens_channels": 4,
                        "sens_pools": 2},
}


class CheckpointError(KdcError):
    """A file that is not a kdc checkpoint, or whose weights do not fit its config."""


def register_architecture(name: str, cls: type[nn.Module]) -> None:
    """Make ``cls`` buildable from a config with ``"arch": name``."""
    ARCHITECTURES[name] = cls


def build_model(config: dict[str, Any] | str, trusted: Collection[str] = ()) -> nn.Module:
    """Build an untrained model from a config dict or a preset name (``teacher``, ``student``, ``sr_teacher``, ...);
    a user's class only when ``trusted`` names it (see the module docstring)."""
    if isinstance(config, str):
        if config not in PRESETS:
            raise CheckpointError(f"unknown model preset {config!r}: expected one of {sorted(PRESETS)}")
        config = PRESETS[config]
    params = dict(config)
    arch = params.pop("arch", None)
    if arch == USER_ARCH:
        return _build_user_model(params, trusted)
    if arch not in ARCHITECTURES:
        raise CheckpointError(f"unknown architecture {arch!r}: expected one of {sorted(ARCHITECTURES)}")
    bad = {k: v for k, v in params.items() if type(v) is not int or not 1 <= v <= MAX_HYPERPARAMETER}
    if bad:
        raise CheckpointError(f"bad config for {arch}: {bad} (each must be an integer from 1 to {MAX_HYPERPARAMETER})")
    try:
        return ARCHITECTURES[arch](**params)
    except (TypeError, ValueError) as err:
        raise CheckpointError(f"bad config for {arch}: {err}") from None


def _build_user_model(params: dict[str, Any], trusted: Collection[str]) -> nn.Module:
    """A user's class from a checkpoint config, if the caller named it."""
    spec, init = params.get("class"), params.get("init")
    if not isinstance(spec, str) or not isinstance(init, dict) or set(params) != {"class", "init"}:
        raise CheckpointError("bad config for a user's model: expected 'class' (MODULE:CLASS) and 'init' (an object)")
    if spec not in trusted:
        raise CheckpointError(f"holds a {spec} model: rebuilding it imports {spec.partition(':')[0]!r}, which runs "
                              f"its code; pass --user-class {spec} to allow that")
    return load_user_model(spec, init)


def model_config(model: nn.Module) -> dict[str, Any]:
    """The config of a model built by :func:`build_model` or :func:`kdc.models.user.load_user_model`: its
    ``kdc_config`` (a user's model) or ``config`` (kdc's architectures)."""
    config = getattr(model, "kdc_config", None) or getattr(model, "config", None)
    if not isinstance(config, dict):
        raise CheckpointError(f"cannot describe a {type(model).__name__}")
    return dict(config)


def save_checkpoint(path: str | Path, model: nn.Module, meta: dict[str, Any] | None = None) -> None:
    """Write weights, config and meta to ``path`` atomically."""
    payload = {
        "format": FORMAT,
        "config": json.dumps(model_config(model)),
        "meta": json.dumps(meta or {}),
        "state_dict": {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()},  # channels_last too
    }
    with atomic_path(path) as tmp:
        torch.save(payload, tmp)


def load_checkpoint(path: str | Path, trusted: Collection[str] = ()) -> tuple[nn.Module, dict[str, Any]]:
    """Load a checkpoint written by :func:`save_checkpoint`; return ``(model in eval mode, meta)``. ``trusted``: the
    ``MODULE:CLASS`` of users' models it may import (see the module docstring)."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: checkpoint not found")
    payload = load_tensors(path, "a kdc checkpoint", CheckpointError)
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        raise CheckpointError(f"{path}: not a kdc checkpoint (expected format {FORMAT!r})")
    config, meta = (_json_object(payload, key, path) for key in ("config", "meta"))
    state = payload.get("state_dict")
    if not isinstance(state, dict) or not all(isinstance(t, torch.Tensor) for t in state.values()):
        raise CheckpointError(f"{path}: 'state_dict' must map names to tensors")
    try:
        with torch.device("meta"):  # shapes only: a config cannot make us allocate more than the file holds
            check_weights(build_model(config, trusted), state)
    except KdcError as err:
        raise CheckpointError(f"{path}: {err}") from None
    model = build_model(config, trusted)
    model.load_state_dict(state)
    return model.eval(), meta


def _json_object(payload: dict[str, Any], key: str, path: Path) -> dict[str, Any]:
    """``payload[key]``, a JSON text of an object, parsed."""
    try:
        value = json.loads(payload[key])
    except (KeyError, TypeError, json.JSONDecodeError):
        value = None
    if not isinstance(value, dict):
        raise CheckpointError(f"{path}: '{key}' must be the JSON text of an object")
    return value


def check_weights(model: nn.Module, state: dict[str, torch.Tensor]) -> None:
    """Raise a one-line :class:`CheckpointError` unless ``state`` has exactly ``model``'s weight names and shapes."""
    expected = model.state_dict()
    missing, unexpected = sorted(set(expected) - set(state)), sorted(set(state) - set(expected))
    if missing or unexpected:
        names = "; ".join(filter(None, [missing and f"missing {missing[:3]}",
                                        unexpected and f"unexpected {unexpected[:3]}"]))
        raise CheckpointError(f"weights do not match the config: {names}")
    for name, tensor in expected.items():
        if state[name].shape != tensor.shape or not state[name].is_floating_point():
            raise CheckpointError(f"weights do not match the config: {name!r} is {state[name].dtype} "
                                  f"{tuple(state[name].shape)}, expected {tuple(tensor.shape)}")
