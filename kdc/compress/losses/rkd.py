"""Relational knowledge distillation (Park et al., CVPR 2019): distance and angle between samples."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from kdc.compress.losses import RelationalLoss, register_kd_loss


def normalised_distances(features: torch.Tensor) -> torch.Tensor:
    """``psi_D(i, j) = ||f_i - f_j|| / mu``, ``mu`` the mean distance over pairs ``i != j``: ``(B, B)``."""
    distances = torch.cdist(features, features)
    batch = features.shape[0]
    return distances / (distances.sum() / (batch * (batch - 1))).clamp_min(1e-12)


def angles(features: torch.Tensor) -> torch.Tensor:
    """``psi_A(i, j, k) = <e_ij, e_kj>`` with ``e_ij = (f_i - f_j) / ||f_i - f_j||``: ``(B, B, B)``."""
    directions = F.normalize(features.unsqueeze(0) - features.unsqueeze(1), dim=2)  # [j, i] = e_ij
    return directions @ directions.transpose(1, 2)


@register_kd_loss("rkd")
class RelationalDistillation(RelationalLoss):
    """``L = mean_c [w_D huber(psi_D^s, psi_D^t) + w_A huber(psi_A^s, psi_A^t)]`` (smooth L1, mean over pairs and
    triplets) on a cascade's flattened features; ``w_D = 1``, ``w_A = 2`` (the paper's weights). Invariant to scaling
    and translating either network's features; needs a batch of >= 2 slices (angles need >= 3 to say anything).
    """

    def __init__(self, distance_weight: float = 1.0, angle_weight: float = 2.0) -> None:
        super().__init__()
        self.distance_weight, self.angle_weight = distance_weight, angle_weight

    def relation_loss(self, student: torch.Tensor, teacher: torch.Tensor) -> torch.Tensor:
        distance = F.smooth_l1_loss(normalised_distances(student), normalised_distances(teacher))
        angle = F.smooth_l1_loss(angles(student), angles(teacher))
        return self.distance_weight * distance + self.angle_weight * angle
