"""VDSR (Kim et al. 2016) for MRI super-resolution: a plain 3x3 conv + ReLU stack with a global residual.

The input is the low-resolution image already on the high-resolution grid ``(B, 1, H, W)`` (k-space truncation,
then zero-filled inverse FFT); the network predicts the missing detail and adds it: ``output = input + net(input)``.
"""

from __future__ import annotations

import torch
from torch import nn

from kdc.models.dccnn import Cascade


class VDSR(Cascade):
    """``depth`` 3x3 convolutions (1 -> C -> ... -> C -> 1), ReLU after every hidden one, plus the input: one
    DC-CNN cascade with ReLU, without data consistency.

    KD-MRI's super-resolution teacher is ``VDSR(11, 64)`` (333,569 parameters), its student ``VDSR(7, 64)``
    (185,857). ``forward_features`` returns the output and the activations after each hidden convolution.
    """

    def __init__(self, depth: int = 20, channels: int = 64) -> None:
        if depth < 2:
            raise ValueError(f"VDSR needs at least 2 convolutions, got depth {depth}")
        super().__init__(depth, channels, nn.ReLU())
        self.config = {"arch": "vdsr", "depth": depth, "channels": channels}

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        return self.forward_features(image)[0]
