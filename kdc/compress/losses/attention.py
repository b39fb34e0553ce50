"""Attention transfer (Zagoruyko & Komodakis 2017), the feature loss of KD-MRI."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from kdc.compress.losses import Outputs, register_kd_loss


def attention_map(features: torch.Tensor) -> torch.Tensor:
    """Channel-mean of squared activations, flattened over space and L2-normalised: ``(B, H*W)``."""
    return F.normalize(features.pow(2).mean(dim=1).flatten(1), dim=1)


@register_kd_loss("at")
class AttentionTransfer(nn.Module):
    """Squared L2 distance between normalised attention maps (in [0, 4]), averaged over samples and layers."""

    def forward(self, student: Outputs, teacher: Outputs) -> torch.Tensor:
        losses = [
            (attention_map(s) - attention_map(t)).pow(2).sum(dim=1).mean()
            for s, t in zip(student.features, teacher.features, strict=True)
        ]
        return torch.stack(losses).mean()

    def teacher_summary(self, teacher: Outputs) -> Outputs:
        """The channel RMS of each feature map (one channel instead of 32): it has the same attention map."""
        rms = [features.pow(2).mean(dim=1, keepdim=True).sqrt() for features in teacher.features]
        return Outputs(teacher.image[:, :0], rms)
