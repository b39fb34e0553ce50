"""VDSR (Kim et al. 2016) for MRI super-resolution: a plain 3x3 conv + ReLU stack with a global residual.

The input is the low-resolution image already on the high-resolution grid ``(B, 1, H, W)`` (k-space truncation,
then zero-filled inverse FFT); the network predicts the missing detail and adds it: ``output = input + net(input)``.
"""

from __future__ import annotations

import torch
from torch import nn


class VDSR(nn.Module):
    """``depth`` 3x3 convolutions (1 -> C -> ... -> C -> 1), ReLU after every hidden one, plus the input.

    KD-MRI's super-resolution teacher is ``VDSR(11, 64)`` (333,569 parameters), its student ``VDSR(7, 64)``
    (185,857).
    """

    def __init__(self, depth: int = 20, channels: int = 64) -> None:
        super().__init__()
        if depth < 2:
            raise ValueError(f"VDSR needs at least 2 convolutions, got depth {depth}")
        self.config = {"arch": "vdsr", "depth": depth, "channels": channels}
        widths = [1] + [channels] * (depth - 1) + [1]
        self.convs = nn.ModuleList(
            nn.Conv2d(c_in, c_out, kernel_size=3, padding=1) for c_in, c_out in zip(widths, widths[1:])
        )
        self.act = nn.ReLU()

    def forward_features(self, image: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """Return the output and the activations after each hidden convolution (conv 1 .. depth-1, 0-based list)."""
        features = []
        h = image
        for conv in self.convs[:-1]:
            h = self.act(conv(h))
            features.append(h)
        return image + self.convs[-1](h), features

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        return self.forward_features(image)[0]
