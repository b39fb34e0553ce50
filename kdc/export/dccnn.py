"""kdc's DC-CNN as a registered architecture of ``kdc export``: k-space (+ mask) in, its data consistency lowered.

The entry's hook picks the mask (``--mask``, the run's ``mask.npy``, or drawn as in training), swaps the model's DC
layer for the chosen lowering (``--dc``, :mod:`kdc.export.lowerings`), bakes the mask in on ``--bake-mask``, and hands
the shared gate the parity feeds and the contract. It is registered like any user's family
(:mod:`kdc.export.architectures`).
"""

from __future__ import annotations

import copy
import functools
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from kdc.errors import KdcError
from kdc.export.architectures import (
    Architecture, ExportRequest, Prepared, config_task, describe_model, parity_images, register,
)
from kdc.export.contract import build_contract
from kdc.export.lowerings import LOWERINGS, auto_lowering
from kdc.export.quantize import QUANTIZATION_SLICES, GateData, split_slices
from kdc.export.report import ExportError
from kdc.mri.fft import fft2
from kdc.mri.layout import to_channels
from kdc.mri.masks import cartesian_mask, line_mask_input, load_mask, sampled_lines, validate_mask
from kdc.tasks import RECON, TaskSpec


class BakedMask(nn.Module):
    """A reconstruction model with its mask as a constant: ``forward(kspace) -> image``."""

    def __init__(self, model: nn.Module, mask: torch.Tensor) -> None:
        super().__init__()
        self.model = model
        self.register_buffer("mask", mask)

    def forward(self, kspace: torch.Tensor) -> torch.Tensor:
        return self.model(kspace, self.mask)


def resolve_mask(
    mask: str | Path | np.ndarray | None, mask_dir: Path | None, meta: dict[str, Any], size: tuple[int, int]
) -> np.ndarray:
    """The ``(H, W)`` mask: given, else ``mask.npy`` beside the checkpoint (at the trained size), else drawn as in
    training at ``size`` (so ``--size`` exports a run at another size with its mask kind, acceleration and seed)."""
    try:
        if isinstance(mask, np.ndarray):
            return validate_mask(mask, size)
        if mask is not None:
            return load_mask(mask, size)
        run_mask = None if mask_dir is None else mask_dir / "mask.npy"
        if run_mask is not None and run_mask.is_file():
            trained = load_mask(run_mask)
            if trained.shape == size or "acceleration" not in meta:
                return validate_mask(trained, size, source=str(run_mask))
        if "acceleration" not in meta:
            raise ExportError("no mask: pass mask= (--mask FILE.npy) or a checkpoint whose meta has 'acceleration'")
        return cartesian_mask(meta.get("mask_kind", "random"), int(meta["acceleration"]), size,
                              seed=meta.get("mask_seed", 0), center_fraction=meta.get("center_fraction"))
    except ExportError:
        raise
    except KdcError as err:
        raise ExportError(str(err)) from None


def validation_kspace(
    images: np.ndarray | None, size: tuple[int, int], mask: np.ndarray, task: TaskSpec = RECON
) -> np.ndarray:
    """``(n, 2, H, W)`` undersampled k-space ``fft2(image) * mask`` of validation slices (see
    :func:`kdc.export.architectures.parity_images`)."""
    return to_channels(fft2(parity_images(images, size, task)) * mask)


def pick_lowering(dc: str, mask: np.ndarray, fmt: str) -> str:
    name = auto_lowering(mask, fmt) if dc == "auto" else dc
    if name not in LOWERINGS:
        raise ExportError(f"unknown DC lowering {dc!r}: expected auto or one of {sorted(LOWERINGS)}")
    if LOWERINGS[name].cartesian_only and sampled_lines(mask) is None:
        raise ExportError(f"--dc {name} needs a 1-D Cartesian mask (whole columns or rows sampled); use matmul or dft")
    return name


def prepare(model: nn.Module, request: ExportRequest) -> Prepared:
    """DC-CNN: k-space (+ mask) in, the DC layer swapped for the chosen lowering, the mask baked in if asked."""
    task, meta, size, images, bake_mask = config_task(model), request.meta, request.size, request.images, \
        request.bake_mask
    mask_array = resolve_mask(request.mask, request.mask_dir, meta, size)
    lowering = pick_lowering(request.dc, mask_array, request.fmt)
    lines = sampled_lines(mask_array)
    axis = -1 if lines is None else lines[0]
    mask_tensor = torch.from_numpy(mask_array[None, None] if lines is None else line_mask_input(mask_array, size, axis))

    graph = copy.deepcopy(model)
    graph.dc = LOWERINGS[lowering](size, mask_array if bake_mask else None, task.image_channels, axis)
    kspace = validation_kspace(images, size, mask_array, task)
    feeds = {"kspace": kspace} if bake_mask else {"kspace": kspace, "mask": mask_tensor.numpy()}
    with torch.no_grad():
        expected = model(torch.from_numpy(kspace), mask_tensor).numpy()
    if bake_mask:
        graph = BakedMask(graph, mask_tensor)
    contract = functools.partial(
        build_contract, task=task, image_size=size, mask=mask_array,
        mask_input_shape=None if bake_mask else list(mask_tensor.shape), lines=lines, lowering=lowering,
        model=describe_model(model, meta), meta=meta,
    )
    gate_data = functools.partial(quantization_data, model, images, size, mask_array, feeds, mask_tensor)
    return graph, feeds, expected, contract, gate_data


def quantization_data(
    model: nn.Module, images: np.ndarray | None, size: tuple[int, int], mask: np.ndarray,
    feeds: dict[str, np.ndarray], mask_tensor: torch.Tensor,
) -> GateData:
    """Calibration and gate slices (``images``, default kdc's validation slices) with PyTorch's output on them."""
    if images is None:
        from kdc.data.demo import validation_images

        images = validation_images(size, QUANTIZATION_SLICES)
    kspace = validation_kspace(images, size, mask)
    with torch.no_grad():
        reference = model(torch.from_numpy(kspace), mask_tensor).numpy()
    return split_slices({**feeds, "kspace": kspace}, np.asarray(images, dtype=np.float32), reference)


DCCNN = register(Architecture("dccnn", ("kdc.models.dccnn:DCCNN",), prepare, config_task,
                              quantizable_tasks=(RECON.name,), options=("mask", "dc", "bake_mask")))
