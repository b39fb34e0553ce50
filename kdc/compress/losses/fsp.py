"""Flow of solution procedure (Yim et al., CVPR 2017): match the Gram matrix between two layers of a network."""

from __future__ import annotations

import torch
from torch import nn

from kdc.compress.losses import Outputs, register_kd_loss
from kdc.errors import KdcError


def fsp_matrix(first: torch.Tensor, second: torch.Tensor) -> torch.Tensor:
    """``G_ij = 1/(H W) sum_{x} F1_i(x) F2_j(x)`` for ``(B, C1, H, W)`` and ``(B, C2, H, W)``: ``(B, C1, C2)``."""
    return torch.einsum("bihw,bjhw->bij", first, second) / (first.shape[-2] * first.shape[-1])


@register_kd_loss("fsp")
class FlowOfSolution(nn.Module):
    """``L = mean_c mean((G_s^c - G_t^c)^2)`` with ``G^c`` the FSP matrix between the first and the last hidden
    feature map of cascade ``c`` (the flow from a cascade's input side to its output side).

    Needs the same channel counts in student and teacher at both ends (32 in the KD-MRI presets).
    """

    def forward(self, student: Outputs, teacher: Outputs) -> torch.Tensor:
        if not student.hidden or not teacher.hidden:
            raise KdcError("fsp: needs every hidden feature map of each cascade (Outputs.hidden)")
        losses = []
        for s, t in zip(student.hidden, teacher.hidden, strict=True):
            if (s[0].shape[1], s[-1].shape[1]) != (t[0].shape[1], t[-1].shape[1]):
                raise KdcError(
                    f"fsp: student FSP matrix is {s[0].shape[1]}x{s[-1].shape[1]}, "
                    f"teacher's {t[0].shape[1]}x{t[-1].shape[1]}: channels must match"
                )
            losses.append((fsp_matrix(s[0], s[-1]) - fsp_matrix(t[0], t[-1])).pow(2).mean())
        return torch.stack(losses).mean()
