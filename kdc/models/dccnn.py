"""DC-CNN (Schlemper et al. 2017) as used by KD-MRI: cascades of a residual CNN followed by data consistency."""

from __future__ import annotations

import torch
from torch import nn

from kdc.models.dc import DataConsistency


class Cascade(nn.Module):
    """``convs`` 3x3 convolutions (1 -> C -> ... -> C -> 1) with ``act`` (default LeakyReLU 0.01) after every hidden
    one, added to the input (residual)."""

    def __init__(self, convs: int, channels: int, act: nn.Module | None = None) -> None:
        super().__init__()
        if convs < 2:
            raise ValueError(f"a cascade needs at least 2 convolutions, got {convs}")
        widths = [1] + [channels] * (convs - 1) + [1]
        self.convs = nn.ModuleList(
            nn.Conv2d(c_in, c_out, kernel_size=3, padding=1) for c_in, c_out in zip(widths, widths[1:])
        )
        self.act = nn.LeakyReLU(0.01) if act is None else act

    def forward_features(self, x: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """Return the cascade output and the activations after each hidden convolution (conv 1 .. convs-1)."""
        features = []
        h = x
        for conv in self.convs[:-1]:
            h = self.act(conv(h))
            features.append(h)
        return x + self.convs[-1](h), features


class DCCNN(nn.Module):
    """Deep cascade of CNNs with hard data consistency; input is undersampled k-space and the mask.

    KD-MRI's teacher is ``DCCNN(5, 5, 32)`` (141,765 parameters), its student ``DCCNN(5, 3, 32)`` (49,285).
    """

    def __init__(self, cascades: int = 5, convs: int = 5, channels: int = 32) -> None:
        super().__init__()
        self.cascades = nn.ModuleList(Cascade(convs, channels) for _ in range(cascades))
        self.dc: nn.Module = DataConsistency()

    def forward_features(
        self, kspace: torch.Tensor, mask: torch.Tensor
    ) -> tuple[torch.Tensor, list[list[torch.Tensor]]]:
        """Reconstruct and return ``features[cascade][conv]`` (0-based, post-activation, hidden convs only)."""
        image = self.dc.zero_filled(kspace)
        features = []
        for cascade in self.cascades:
            image, taps = cascade.forward_features(image)
            image = self.dc(image, kspace, mask)
            features.append(taps)
        return image, features

    def forward(self, kspace: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        return self.forward_features(kspace, mask)[0]
