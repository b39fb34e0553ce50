"""The teacher trained alone with L1 to the target, as KD-MRI trains it."""

from __future__ import annotations

from typing import TYPE_CHECKING

from kdc.compress.teachers import register_teacher_mode

if TYPE_CHECKING:
    from kdc.compress.recipe import Run


@register_teacher_mode("plain")
def train_plain_teacher(run: Run) -> dict:
    return run.train_supervised("teacher", meta={"teacher_mode": "plain"})
