"""fastMRI's ``Unet`` and ``VarNet`` (pip ``fastmri`` 0.3.0) as registered architectures of ``kdc export``.

Each entry declares its graph inputs, the pre- and post-processing fastMRI's own pipeline runs around the model,
its parity feeds, its contract and its adapters: value-identical rewrites of fastMRI code that no exporter takes
(checked against the untouched model in PyTorch before every export, :mod:`kdc.export.architectures`):

- ``unet_padding_test``: ``Unet.forward`` tests ``torch.sum(torch.tensor(padding)) != 0`` (unet.py:99), a tensor
  built from Python ints that the dynamo exporter cannot branch on (``GuardOnDataDependentSymNode``); the same test
  on the Python ints;
- ``varnet_mask_center``: ``batched_mask_center`` calls ``int(mask_from)`` (transforms.py:130), which fixes the
  centre of the mask at export time; written with tensor comparisons, the mask stays an input.

The complex FFTs (``fastmri.fft2c``/``ifft2c``) need no adapter: :mod:`kdc.export.complex_lowering` lowers them.
NormUnet's ``((w - 1) | 15) + 1`` padding needs none either: H and W are fixed at export (``--size``).
fastMRI is imported only when one of its models is exported.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from kdc.export.architectures import Adapter, DeclaredArchitecture, ExportRequest, parity_images
from kdc.models.fastmri import UNET_CLAMP, UNET_EPS, NormalisedUnet
from kdc.mri.fft import fft2, fft2c, ifft2
from kdc.mri.masks import cartesian_mask
from kdc.mri.simulate import complex_coil_images
from kdc.tasks import IMAGE_RECON, MULTICOIL_RECON, ZERO_FILLED_INPUT

#: Acceleration and coils of the parity feeds (coils when ``--coils dynamic``).
PARITY_ACCELERATION = 4
PARITY_COILS = 4


@contextlib.contextmanager
def patched(owner: Any, name: str, replacement: Any) -> Iterator[None]:
    """``owner.name`` replaced by ``replacement`` inside the block."""
    original = getattr(owner, name)
    setattr(owner, name, replacement)
    try:
        yield
    finally:
        setattr(owner, name, original)


def unet_forward(self: nn.Module, image: torch.Tensor) -> torch.Tensor:
    """``fastmri.models.Unet.forward`` with its padding test on Python ints (unet.py:99)."""
    stack = []
    output = image
    for layer in self.down_sample_layers:
        output = layer(output)
        stack.append(output)
        output = F.avg_pool2d(output, kernel_size=2, stride=2, padding=0)
    output = self.conv(output)
    for transpose_conv, conv in zip(self.up_transpose_conv, self.up_conv):
        downsample_layer = stack.pop()
        output = transpose_conv(output)
        padding = [0, int(output.shape[-1] != downsample_layer.shape[-1]),
                   0, int(output.shape[-2] != downsample_layer.shape[-2])]
        if any(padding):
            output = F.pad(output, padding, "reflect")
        output = conv(torch.cat([output, downsample_layer], dim=1))
    return output


def batched_mask_center(x: torch.Tensor, mask_from: torch.Tensor, mask_to: torch.Tensor) -> torch.Tensor:
    """``fastmri.data.transforms.batched_mask_center`` from tensor comparisons: ``x`` ``(B, C, H, W, 2)`` kept on
    columns ``mask_from <= w < mask_to`` (per batch element, or one range for all), zero elsewhere."""
    columns = torch.arange(x.shape[-2], device=x.device)
    keep = (columns >= mask_from.reshape(-1, 1)) & (columns < mask_to.reshape(-1, 1))
    return x * keep.reshape(-1, 1, 1, x.shape[-2], 1).to(x.dtype)


def unet_patch() -> contextlib.AbstractContextManager[None]:
    from fastmri.models import unet

    return patched(unet.Unet, "forward", unet_forward)


def mask_center_patch() -> contextlib.AbstractContextManager[None]:
    from fastmri.data import transforms

    return patched(transforms, "batched_mask_center", batched_mask_center)


UNET_PADDING = Adapter("unet_padding_test", "Unet.forward: torch.sum(torch.tensor(padding)) != 0 tested on the ints "
                       "(unet.py:99, dynamo GuardOnDataDependentSymNode)", unet_patch)
MASK_CENTER = Adapter("varnet_mask_center", "batched_mask_center: int(mask_from) (transforms.py:130) replaced by "
                      "tensor comparisons, so the mask stays an input", mask_center_patch)


class MaskedVarNet(nn.Module):
    """fastMRI's VarNet with a float32 0/1 mask input (``VarNet`` takes a bool mask)."""

    def __init__(self, varnet: nn.Module) -> None:
        super().__init__()
        self.varnet = varnet

    def forward(self, kspace: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        return self.varnet(kspace, mask > 0.5)


def centred_column_mask(size: tuple[int, int]) -> np.ndarray:
    """A fastMRI-style centred ``(W,)`` column mask: random lines at 4x with a fully sampled centre."""
    return np.fft.fftshift(cartesian_mask("random", PARITY_ACCELERATION, size)[0]).astype(np.float32)


def unet_feeds(request: ExportRequest) -> dict[str, np.ndarray]:
    """Zero-filled magnitudes of 4x-undersampled validation slices, ``(n, 1, H, W)``."""
    images = parity_images(request.images, request.size, IMAGE_RECON)
    mask = cartesian_mask("random", PARITY_ACCELERATION, request.size)
    return {ZERO_FILLED_INPUT: np.abs(ifft2(fft2(images) * mask)).astype(np.float32)[:, None]}


def varnet_feeds(request: ExportRequest) -> dict[str, np.ndarray]:
    """Centred multi-coil k-space ``(n, C, H, W, 2)`` of validation slices (birdcage coils, smooth phase), zero
    outside a centred 4x column mask ``(1, 1, 1, W, 1)``."""
    mask = centred_column_mask(request.size)
    coils = complex_coil_images(parity_images(request.images, request.size, MULTICOIL_RECON), request.coils or PARITY_COILS)
    kspace = fft2c(coils) * mask
    return {"kspace": np.stack([kspace.real, kspace.imag], axis=-1).astype(np.float32),
            "mask": mask.reshape(1, 1, 1, -1, 1)}


UNET_INPUT = ("(N, C, H, W) float32 zero-filled magnitude image (fastMRI: complex_abs(ifft2c(masked k-space)), "
              "centre-cropped, RSS over coils for multi-coil data), at any scale")
VARNET_KSPACE = ("(N, C, H, W, 2) float32 multi-coil k-space, real and imaginary parts last, centred (fastMRI: "
                 "DC term at (H/2, W/2)), orthonormal, zero outside the mask, at the file's scale (no normalisation)")
VARNET_MASK = "(1, 1, 1, W, 1) float32 0/1 column mask, centred like the k-space (fastMRI's mask)"


def unet_contract(request: ExportRequest) -> dict[str, Any]:
    return {
        "input_descriptions": {ZERO_FILLED_INPUT: UNET_INPUT},
        "normalisation": "in the graph: per slice (x - mean) / (std + 1e-11), clamp to [-6, 6], U-Net, * std + mean "
                         "(fastMRI UnetDataTransform and UnetModule); feed the zero-filled magnitude as it is",
        "preprocessing": {"normalize_instance_eps": UNET_EPS, "clamp": [-UNET_CLAMP, UNET_CLAMP],
                          "unnormalise_output": True},
        "dc_lowering": "none",
    }


def coils_last_contract(request: ExportRequest, normalisation: str, acceleration: float | None,
                        dc_lowering: str) -> dict[str, Any]:
    """The contract of a model on every coil's centred k-space ``(N, C, H, W, 2)`` and the column mask."""
    return {
        "input_descriptions": {"kspace": VARNET_KSPACE, "mask": VARNET_MASK},
        "kspace_layout": VARNET_KSPACE,
        "kspace_centred": True,
        "fft_norm": "ortho",
        "normalisation": normalisation,
        "coils": request.coils if request.coils is not None else "dynamic",
        "acceleration": acceleration,
        "mask_baked": False,
        "dc_lowering": dc_lowering,
    }


def dynamic_coils(request: ExportRequest) -> dict[str, dict[int, str]]:
    """The coil axis of ``kspace`` is dynamic unless ``--coils N`` fixes it."""
    return {} if request.coils else {"kspace": {1: "C"}}


def varnet_contract(request: ExportRequest) -> dict[str, Any]:
    return coils_last_contract(request, "none: VarNet normalises inside its U-Nets; feed k-space at the file's scale",
                               PARITY_ACCELERATION, "none (VarNet's soft DC, FFTs as DFT matrix products)")


UNET = DeclaredArchitecture(
    name="fastmri_unet", classes=("fastmri.models.unet:Unet",), task=IMAGE_RECON, graph=NormalisedUnet,
    feeds=unet_feeds, contract=unet_contract, adapters=(UNET_PADDING,),
).register()
VARNET = DeclaredArchitecture(
    name="fastmri_varnet", classes=("fastmri.models.varnet:VarNet",), task=MULTICOIL_RECON, graph=MaskedVarNet,
    feeds=varnet_feeds, contract=varnet_contract, adapters=(UNET_PADDING, MASK_CENTER),
    dynamic=dynamic_coils, options=("coils",),
).register()
