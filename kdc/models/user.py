"""A user's own PyTorch model, named ``MODULE:CLASS`` on the command line (``fastmri.models:VarNet``).

:func:`load_user_model` imports the class, builds it from constructor arguments (``--init JSON``) and loads a state
dict (``--weights FILE``) with ``weights_only=True``, so a weights file is never unpickled. A Lightning checkpoint
(``{"state_dict": {"model.…": …}}``) is accepted as it is: its ``model.`` prefix is stripped.
"""

from __future__ import annotations

import importlib
import json
from pathlib import Path
from typing import Any

import torch
from torch import nn

from kdc.errors import KdcError
from kdc.tasks import USER_ARCH  # a checkpoint config: {"arch": "user", "class": SPEC, "init": {...}}

#: Prefix a LightningModule puts before the wrapped network's parameter names.
LIGHTNING_PREFIX = "model."


def parse_spec(spec: str) -> tuple[str, str]:
    """``("module.path", "Class")`` from ``"module.path:Class"``."""
    module, sep, name = spec.partition(":")
    if not sep or not module or not name.isidentifier():
        raise KdcError(f"{spec!r}: expected MODULE:CLASS, e.g. fastmri.models:VarNet")
    return module, name


def is_user_spec(text: str) -> bool:
    """True when ``text`` names a class as ``MODULE:CLASS`` rather than a file, preset or ``pretrained:`` name."""
    module, sep, name = text.partition(":")
    return bool(sep) and module != "pretrained" and name.isidentifier() and all(
        part.isidentifier() for part in module.split("."))


def import_class(spec: str) -> type[nn.Module]:
    """The ``nn.Module`` subclass named by ``spec``; a one-line error when the module or class is missing."""
    module_name, name = parse_spec(spec)
    try:
        module = importlib.import_module(module_name)
    except ImportError as err:
        raise KdcError(f"{spec}: cannot import {module_name!r} ({err})") from None
    cls = getattr(module, name, None)
    if not (isinstance(cls, type) and issubclass(cls, nn.Module)):
        raise KdcError(f"{spec}: {module_name} has no torch.nn.Module subclass {name!r}")
    return cls


def parse_init(init: str | None) -> dict[str, Any]:
    """Constructor keyword arguments from ``--init``: a JSON object, or a path to a file holding one."""
    if not init:
        return {}
    text = Path(init).read_text() if not init.lstrip().startswith("{") and Path(init).is_file() else init
    try:
        value = json.loads(text)
    except json.JSONDecodeError as err:
        raise KdcError(f"--init {init!r}: not JSON ({err.msg} at character {err.pos})") from None
    if not isinstance(value, dict):
        raise KdcError(f"--init {init!r}: expected a JSON object of constructor arguments")
    return value


def load_tensors(path: Path, what: str, error: type[KdcError] = KdcError) -> Any:
    """The contents of a torch file, loaded with ``weights_only=True`` (never unpickled); ``error`` names ``path`` as
    not ``what`` when it holds anything else or is not a torch file."""
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # torch raises many types for foreign or corrupt files
        reason = "it holds objects other than tensors" if "Weights only" in str(err) else type(err).__name__
        raise error(f"{path}: not {what} ({reason}; it is never unpickled)") from None


def read_state_dict(path: Path) -> dict[str, torch.Tensor]:
    """Tensors from a state-dict file (plain, or a Lightning checkpoint's ``state_dict`` with ``model.`` names)."""
    if not path.is_file():
        raise KdcError(f"{path}: weights file not found")
    payload = load_tensors(path, "a state dict")
    state = payload.get("state_dict", payload) if isinstance(payload, dict) else None
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise KdcError(f"{path}: expected a state dict (names to tensors) or a checkpoint with 'state_dict'")
    if state and all(k.startswith(LIGHTNING_PREFIX) for k in state):
        state = {k[len(LIGHTNING_PREFIX):]: v for k, v in state.items()}
    return state


def class_names(model: nn.Module) -> list[str]:
    """``module:Class`` of the model's class and its bases, nearest first: what registered families match on."""
    return [f"{cls.__module__}:{cls.__qualname__}" for cls in type(model).__mro__]


def is_user_model(model: nn.Module) -> bool:
    """True for a model built by :func:`load_user_model` (it carries its ``kdc_config``)."""
    return isinstance(getattr(model, "kdc_config", None), dict)


def load_user_model(spec: str, init: str | dict[str, Any] | None = None, weights: Path | None = None) -> nn.Module:
    """Build ``MODULE:CLASS`` with ``init`` and load ``weights`` (strictly); the model is returned in eval mode.

    The model's ``kdc_config`` records the spec and the constructor arguments, so a kdc checkpoint of it can be
    rebuilt (:mod:`kdc.models.checkpoint`, only for a class the user names again)."""
    cls = import_class(spec)
    kwargs = init if isinstance(init, dict) else parse_init(init)
    try:
        model = cls(**kwargs)
    except (TypeError, ValueError) as err:
        raise KdcError(f"{spec}: cannot build it with --init {json.dumps(kwargs)} ({err})") from None
    model.kdc_config = {"arch": USER_ARCH, "class": spec, "init": kwargs}
    if weights is not None:
        state = read_state_dict(Path(weights))
        try:
            result = model.load_state_dict(state, strict=False)
        except RuntimeError as err:  # shapes that differ
            detail = str(err).splitlines()[-1].strip()
            raise KdcError(f"{weights}: weights do not fit {spec} built with --init {json.dumps(kwargs)}: {detail}") from None
        if result.missing_keys or result.unexpected_keys:
            names = "; ".join(filter(None, [result.missing_keys and f"missing {result.missing_keys[:3]}",
                                            result.unexpected_keys and f"unexpected {result.unexpected_keys[:3]}"]))
            raise KdcError(f"{weights}: weights do not fit {spec} built with --init {json.dumps(kwargs)}: {names}")
    return model.eval()
