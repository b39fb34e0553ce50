"""kdc's multi-coil SENSE models (:mod:`kdc.models.sense_varnet`, :mod:`kdc.models.sense_dccnn`) as registered
architectures of ``kdc export``.

They take what fastMRI's VarNet takes (every coil's centred k-space ``(N, C, H, W, 2)`` and the centred column mask
``(1, 1, 1, W, 1)``), so they reuse its declared inputs, parity feeds and contract (:mod:`kdc.export.fastmri`):
the coil count is dynamic unless ``--coils`` fixes it, the FFTs become DFT matrix products
(:mod:`kdc.export.complex_lowering`), the calibration lines are found from the mask inside the graph, and the gate is
the relative L2 error against PyTorch. No adapter is needed: the models are written for export.
"""

from __future__ import annotations

import functools
from typing import Any

from torch import nn

from kdc.export.architectures import Architecture, DeclaredArchitecture, ExportRequest, Prepared, register
from kdc.export.fastmri import coils_last_contract, dynamic_coils, varnet_feeds
from kdc.models.checkpoint import model_config
from kdc.tasks import MULTICOIL_RECON


def sense_contract(request: ExportRequest) -> dict[str, Any]:
    return coils_last_contract(
        request, "none: the model normalises inside (scale-equivariant); feed k-space at the file's scale",
        request.meta.get("acceleration"),
        "none (SENSE data consistency in the graph, FFTs as DFT matrix products; sensitivities learned from the "
        "mask's centre lines)")


def sense_declaration(name: str, cls: str) -> DeclaredArchitecture:
    return DeclaredArchitecture(
        name=name, classes=(cls,), task=MULTICOIL_RECON, graph=lambda model: model, feeds=varnet_feeds,
        contract=sense_contract, dynamic=dynamic_coils, options=("coils",),
    )


def prepare_sense(declaration: DeclaredArchitecture, model: nn.Module, request: ExportRequest) -> Prepared:
    """The declared preparation, with the contract describing kdc's model by its checkpoint config."""
    graph, feeds, expected, contract, gate_data = declaration.prepare(model, request)
    described = {"role": request.meta.get("role", "unknown"), "config": model_config(model),
                 "parameters": sum(p.numel() for p in model.parameters())}
    return graph, feeds, expected, functools.partial(contract, model=described), gate_data


def register_sense(name: str, cls: str) -> Architecture:
    declaration = sense_declaration(name, cls)
    return register(Architecture(name, declaration.classes, functools.partial(prepare_sense, declaration),
                                 lambda model: MULTICOIL_RECON, gate="relative_l2", options=declaration.options))


SENSE_VARNET = register_sense("sense_varnet", "kdc.models.sense_varnet:SenseVarNet")
SENSE_DCCNN = register_sense("sense_dccnn", "kdc.models.sense_dccnn:SenseDCCNN")
