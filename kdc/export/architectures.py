"""Registered architectures: what ``kdc export`` needs to know about a model, declared once per family.

Registering a family (one entry per family, in a module of its own listed in :data:`ENTRY_MODULES`, or in the module
that defines a user's class)::

    register(Architecture(name, ("package.module:Class",), prepare, task_of, options=("coils",)))   # a hook
    DeclaredArchitecture(name, ("package.module:Class",), task, graph, feeds, contract).register()  # declared

An :class:`Architecture` names the classes it exports (``module:Class``, subclasses included), the task of its
models (:mod:`kdc.tasks`: graph inputs, output, contract ``task``), the family options of ``kdc export`` it takes
(:data:`FAMILY_OPTIONS`; any other one given is refused in one line before anything is built), its parity gate, and
its ``prepare`` hook: the graph, the parity feeds, PyTorch's output on them and the contract builder (a
:data:`Prepared`). kdc's DC-CNN (:mod:`kdc.export.dccnn`: mask, DC lowering) and VDSR (:mod:`kdc.export.vdsr`) are
hooks; a user's model family declares a :class:`DeclaredArchitecture` (:mod:`kdc.export.fastmri` holds fastMRI's
``Unet`` and ``VarNet``):

- ``graph(model)``: the module that is exported, float32 inputs to float32 output, with the pre- and
  post-processing the family's own pipeline runs outside the model (so the runtime gives the same image);
- ``feeds(request)``: real-looking inputs for the parity gate, batched input first;
- ``dynamic``: the dynamic dimensions of each input beyond the batch (``{"kspace": {1: "C"}}``);
- ``adapters``: value-identical rewrites of known export traps (:class:`Adapter`), each checked in PyTorch;
- ``contract``: what the contract says of the inputs, their layout and normalisation.

Every declared graph is exported inside :class:`kdc.export.complex_lowering.RealComplexMode`, so ``torch.fft`` and
complex tensors become real matrix products whatever module calls them, and it is gated on the relative L2 error
against PyTorch (:data:`RELATIVE_TOLERANCE` unless ``--tolerance`` says otherwise).
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import importlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from kdc.errors import KdcError
from kdc.export.complex_lowering import RealComplexMode, UnsupportedOperation
from kdc.export.contract import build_declared_contract
from kdc.runtime.contract import Contract
from kdc.export.report import ExportError
from kdc.models.checkpoint import model_config
from kdc.models.user import class_names
from kdc.mri.simulate import with_smooth_phase
from kdc.tasks import RECON, TaskSpec, task_of_config

#: What an architecture hands the shared gate: ``(graph, feeds (batched input first), PyTorch's output on them,
#: contract builder, quantization data or None)``.
Prepared = tuple[nn.Module, dict[str, np.ndarray], np.ndarray, Callable[..., Contract], Callable[[], Any] | None]
#: Default parity gate of a declared architecture: relative L2 error ``||out - ref|| / ||ref||`` against PyTorch.
RELATIVE_TOLERANCE = 1e-3
#: A lowering or adapter may change values by float32 rounding only (relative L2, checked in PyTorch): matrix DFTs
#: differ from torch.fft by about 1e-6 per transform, which deep models (12 VarNet cascades) accumulate; a wrong
#: rewrite is off by order 1.
LOWERING_TOLERANCE = 1e-4
#: Modules holding registered architectures, imported when a model is looked up.
ENTRY_MODULES = ("kdc.export.dccnn", "kdc.export.vdsr", "kdc.export.fastmri", "kdc.export.sense")
#: Options of ``kdc export`` that only some families take (:attr:`Architecture.options`): request field -> flag.
FAMILY_OPTIONS = {"mask": "--mask", "dc": "--dc", "bake_mask": "--bake-mask", "coils": "--coils"}
#: Slices of kdc's validation set that feed a parity gate when the user gives none.
PARITY_SLICES = 4


@dataclass(frozen=True)
class ExportRequest:
    """What the user asked of an export, handed to every :attr:`Architecture.prepare`."""

    size: tuple[int, int]
    fmt: str
    meta: dict[str, Any] = field(default_factory=dict)
    images: np.ndarray | None = None
    #: Coils of a multi-coil model's input; None when the coil dimension is dynamic.
    coils: int | None = None
    #: DC-CNN options (``--mask``, the run's directory holding ``mask.npy``, ``--dc``, ``--bake-mask``).
    mask: str | Path | np.ndarray | None = None
    mask_dir: Path | None = None
    dc: str = "auto"
    bake_mask: bool = False


@dataclass(frozen=True)
class Architecture:
    """A family of models ``kdc export`` can write: the classes it covers and how to prepare them."""

    name: str
    #: ``module:Class`` of the classes it exports (their subclasses too).
    classes: tuple[str, ...]
    prepare: Callable[[nn.Module, ExportRequest], Prepared]
    #: The task (:mod:`kdc.tasks`) of one of its models: what its graph takes and its contract says.
    task_of: Callable[[nn.Module], TaskSpec]
    #: Tasks of its models that ``--quantize`` applies to (its gate scores real images against magnitude targets).
    quantizable_tasks: tuple[str, ...] = ()
    #: ``"max_abs"`` (kdc's own models, on [0, 1] images) or ``"relative_l2"``.
    gate: str = "max_abs"
    #: The :data:`FAMILY_OPTIONS` its models take (``("mask", "dc", "bake_mask")`` for a DC-CNN).
    options: tuple[str, ...] = ()


@dataclass(frozen=True)
class Adapter:
    """A value-identical rewrite of an export trap, active only inside ``patch()`` (a context manager)."""

    name: str
    #: The trap it removes, for the contract and the docs.
    reason: str
    patch: Callable[[], contextlib.AbstractContextManager[None]]


ARCHITECTURES: dict[str, Architecture] = {}


def register(architecture: Architecture) -> Architecture:
    ARCHITECTURES[architecture.name] = architecture
    return architecture


def registered() -> dict[str, Architecture]:
    """Every registered architecture, kdc's built-in entry modules imported first."""
    for module in ENTRY_MODULES:
        importlib.import_module(module)
    return ARCHITECTURES


def architecture_of(model: nn.Module) -> Architecture:
    """The registered architecture of ``model`` (its class or nearest base), else a one-line :class:`ExportError`."""
    for name in class_names(model):
        for architecture in registered().values():
            if name in architecture.classes:
                return architecture
    known = sorted(cls for architecture in ARCHITECTURES.values() for cls in architecture.classes)
    raise ExportError(f"no registered architecture exports a {class_names(model)[0]}: kdc exports {known}; declare "
                      "yours with kdc.export.architectures.DeclaredArchitecture(...).register() (docs/your-model.md)")


def check_options(architecture: Architecture, task: TaskSpec, request: ExportRequest) -> None:
    """Refuse, in one line, a family option (:data:`FAMILY_OPTIONS`) given for a model whose family does not take
    it."""
    defaults = {field.name: field.default for field in dataclasses.fields(ExportRequest)}
    given = [flag for option, flag in FAMILY_OPTIONS.items() if option not in architecture.options
             and not is_default(getattr(request, option), defaults[option])]
    if given:
        own = ", ".join(FAMILY_OPTIONS[option] for option in architecture.options)
        raise ExportError(f"{', '.join(given)}: a {architecture.name} model takes {', '.join(task.inputs)}"
                          f"{f' and the options {own}' if own else ''}; drop {'it' if len(given) == 1 else 'them'}")


def is_default(value: Any, default: Any) -> bool:
    """True when an option still holds its default (an array given as ``mask`` never does)."""
    return value is default or (isinstance(value, str) and value == default)


def config_task(model: nn.Module) -> TaskSpec:
    """The task (:mod:`kdc.tasks`) of one of kdc's models, from its architecture config."""
    try:
        return task_of_config(model_config(model))
    except KdcError as err:
        raise ExportError(f"cannot export a {type(model).__name__}: {err}") from None


def parity_images(images: np.ndarray | None, size: tuple[int, int], task: TaskSpec = RECON) -> np.ndarray:
    """``(n, H, W)`` slices for the parity gate: given, else kdc's real validation slices in [0, 1]. A complex task
    takes complex slices, or gives real ones a smooth phase (:func:`kdc.mri.simulate.with_smooth_phase`); a real task
    refuses complex slices."""
    if images is None:
        from kdc.data.demo import validation_images

        images = validation_images(size, PARITY_SLICES)
    images = np.asarray(images)
    if np.iscomplexobj(images) and not task.is_complex:
        raise ExportError(f"images are complex but the {task.name!r} model reconstructs real images: pass "
                          "magnitude slices, or export a model trained with --image complex")
    if images.ndim != 3 or images.shape[1:] != size or len(images) == 0:
        raise ExportError(f"parity images must be (count, {size[0]}, {size[1]}), got {images.shape}")
    if task.is_complex:
        return images.astype(np.complex64) if np.iscomplexobj(images) else with_smooth_phase(images)
    return images.astype(np.float32)


def describe_model(model: nn.Module, meta: dict[str, Any]) -> dict[str, Any]:
    """Role, architecture config and parameter count of one of kdc's exported models."""
    try:
        config = model_config(model)
    except KdcError:
        config = {"arch": type(model).__name__}
    return {"role": meta.get("role", "unknown"), "config": config,
            "parameters": sum(p.numel() for p in model.parameters())}


def relative_error(output: np.ndarray, reference: np.ndarray) -> float:
    """``||output - reference|| / ||reference||`` in float64 (not finite for a non-finite output)."""
    diff = np.linalg.norm((np.asarray(output, np.float64) - reference).ravel())
    return float(diff / max(float(np.linalg.norm(np.asarray(reference, np.float64).ravel())), 1e-30))


class LoweredGraph(nn.Module):
    """``graph`` run inside its adapters and :class:`RealComplexMode`: what is traced and exported."""

    def __init__(self, graph: nn.Module, adapters: tuple[Adapter, ...], dynamic_dims: dict[int, dict[int, str]]):
        super().__init__()
        self.inner = graph  # not ``graph``: an exported GraphModule has its own ``graph`` attribute
        self.adapters = adapters
        #: Dynamic dimensions by input position beyond the batch (read by :mod:`kdc.export.formats`).
        self.dynamic_dims = dynamic_dims

    def forward(self, primary: torch.Tensor, secondary: torch.Tensor | None = None) -> torch.Tensor:
        """The graph's one or two inputs (batched input first; a fixed signature, as ``torch.export`` wants)."""
        with adapted(self.adapters), RealComplexMode():
            return self.inner(primary) if secondary is None else self.inner(primary, secondary)


@contextlib.contextmanager
def adapted(adapters: tuple[Adapter, ...]) -> Iterator[None]:
    with contextlib.ExitStack() as stack:
        for adapter in adapters:
            stack.enter_context(adapter.patch())
        yield


def run_torch(graph: nn.Module, feeds: dict[str, np.ndarray]) -> np.ndarray:
    with torch.no_grad():
        return graph(*(torch.from_numpy(value) for value in feeds.values())).numpy()


@dataclass(frozen=True)
class DeclaredArchitecture:
    """A user's model family, declared (see the module docstring); :meth:`register` makes it an Architecture."""

    name: str
    classes: tuple[str, ...]
    task: TaskSpec
    graph: Callable[[nn.Module], nn.Module]
    feeds: Callable[[ExportRequest], dict[str, np.ndarray]]
    contract: Callable[[ExportRequest], dict[str, Any]]
    adapters: tuple[Adapter, ...] = ()
    #: Dynamic dimensions of each input beyond the batch, for this request (``{"kspace": {1: "C"}}``).
    dynamic: Callable[[ExportRequest], dict[str, dict[int, str]]] = lambda request: {}
    #: The :data:`FAMILY_OPTIONS` its models take (``("coils",)`` for a multi-coil input).
    options: tuple[str, ...] = ()

    def as_architecture(self) -> Architecture:
        return Architecture(self.name, self.classes, self.prepare, lambda model: self.task, gate="relative_l2",
                            options=self.options)

    def register(self) -> Architecture:
        return register(self.as_architecture())

    def prepare(self, model: nn.Module, request: ExportRequest) -> Prepared:
        """Graph, feeds, PyTorch's output and contract, after checking every adapter and the complex lowering
        against the untouched model in PyTorch."""
        graph = self.graph(model).eval()
        feeds = self.feeds(request)
        expected = run_torch(graph, feeds)
        checks: dict[str, float] = {}
        for adapter in self.adapters:
            with adapter.patch():
                checks[adapter.name] = relative_error(run_torch(graph, feeds), expected)
        with adapted(self.adapters):
            try:
                with RealComplexMode():
                    checks["complex_lowering"] = relative_error(run_torch(graph, feeds), expected)
            except UnsupportedOperation as err:
                raise ExportError(str(err)) from None
        for name, error in checks.items():
            if not error <= LOWERING_TOLERANCE:
                raise ExportError(f"{name} changes {type(model).__name__}'s output in PyTorch (relative L2 error "
                                  f"{error:.3g} > {LOWERING_TOLERANCE:g}); nothing written")
        dynamic = self.dynamic(request)
        positions = {name: index for index, name in enumerate(feeds)}
        lowered = LoweredGraph(graph, self.adapters, {positions[name]: dims for name, dims in dynamic.items()})
        fields = {**self.contract(request),
                  "lowering": {"complex": "real (..., 2) pairs, torch.fft as DFT matrix products",
                               "adapters": {adapter.name: adapter.reason for adapter in self.adapters},
                               "pytorch_checks_relative_l2": checks}}
        contract = functools.partial(
            build_declared_contract, task=self.task, image_size=request.size, input_shapes=input_shapes(feeds, dynamic),
            fields=fields, model=describe_user_model(self, model, request), meta=request.meta)
        return lowered, feeds, expected, contract, None


def input_shapes(feeds: dict[str, np.ndarray], dynamic: dict[str, dict[int, str]]) -> dict[str, list[int | str]]:
    """Contract shapes: ``N`` for the batch (a ``mask`` has none) and the declared dynamic dimensions."""
    shapes: dict[str, list[int | str]] = {
        name: list(value.shape) if name == "mask" else ["N", *value.shape[1:]] for name, value in feeds.items()}
    for name, dims in dynamic.items():
        for axis, dim_name in dims.items():
            shapes[name][axis] = dim_name
    return shapes


def describe_user_model(architecture: DeclaredArchitecture, model: nn.Module, request: ExportRequest
                        ) -> dict[str, Any]:
    """Role, class, constructor arguments and parameter count of a user's model."""
    return {"role": request.meta.get("role", "user"), "source": request.meta.get("source"),
            "class": class_names(model)[0],
            "config": {"arch": architecture.name, **request.meta.get("init", {})},
            "parameters": sum(p.numel() for p in model.parameters())}
