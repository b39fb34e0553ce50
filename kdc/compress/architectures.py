"""Which layers the recipe distils, declared once per family of networks: kdc's DC-CNN and VDSR are entries like a
user's fastMRI VarNet and U-Net.

Registering a family (one entry per family; the export half is :mod:`kdc.export.architectures`, under the same
name)::

    register_architecture(Architecture("name", instances_of("package.module:Class"), "multicoil",
                                       default_taps=my_tap_pairs))

An :class:`Architecture` names the models it owns (``owns``: :func:`instances_of` matches ``module:Class`` names,
subclasses included, without importing the class), the ``--task`` whose inputs they take (the task says how a model
is called: :mod:`kdc.compress.tasks`), its feature taps and, where the family's own pipeline runs steps around the
model, the ``pipeline`` module a task calls instead (fastMRI's U-Net normalises each slice:
:class:`kdc.models.fastmri.NormalisedUnet`, the same module its export puts in the graph). kdc's own models return
their taps themselves (``features``: DC-CNN conv 3 of 5 <-> conv 2 of 3 per cascade, VDSR conv 6 of 11 <-> conv 4
of 7, the multi-coil SENSE VarNet the regulariser's first U-Net block of :data:`SENSE_TAPS` evenly spaced cascades,
6 <-> 3 cascades pairing teacher cascades 2, 4, 6 with the student's 1, 2, 3; the SENSE DC-CNN student the middle
convolution of as many spaced cascades, 1, 3, 5 of 5). A user's model is tapped by module path with forward hooks (torchdistill's way, :class:`FeatureTaps`); a
family may give default ``(teacher path, student path)`` pairs. ``kdc distill --taps T=S,...`` replaces any of these
with hooks on both models (so a user's teacher can teach a kdc DC-CNN student); a user's class that no family owns
needs it.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from kdc.errors import KdcError
from kdc.models.fastmri import NormalisedUnet
from kdc.models.user import class_names, is_user_model

Batch = dict[str, Any]
#: ``(image, paired features, hidden features per cascade)`` of a kdc model that taps itself.
OwnFeatures = tuple[torch.Tensor, list[torch.Tensor], Sequence[Sequence[torch.Tensor]]]
TapPairs = list[tuple[str, str]]


@dataclass(frozen=True)
class Architecture:
    """A family of networks: what the recipe must know about them besides the task's inputs."""

    name: str
    owns: Callable[[nn.Module], bool]
    #: ``--task`` whose inputs the family's models take (None: any; a user's unregistered class).
    task: str | None
    #: kdc's models: ``features(model, batch)`` runs the model and returns its own taps; None: forward hooks.
    features: Callable[[nn.Module, Batch], OwnFeatures] | None = None
    #: ``default_taps(teacher, student)``: module-path pairs for two models of the family.
    default_taps: Callable[[nn.Module, nn.Module], TapPairs] | None = None
    #: ``pipeline(model)``: the module a task calls in place of the model (None: the model itself).
    pipeline: Callable[[nn.Module], nn.Module] | None = None


ARCHITECTURES: list[Architecture] = []


def register_architecture(architecture: Architecture) -> Architecture:
    ARCHITECTURES.append(architecture)
    return architecture


def instances_of(*classes: str) -> Callable[[nn.Module], bool]:
    """``owns`` for instances of the ``module:Class`` names (subclasses too), matched by name: the class's module is
    not imported."""
    return lambda model: not set(class_names(model)).isdisjoint(classes)


#: Any user's class (``kdc.models.user``) that no registered family owns: tapped with ``--taps`` only.
USER_CLASS = Architecture("user", is_user_model, None)


def architecture_of(model: nn.Module) -> Architecture:
    """The registered family that owns ``model``, else :data:`USER_CLASS` for a user's model."""
    for architecture in (*ARCHITECTURES, USER_CLASS):
        if architecture.owns(model):
            return architecture
    raise KdcError(f"no registered architecture owns a {type(model).__name__} (kdc.compress.architectures)")


def called(model: nn.Module) -> nn.Module:
    """The module a task calls for ``model``: its family's ``pipeline`` around it, else the model itself."""
    pipeline = architecture_of(model).pipeline
    return model if pipeline is None else pipeline(model)


def _dccnn_features(model: nn.Module, batch: Batch) -> OwnFeatures:
    image, hidden = model.forward_features(batch["kspace"], batch["mask"])
    layer = len(model.cascades[0].convs) // 2
    return image, [taps[layer] for taps in hidden], hidden


#: Cascades of a SENSE VarNet whose features are distilled: the last of as many equal runs of its cascades.
SENSE_TAPS = 3


def spaced_cascades(cascades: int, taps: int = SENSE_TAPS) -> list[int]:
    """The last cascade of each of ``taps`` equal runs (all of them when there are fewer): 6 -> [1, 3, 5]."""
    taps = min(taps, cascades)
    return [(i + 1) * cascades // taps - 1 for i in range(taps)]


def _sense_varnet_features(model: nn.Module, batch: Batch) -> OwnFeatures:
    image, hidden = model.forward_features(batch["kspace"], batch["mask"])
    paired = [hidden[i] for i in spaced_cascades(len(hidden))]
    return image.unsqueeze(1), paired, [[feature] for feature in paired]


def _sense_dccnn_features(model: nn.Module, batch: Batch) -> OwnFeatures:
    """The middle convolution of :data:`SENSE_TAPS` evenly spaced cascades, as many as a SENSE VarNet teacher's
    (5 cascades -> 1, 3, 5), so that either family teaches the other."""
    image, hidden = model.forward_features(batch["kspace"], batch["mask"])
    layer = len(model.cascades[0].convs) // 2
    return image.unsqueeze(1), [hidden[i][layer] for i in spaced_cascades(len(hidden))], hidden


def _vdsr_features(model: nn.Module, batch: Batch) -> OwnFeatures:
    image, hidden = model.forward_features(batch["image"])
    return image, [hidden[len(model.convs) // 2]], [hidden]


#: The U-Net of every VarNet cascade, after its first down-sampling block (the tap measured with kdc's AT loss).
VARNET_TAP = "model.unet.down_sample_layers.0"


def _varnet_taps(teacher: nn.Module, student: nn.Module) -> TapPairs:
    """Student cascade ``i`` <-> the teacher cascade that ends the ``i``-th of as many equal runs: 12 -> 4 cascades
    pairs teacher cascades 2, 5, 8, 11 with student cascades 0, 1, 2, 3."""
    taught = spaced_cascades(len(teacher.cascades), len(student.cascades))
    return [(f"cascades.{t}.{VARNET_TAP}", f"cascades.{i}.{VARNET_TAP}") for i, t in enumerate(taught)]


def _unet_taps(teacher: nn.Module, student: nn.Module) -> TapPairs:
    """fastMRI U-Nets: the output of every down-sampling block both have, at the same resolution (block ``i`` works
    at 1/2^i of the image), e.g. ``down_sample_layers.{0..3}`` for two 4-level U-Nets of any width."""
    depth = min(len(teacher.down_sample_layers), len(student.down_sample_layers))
    return [(f"down_sample_layers.{i}", f"down_sample_layers.{i}") for i in range(depth)]


register_architecture(Architecture("dccnn", instances_of("kdc.models.dccnn:DCCNN"), "recon", _dccnn_features))
register_architecture(Architecture("vdsr", instances_of("kdc.models.vdsr:VDSR"), "sr", _vdsr_features))
register_architecture(Architecture("sense_varnet", instances_of("kdc.models.sense_varnet:SenseVarNet"), "multicoil",
                                   _sense_varnet_features))
register_architecture(Architecture("sense_dccnn", instances_of("kdc.models.sense_dccnn:SenseDCCNN"), "multicoil",
                                   _sense_dccnn_features))
register_architecture(Architecture("fastmri_varnet", instances_of("fastmri.models.varnet:VarNet"), "multicoil",
                                   default_taps=_varnet_taps))
register_architecture(Architecture("fastmri_unet", instances_of("fastmri.models.unet:Unet"), "image",
                                   default_taps=_unet_taps, pipeline=NormalisedUnet))


class FeatureTaps:
    """Forward hooks on ``paths`` of ``model`` while the context is open; ``features`` are the clones of their
    outputs in the order of ``paths`` (cloned in the hook: an in-place op after the tapped module, e.g.
    ``LeakyReLU(inplace=True)``, would overwrite the tensor itself)."""

    def __init__(self, model: nn.Module, paths: Sequence[str]) -> None:
        self.modules = [submodule(model, path) for path in paths]
        self.paths = list(paths)
        self.captured: dict[str, list[torch.Tensor]] = {path: [] for path in paths}
        self._handles: list[Any] = []

    def __enter__(self) -> FeatureTaps:
        for path, module in zip(self.paths, self.modules):
            self._handles.append(module.register_forward_hook(self._keeper(path)))
        return self

    def __exit__(self, *exc: object) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles.clear()

    def _keeper(self, path: str) -> Callable[..., None]:
        def keep(module: nn.Module, inputs: object, output: object) -> None:
            if not isinstance(output, torch.Tensor):
                raise KdcError(f"tap {path!r}: its {type(module).__name__} returns {type(output).__name__}, not a "
                               "tensor; tap a module that returns one")
            self.captured[path].append(output.clone())

        return keep

    @property
    def features(self) -> list[torch.Tensor]:
        """One tensor per tap; a one-line error for a tap that did not run exactly once."""
        for path, outputs in self.captured.items():
            if len(outputs) != 1:
                raise KdcError(f"tap {path!r} ran {len(outputs)} times in one forward pass; tap a module that runs "
                               "once")
        return [self.captured[path][0] for path in self.paths]


def submodule(model: nn.Module, path: str) -> nn.Module:
    """``model``'s submodule at ``path`` (``cascades.0.model.unet``), or a one-line error naming some that exist."""
    try:
        return model.get_submodule(path)
    except AttributeError:
        names = [name for name, _ in model.named_modules() if name][:4]
        raise KdcError(f"tap {path!r}: a {type(model).__name__} has no such submodule (it has e.g. "
                       f"{', '.join(names)})") from None


def parse_taps(option: str) -> TapPairs:
    """``[(teacher path, student path), ...]`` from ``--taps T=S,T2=S2``."""
    pairs = []
    for item in option.split(","):
        teacher, sep, student = item.strip().partition("=")
        if not sep or not teacher or not student:
            raise KdcError(f"--taps {option!r}: expected TEACHER_PATH=STUDENT_PATH pairs separated by commas")
        pairs.append((teacher.strip(), student.strip()))
    return pairs


def tap_paths(teacher: nn.Module, student: nn.Module, option: str = "") -> tuple[list[str], list[str]]:
    """The teacher's and the student's tap paths, paired by position: ``--taps`` (hooks on both models, kdc's too),
    else the family's defaults; empty when both are kdc's models, which tap themselves."""
    families = architecture_of(teacher), architecture_of(student)
    if not option and all(family.features is not None for family in families):
        return [], []
    if not option:
        if families[0] is not families[1] or families[0].default_taps is None:
            raise KdcError(f"no default taps from a {type(teacher).__name__} to a {type(student).__name__}: name "
                           "the layers to distil with --taps TEACHER_PATH=STUDENT_PATH,...")
        pairs = families[0].default_taps(teacher, student)
    else:
        pairs = parse_taps(option)
    for path, model in ((p, m) for pair in pairs for p, m in zip(pair, (teacher, student))):
        submodule(model, path)
    return [t for t, _ in pairs], [s for _, s in pairs]
