"""A compact U-Net: the regulariser of kdc's multi-coil models (:mod:`kdc.models.sense`).

``pools`` 2x2 average poolings, each level two 3x3 convolutions with LeakyReLU(0.2), the channels doubling per level;
transposed 2x2 convolutions up, skip connections by concatenation, a 1x1 convolution out. No normalisation layers
(ONNX Runtime and OpenVINO drift from PyTorch in InstanceNorm; :class:`kdc.models.sense.NormalisedRegulariser`
normalises the input instead). Images whose sides are not multiples of ``2 ** pools`` are zero-padded and cropped.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def conv_block(c_in: int, c_out: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(c_in, c_out, 3, padding=1), nn.LeakyReLU(0.2),
                         nn.Conv2d(c_out, c_out, 3, padding=1), nn.LeakyReLU(0.2))


class UNet(nn.Module):
    """``(B, in_channels, H, W)`` -> ``(B, out_channels, H, W)``; see the module docstring."""

    def __init__(self, in_channels: int, out_channels: int, channels: int, pools: int) -> None:
        super().__init__()
        widths = [channels * 2 ** level for level in range(pools + 1)]
        self.down = nn.ModuleList(conv_block(c_in, c_out) for c_in, c_out in zip([in_channels, *widths], widths))
        self.up = nn.ModuleList(nn.ConvTranspose2d(c_in, c_out, 2, stride=2)
                                for c_in, c_out in zip(widths[:0:-1], widths[-2::-1]))
        self.merge = nn.ModuleList(conv_block(2 * c_out, c_out) for c_out in widths[-2::-1])
        self.out = nn.Conv2d(channels, out_channels, 1)

    def forward_features(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The output and the first block's activations (full resolution, ``channels`` wide)."""
        height, width = x.shape[-2:]
        multiple = 2 ** len(self.up)
        pad_h, pad_w = -height % multiple, -width % multiple
        if pad_h or pad_w:
            x = F.pad(x, (0, pad_w, 0, pad_h))
        skips = []
        for level, block in enumerate(self.down):
            x = block(x if level == 0 else F.avg_pool2d(x, 2))
            skips.append(x)
        feature = skips[0][..., :height, :width]
        skips.pop()
        for up, merge in zip(self.up, self.merge):
            x = merge(torch.cat([up(x), skips.pop()], dim=1))
        return self.out(x)[..., :height, :width], feature

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_features(x)[0]
