"""DC-CNN (Schlemper et al. 2017) as used by KD-MRI: cascades of a residual CNN followed by data consistency."""

from __future__ import annotations

import torch
from torch import nn

from kdc.models.dc import DataConsistency


class Cascade(nn.Module):
    """``convs`` 3x3 convolutions (I -> C -> ... -> C -> I, I = ``image_channels``) with ``act`` (default LeakyReLU
    0.01) after every hidden one, added to the input (residual)."""

    def __init__(self, convs: int, channels: int, act: nn.Module | None = None, image_channels: int = 1) -> None:
        super().__init__()
        if convs < 2:
            raise ValueError(f"a cascade needs at least 2 convolutions, got {convs}")
        widths = [image_channels] + [channels] * (convs - 1) + [image_channels]
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
    ``image_channels=2`` makes the complex variant: the image is real and imaginary parts as two channels and data
    consistency is exact complex DC (teacher 144,650 parameters, student 52,170).
    """

    def __init__(self, cascades: int = 5, convs: int = 5, channels: int = 32, image_channels: int = 1) -> None:
        super().__init__()
        if image_channels not in (1, 2):
            raise ValueError(f"image_channels must be 1 (real) or 2 (complex), got {image_channels}")
        self.image_channels = image_channels
        self.cascades = nn.ModuleList(
            Cascade(convs, channels, image_channels=image_channels) for _ in range(cascades)
        )
        self.dc: nn.Module = DataConsistency(image_channels)

    @property
    def config(self) -> dict[str, int | str]:
        """The checkpoint config (``image_channels`` only when not 1, so that a real-image DC-CNN's reads as it did
        before complex models)."""
        first = self.cascades[0]
        config = {"arch": "dccnn", "cascades": len(self.cascades), "convs": len(first.convs),
                  "channels": first.convs[0].out_channels}
        return config if self.image_channels == 1 else {**config, "image_channels": self.image_channels}

    def forward_features(
        self, kspace: torch.Tensor, mask: torch.Tensor
    ) -> tuple[torch.Tensor, list[list[torch.Tensor]]]:
        """Reconstruct and return ``features[cascade][conv]`` (0-based, post-activation, hidden convs only)."""
        image = self.dc.zero_filled(kspace)
        consistent = self.dc.bind(kspace, mask)  # what DC needs of the k-space and mask, computed once
        features = []
        for cascade in self.cascades:
            image, taps = cascade.forward_features(image)
            image = consistent(image)
            features.append(taps)
        return image, features

    def forward(self, kspace: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        return self.forward_features(kspace, mask)[0]
