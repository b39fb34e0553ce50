"""Probabilistic knowledge transfer (Passalis & Tefas, ECCV 2018) with the cosine-similarity kernel."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from kdc.compress.losses import RelationalLoss, register_kd_loss

EPS = 1e-7


def conditional_probabilities(features: torch.Tensor) -> torch.Tensor:
    """``p_{j|i} = K_ij / sum_k K_ik`` with ``K_ij = (1 + cos(f_i, f_j)) / 2``: ``(B, B)``, rows sum to 1."""
    unit = F.normalize(features, dim=1)
    kernel = (unit @ unit.T + 1) / 2
    return kernel / kernel.sum(dim=1, keepdim=True)


@register_kd_loss("pkt")
class ProbabilisticTransfer(RelationalLoss):
    """``L = mean_c mean_ij p^t_{j|i} log((p^t_{j|i} + eps) / (p^s_{j|i} + eps))``: the KL divergence between the
    teacher's and the student's conditional sample distributions under the cosine kernel, on a cascade's flattened
    features (the paper's code, ``eps = 1e-7``). Invariant to scaling either network's features; needs a batch of
    >= 2 slices.
    """

    def relation_loss(self, student: torch.Tensor, teacher: torch.Tensor) -> torch.Tensor:
        p_teacher = conditional_probabilities(teacher)
        p_student = conditional_probabilities(student)
        return (p_teacher * torch.log((p_teacher + EPS) / (p_student + EPS))).mean()
