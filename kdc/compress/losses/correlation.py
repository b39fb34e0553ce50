"""Correlation congruence (Peng et al., ICCV 2019) with the Taylor-approximated Gaussian RBF kernel."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from kdc.compress.losses import RelationalLoss, register_kd_loss


def rbf_correlation(features: torch.Tensor, gamma: float, order: int) -> torch.Tensor:
    """``C_ij = sum_{p=0}^{P} exp(-2 gamma) (2 gamma)^p / p! (f_i . f_j)^p`` for L2-normalised rows ``f``: ``(B, B)``,
    the order-``P`` Taylor series of ``exp(-gamma ||f_i - f_j||^2)``."""
    cosine = F.normalize(features, dim=1) @ F.normalize(features, dim=1).T
    return sum(math.exp(-2 * gamma) * (2 * gamma) ** p / math.factorial(p) * cosine.pow(p) for p in range(order + 1))


@register_kd_loss("cc")
class CorrelationCongruence(RelationalLoss):
    """``L = mean_c 1/B^2 ||C_s^c - C_t^c||_F^2`` with ``C`` the sample-correlation matrix of a cascade's flattened
    features under the approximated Gaussian RBF kernel (``gamma = 0.4``, order 2, as in the paper's code).
    Invariant to scaling either network's features; needs a batch of >= 2 slices.
    """

    def __init__(self, gamma: float = 0.4, order: int = 2) -> None:
        super().__init__()
        self.gamma, self.order = gamma, order

    def relation_loss(self, student: torch.Tensor, teacher: torch.Tensor) -> torch.Tensor:
        difference = rbf_correlation(student, self.gamma, self.order) - rbf_correlation(teacher, self.gamma, self.order)
        return difference.pow(2).sum() / student.shape[0] ** 2
