"""What fastMRI's pipeline runs around its models, shared by training (:mod:`kdc.compress.architectures`) and export
(:mod:`kdc.export.fastmri`), so a U-Net distilled by kdc is called exactly as its exported graph is.

fastMRI itself is not imported here: these modules wrap an instance of its class.
"""

from __future__ import annotations

import torch
from torch import nn

#: fastMRI's ``UnetDataTransform``: ``normalize_instance(image, eps=1e-11)`` then ``clamp(-6, 6)``.
UNET_EPS = 1e-11
UNET_CLAMP = 6.0


class NormalisedUnet(nn.Module):
    """fastMRI's U-Net pipeline in one module: the zero-filled magnitude ``(N, C, H, W)`` normalised per slice,
    ``(x - mean) / (std + 1e-11)`` clamped to [-6, 6] (``UnetDataTransform``), the U-Net, and ``* std + mean``
    (``UnetModule``'s validation and test step), so the output is at the input's scale."""

    def __init__(self, unet: nn.Module) -> None:
        super().__init__()
        self.unet = unet

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        flat = image.flatten(1)
        mean = flat.mean(dim=1).reshape(-1, 1, 1, 1)
        std = flat.std(dim=1).reshape(-1, 1, 1, 1)
        normalised = ((image - mean) / (std + UNET_EPS)).clamp(-UNET_CLAMP, UNET_CLAMP)
        return self.unet(normalised) * std + mean
