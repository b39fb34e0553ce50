"""FitNets hint loss (Romero et al., ICLR 2015) with a trainable 1x1-conv regressor per cascade."""

from __future__ import annotations

from collections.abc import Sequence
from typing import ClassVar

import torch
import torch.nn.functional as F
from torch import nn

from kdc.compress.losses import Outputs, register_kd_loss
from kdc.errors import KdcError
from kdc.models.checkpoint import PRESETS


@register_kd_loss("fitnet")
class FitNet(nn.Module):
    """``L = mean_c mean((F_t^c - r_c(F_s^c))^2)``: the student's guided layer ``F_s^c`` of cascade ``c``, mapped to
    the teacher's channels by a 1x1 convolution ``r_c``, regresses the teacher's hint ``F_t^c`` (mean squared error).

    The regressors train with the student (``extra`` modules of the stage, saved in its resumable state) and are
    not part of the student. Channel counts (one for all taps, or one per tap) default to the KD-MRI presets
    (32 -> 32, 5 cascades); the recipe sizes them for its models' taps (:func:`kdc.compress.tasks.feature_loss`),
    so a 1x1 regressor maps e.g. a VarNet student's 8 channels to its teacher's 18.
    """

    sized_by_taps: ClassVar[bool] = True

    def __init__(
        self,
        student_channels: int | Sequence[int] = PRESETS["student"]["channels"],
        teacher_channels: int | Sequence[int] = PRESETS["teacher"]["channels"],
        cascades: int = PRESETS["student"]["cascades"],
    ) -> None:
        super().__init__()
        widths = [[c] * cascades if isinstance(c, int) else list(c) for c in (student_channels, teacher_channels)]
        self.regressors = nn.ModuleList(
            nn.Conv2d(s, t, kernel_size=1) for s, t in zip(*widths, strict=True)
        )

    def forward(self, student: Outputs, teacher: Outputs) -> torch.Tensor:
        if len(student.features) != len(self.regressors):
            raise KdcError(f"fitnet: built for {len(self.regressors)} cascades, got {len(student.features)}")
        losses = []
        for regressor, s, t in zip(self.regressors, student.features, teacher.features, strict=True):
            if (s.shape[1], t.shape[1]) != (regressor.in_channels, regressor.out_channels):
                raise KdcError(
                    f"fitnet: built for {regressor.in_channels} student -> {regressor.out_channels} teacher channels, "
                    f"got {s.shape[1]} -> {t.shape[1]}"
                )
            losses.append(F.mse_loss(regressor(s), t))
        return torch.stack(losses).mean()
