"""Registry of knowledge-distillation losses: one registered class per file in this package.

Every loss is an ``nn.Module`` called as ``loss(student, teacher)`` with two :class:`Outputs`. Feature losses
read ``Outputs.features``: the paired taps the task gives (:mod:`kdc.compress.tasks`; for DC-CNN one per cascade,
teacher conv 3 <-> student conv 2);
FSP reads ``Outputs.hidden`` (every hidden feature map of every cascade). Losses on relations between the samples
of a batch derive from :class:`RelationalLoss`.

A loss may also define ``teacher_summary(teacher: Outputs) -> Outputs``: the smallest outputs (batch first) that give
the same loss as the full teacher outputs, ``loss(s, loss.teacher_summary(t)) == loss(s, t)`` up to float error.
The teacher cache (:mod:`kdc.compress.teacher_cache`) stores that summary once per slice; a loss without one is
trained with the live teacher.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import NamedTuple, TypeVar

import torch
from torch import nn

from kdc.errors import KdcError


class Outputs(NamedTuple):
    """What a network produced for a batch: its image and the paired feature maps (the task's taps)."""

    image: torch.Tensor
    features: list[torch.Tensor]
    hidden: Sequence[Sequence[torch.Tensor]] = ()  # hidden[cascade][conv], input side first (FSP)

    def float(self) -> Outputs:
        """The same outputs in float32, so that losses compare (and caches store) float32 whatever the forward ran
        in (``--precision bf16`` computes convolutions in bfloat16); a no-op for float32 outputs."""
        return Outputs(self.image.float(), [f.float() for f in self.features],
                       [[f.float() for f in taps] for taps in self.hidden])


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


class RelationalLoss(nn.Module):
    """Base of losses on the relations between the samples of a batch, computed per cascade on flattened features.

    A batch of one sample has no relations: the loss is then 0 (still connected to the student's graph), so a
    last batch of one slice does not stop training; ``kdc distill`` refuses ``--batch-size`` below ``min_batch``.
    """

    min_batch = 2

    def relation_loss(self, student: torch.Tensor, teacher: torch.Tensor) -> torch.Tensor:
        """Loss between ``(B, D_s)`` and ``(B, D_t)`` embeddings of the same ``B >= 2`` samples."""
        raise NotImplementedError

    def forward(self, student: Outputs, teacher: Outputs) -> torch.Tensor:
        pairs = list(zip(student.features, teacher.features, strict=True))
        if student.features[0].shape[0] < 2:
            return sum(s.sum() for s, _ in pairs) * 0.0
        return torch.stack([self.relation_loss(s.flatten(1), t.flatten(1)) for s, t in pairs]).mean()


def check_batch_size(name: str, batch_size: int) -> None:
    """Refuse a batch size too small for the relations a method compares."""
    needed = getattr(KD_LOSSES.get(name), "min_batch", 1)
    if batch_size < needed:
        raise KdcError(f"--method {name} compares the samples of a batch: --batch-size must be >= {needed}")


# Importing the modules registers their losses.
from kdc.compress.losses import (  # noqa: E402,F401
    attention,
    correlation,
    fitnet,
    fsp,
    imitation,
    pkt,
    rkd,
    similarity,
)
