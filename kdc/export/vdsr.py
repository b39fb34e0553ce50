"""kdc's VDSR as a registered architecture of ``kdc export``: the low-resolution image in, no data consistency.

The parity feeds are k-space truncations of the parity slices at the model's trained scale (its checkpoint meta's
``scale``, else :data:`DEFAULT_SCALE`). Registered like any user's family (:mod:`kdc.export.architectures`).
"""

from __future__ import annotations

import copy
import functools

import torch
from torch import nn

from kdc.data.lowres import low_resolution
from kdc.export.architectures import (
    Architecture, ExportRequest, Prepared, config_task, describe_model, parity_images, register,
)
from kdc.export.contract import build_sr_contract
from kdc.tasks import LOWRES_INPUT

#: Scale of the parity inputs of a super-resolution model whose meta has none.
DEFAULT_SCALE = 2


def prepare(model: nn.Module, request: ExportRequest) -> Prepared:
    """VDSR: the low-resolution image in (k-space truncation of the parity slices at the trained scale)."""
    task, meta, size = config_task(model), request.meta, request.size
    scale = meta.get("scale")
    lowres = low_resolution(parity_images(request.images, size, task), int(scale or DEFAULT_SCALE))[:, None]
    with torch.no_grad():
        expected = model(torch.from_numpy(lowres)).numpy()
    contract = functools.partial(build_sr_contract, task=task, image_size=size, scale=scale,
                                 model=describe_model(model, meta), meta=meta)
    return copy.deepcopy(model), {LOWRES_INPUT: lowres}, expected, contract, None


VDSR = register(Architecture("vdsr", ("kdc.models.vdsr:VDSR",), prepare, config_task))
