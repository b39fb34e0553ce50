"""A DC-CNN with SENSE data consistency: KD-MRI's DC-CNN cascades on the coil-combined complex image.

``SenseDCCNN(kspace (N, C, H, W, 2) centred, mask (N or 1, 1, 1, W, 1)) -> (N, H, W)`` root sum of squares image,
the inputs and output of :class:`kdc.models.sense_varnet.SenseVarNet`. Sensitivities are learned from the centre
lines (:class:`kdc.models.sense.SensitivityNet`); the image starts as ``E^H k0`` and each cascade is a residual CNN
(:class:`kdc.models.dccnn.Cascade` on real and imaginary channels, normalised per slice) followed by hard SENSE data
consistency: the image expanded to every coil, the measured lines put back exactly, reduced again. The output is the
root sum of squares of the last cascade's consistent coil k-space.

Preset ``multicoil_dccnn`` (a second student): 5 cascades x 3 convolutions x 16 channels, sensitivities 4 channels:
22,008 parameters; 0.44 GMAC of convolutions per 128x128 slice with 8 coils, 3.91 per 320x320 slice with 15.
"""

from __future__ import annotations

import torch
from torch import nn

from kdc.models.dccnn import Cascade
from kdc.models.sense import EPS, SensitivityNet, expand, ifft2c, reduce, root_sum_of_squares


def hard_dc(kspace: torch.Tensor, measured: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Every coil's k-space with the measured lines put back: ``(1 - M) k + M k0`` (exactly ``k0`` on them)."""
    return (1 - mask) * kspace + mask * measured


class SenseDCCNN(nn.Module):
    """See the module docstring."""

    def __init__(self, cascades: int = 5, convs: int = 3, channels: int = 16, sens_channels: int = 4,
                 sens_pools: int = 2) -> None:
        super().__init__()
        self.sensitivities = SensitivityNet(sens_channels, sens_pools)
        self.cascades = nn.ModuleList(Cascade(convs, channels, image_channels=2) for _ in range(cascades))
        for cascade in self.cascades:  # an untrained model is the zero-filled SENSE reconstruction
            nn.init.zeros_(cascade.convs[-1].weight)
            nn.init.zeros_(cascade.convs[-1].bias)
        self.config = {"arch": "sense_dccnn", "cascades": cascades, "convs": convs, "channels": channels,
                       "sens_channels": sens_channels, "sens_pools": sens_pools}

    def forward_features(self, kspace: torch.Tensor, mask: torch.Tensor
                         ) -> tuple[torch.Tensor, list[list[torch.Tensor]]]:
        """The image and ``features[cascade][conv]`` (post-activation, hidden convolutions only)."""
        mask = mask.to(kspace.dtype)
        sens = self.sensitivities(kspace, mask)
        batch, _, height, width, _ = kspace.shape
        image, features, current = reduce(kspace, sens), [], kspace
        for cascade in self.cascades:
            channels = image.reshape(batch, height, width, 2).permute(0, 3, 1, 2)
            scale = channels.reshape(batch, -1).std(dim=1).reshape(batch, 1, 1, 1) + EPS
            refined, taps = cascade.forward_features(channels / scale)
            refined = (refined.float() * scale).permute(0, 2, 3, 1).reshape(batch, 1, height, width, 2)
            current = hard_dc(expand(refined, sens), kspace, mask)
            image = reduce(current, sens)
            features.append(taps)
        return root_sum_of_squares(ifft2c(current)), features

    def forward(self, kspace: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        return self.forward_features(kspace, mask)[0]
