"""Similarity-preserving distillation (Tung & Mori, ICCV 2019)."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from kdc.compress.losses import RelationalLoss, register_kd_loss


def similarity_matrix(features: torch.Tensor) -> torch.Tensor:
    """``G = row_normalise(A A^T)`` for flattened features ``A`` ``(B, D)``: ``(B, B)``."""
    return F.normalize(features @ features.T, dim=1)


@register_kd_loss("sp")
class SimilarityPreserving(RelationalLoss):
    """``L = mean_c 1/B^2 ||G_s^c - G_t^c||_F^2`` with ``G`` the row-L2-normalised batch Gram matrix of a cascade's
    flattened features. Invariant to scaling either network's features; needs a batch of >= 2 slices.
    """

    def relation_loss(self, student: torch.Tensor, teacher: torch.Tensor) -> torch.Tensor:
        return (similarity_matrix(student) - similarity_matrix(teacher)).pow(2).sum() / student.shape[0] ** 2
