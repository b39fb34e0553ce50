"""Registry of knowledge-distillation losses: one registered class per file in this package.

Every loss is an ``nn.Module`` called as ``loss(student, teacher)`` with two :class:`Outputs`. Feature losses
read ``Outputs.features``: one tensor per cascade, already paired (teacher conv 3 <-> student conv 2 by default).

A loss may also define ``teacher_summary(teacher: Outputs) -> Outputs``: the smallest outputs (batch first) that give
the same loss as the full teacher outputs, ``loss(s, loss.teacher_summary(t)) == loss(s, t)`` up to float error.
The teacher cache (:mod:`kdc.compress.teacher_cache`) stores that summary once per slice; a loss without one is
trained with the live teacher.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple, TypeVar

import torch
from torch import nn

from kdc.errors import KdcError


class Outputs(NamedTuple):
    """What a network produced for a batch: the reconstruction and the paired feature maps (one per cascade)."""

    image: torch.Tensor
    features: list[torch.Tensor]


KD_LOSSES: dict[str, type[nn.Module]] = {}
LossClass = TypeVar("LossClass", bound=type[nn.Module])


def register_kd_loss(name: str) -> Callable[[LossClass], LossClass]:
    """Class decorator: make a KD loss selectable by ``name`` (``kdc distill --method``)."""

    def register(cls: LossClass) -> LossClass:
        KD_LOSSES[name] = cls
        return cls

    return register


def build_kd_loss(name: str, **kwargs: object) -> nn.Module:
    if name not in KD_LOSSES:
        raise KdcError(f"unknown KD method {name!r}: expected one of {sorted(KD_LOSSES)}")
    return KD_LOSSES[name](**kwargs)


# Importing the modules registers their losses.
from kdc.compress.losses import attention, imitation  # noqa: E402,F401
