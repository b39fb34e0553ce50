"""Imitation loss: the student's reconstruction follows the teacher's (output-only distillation)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from kdc.compress.losses import Outputs, register_kd_loss


@register_kd_loss("imitation")
class Imitation(nn.Module):
    """L1 distance between student and teacher outputs."""

    def forward(self, student: Outputs, teacher: Outputs) -> torch.Tensor:
        return F.l1_loss(student.image, teacher.image)

    def teacher_summary(self, teacher: Outputs) -> Outputs:
        """Only the reconstruction."""
        return Outputs(teacher.image, [])
