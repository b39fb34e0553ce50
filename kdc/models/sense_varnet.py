"""kdc's E2E-VarNet-style multi-coil network (after Sriram et al. 2020; kdc's own compact modules).

``SenseVarNet(kspace (N, C, H, W, 2) centred, mask (N or 1, 1, 1, W, 1)) -> (N, H, W)`` root sum of squares image,
at the k-space's scale. Coil sensitivities are learned from the mask's centre lines inside the model
(:class:`kdc.models.sense.SensitivityNet`), so the model (and its exported file) takes the raw multi-coil k-space and
the mask only, and any number of coils. Each cascade updates every coil's k-space with a soft data consistency and a
U-Net regulariser applied through SENSE::

    k <- k - eta * M (k - k0) - E(R(E^H k))          (E = expand with the sensitivities, E^H = reduce)

kdc's presets (``kdc distill --task multicoil``; parameters; convolution multiply-adds per 128x128 slice with 8
coils / per 320x320 slice with 15 coils, the FFTs besides):

- ``multicoil_teacher``: 6 cascades, U-Net 12 channels, 2 poolings; sensitivities 8 channels: 424,772 parameters;
  2.16 / 17.95 GMAC;
- ``multicoil_student``: 3 cascades, U-Net 8 channels, 2 poolings; sensitivities 4 channels: 95,647 parameters;
  0.51 / 4.33 GMAC.

(fastMRI's leaderboard VarNet: 12 cascades, 18 channels, 4 poolings, sensitivities 8: ~30 M parameters.)
"""

from __future__ import annotations

import torch
from torch import nn

from kdc.models.sense import NormalisedRegulariser, SensitivityNet, expand, ifft2c, reduce, root_sum_of_squares


def soft_dc(kspace: torch.Tensor, measured: torch.Tensor, mask: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """``weight * M (k - k0)``: the data-consistency step's term (weight 1 puts the measured lines back exactly)."""
    return weight * mask * (kspace - measured)


class VarNetCascade(nn.Module):
    """One unrolled step: soft data consistency with a learned weight and a SENSE-wrapped U-Net regulariser."""

    def __init__(self, channels: int, pools: int) -> None:
        super().__init__()
        self.regulariser = NormalisedRegulariser(channels, pools)
        self.dc_weight = nn.Parameter(torch.ones(1))

    def forward_features(self, kspace: torch.Tensor, measured: torch.Tensor, mask: torch.Tensor,
                         sens: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        image, feature = self.regulariser.forward_features(reduce(kspace, sens))
        return kspace - soft_dc(kspace, measured, mask, self.dc_weight) - expand(image, sens), feature


class SenseVarNet(nn.Module):
    """See the module docstring; ``sens_channels``/``sens_pools`` size the sensitivity U-Net."""

    def __init__(self, cascades: int = 6, channels: int = 12, pools: int = 2, sens_channels: int = 8,
                 sens_pools: int = 2) -> None:
        super().__init__()
        self.sensitivities = SensitivityNet(sens_channels, sens_pools)
        self.cascades = nn.ModuleList(VarNetCascade(channels, pools) for _ in range(cascades))
        self.config = {"arch": "sense_varnet", "cascades": cascades, "channels": channels, "pools": pools,
                       "sens_channels": sens_channels, "sens_pools": sens_pools}

    def forward_features(self, kspace: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """The image and every cascade's regulariser features (its U-Net's first block, ``(N, channels, H, W)``)."""
        mask = mask.to(kspace.dtype)
        sens = self.sensitivities(kspace, mask)
        current, features = kspace, []
        for cascade in self.cascades:
            current, feature = cascade.forward_features(current, kspace, mask, sens)
            features.append(feature)
        return root_sum_of_squares(ifft2c(current)), features

    def forward(self, kspace: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        return self.forward_features(kspace, mask)[0]
