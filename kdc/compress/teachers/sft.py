"""SFT-KD-Recon's student-friendly teacher (Matcha et al., MIDL 2023): the teacher trained jointly with student
branches, so that its intermediate images are ones the student's cascades can continue; KD then runs as usual.

Method as in the paper and its public code (github.com/GayathriMatcha/SFT-KD-Recon): DC-CNN teacher and student
with the same number of cascades ``C``; branch ``i`` (``i = 1 .. C-1``) feeds the teacher's image after its cascade
``i`` (data consistency applied) through the student's cascades ``i+1 .. C``; the student's first cascade is never
used; the branches are discarded after this stage and the student of the KD stages starts afresh (AT pre-training,
then KD, exactly as with a plain teacher). Differences: the public code divides the imitation term by the number of
pixels of the batch (which makes it about 1e-5 of the others); kdc weights it like the other terms, as the paper
writes the loss.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F
from torch import nn

from kdc.compress.architectures import architecture_of
from kdc.compress.teachers import register_teacher_mode
from kdc.errors import KdcError

if TYPE_CHECKING:
    from kdc.compress.recipe import Run
    from kdc.models.dccnn import DCCNN


def cascade_images(
    cascades: nn.ModuleList, dc: nn.Module, image: torch.Tensor, kspace: torch.Tensor, mask: torch.Tensor
) -> list[torch.Tensor]:
    """The image after each of ``cascades`` followed by data consistency, starting from ``image``."""
    images = []
    for cascade in cascades:
        image = dc(cascade.forward_features(image)[0], kspace, mask)
        images.append(image)
    return images


class StudentFriendlyLoss(nn.Module):
    """SFT-KD-Recon's teacher loss; holds the trainable student branches (cascades 2..C of a student DC-CNN).

    With ``T`` the teacher's reconstruction, ``B_i`` branch ``i``'s and ``y`` the target, for ``C`` cascades::

        L = L1(T, y) + 1/(C-1) · Σ_{i=1}^{C-1} [ branch_weight · L1(B_i, y) + imitation_weight · L1(B_i, T) ]

    (L1 = mean absolute difference). Gradients of the branch terms reach the teacher's cascades ``1..i`` through
    ``B_i``'s input and ``T``: the teacher learns intermediate images the student can continue.

    Example::

        >>> import torch
        >>> from kdc.models import build_model
        >>> teacher, student = build_model("teacher"), build_model("student")
        >>> sft_loss = StudentFriendlyLoss(student)  # trains student.cascades[1:] along with the teacher
        >>> kspace, mask, target = torch.randn(2, 2, 16, 16), torch.ones(1, 1, 1, 16), torch.rand(2, 1, 16, 16)
        >>> loss = sft_loss(teacher, kspace, mask, target)
        >>> loss.backward()  # gradients for the teacher and the branches
        >>> all(p.grad is not None for p in student.cascades[1].parameters())
        True
    """

    def __init__(self, student: DCCNN, branch_weight: float = 1.0, imitation_weight: float = 1.0) -> None:
        super().__init__()
        self.cascades = nn.ModuleList(student.cascades[1:])
        self.dc = student.dc
        self.branch_weight, self.imitation_weight = branch_weight, imitation_weight

    def forward(
        self, teacher: DCCNN, kspace: torch.Tensor, mask: torch.Tensor, target: torch.Tensor
    ) -> torch.Tensor:
        if len(teacher.cascades) != len(self.cascades) + 1:
            raise KdcError(f"SFT: the teacher has {len(teacher.cascades)} cascades, the student "
                           f"{len(self.cascades) + 1}; the branches need the same number")
        stages = cascade_images(teacher.cascades, teacher.dc, teacher.dc.zero_filled(kspace), kspace, mask)
        output = stages[-1]
        branch_terms = []
        for start, image in enumerate(stages[:-1]):
            branch = cascade_images(self.cascades[start:], self.dc, image, kspace, mask)[-1]
            branch_terms.append(self.branch_weight * F.l1_loss(branch, target)
                                + self.imitation_weight * F.l1_loss(branch, output))
        return F.l1_loss(output, target) + torch.stack(branch_terms).mean()


@register_teacher_mode("sft")
def train_student_friendly_teacher(run: Run) -> dict:
    """Train ``RUN/teacher.pt`` with :class:`StudentFriendlyLoss`; the branches are resumable ``extra`` state."""
    torch.manual_seed(run.config.seed)  # the same initial teacher as the plain mode
    teacher, student = (run.new_model(role) for role in ("teacher", "student"))
    if {architecture_of(model).name for model in (teacher, student)} != {"dccnn"}:
        raise KdcError(f"--teacher-mode sft needs cascaded DC-CNN models (task recon), not task {run.config.task!r}")
    sft_loss = StudentFriendlyLoss(student).to(run.device)

    def step(batch: dict) -> torch.Tensor:
        return sft_loss(teacher, batch["kspace"], batch["mask"], batch["target"])

    return run.train("teacher", teacher, step, extra=[sft_loss], meta={"teacher_mode": "sft"})
