"""How a run trains its teacher (``kdc distill --teacher-mode``): one registered function per file in this package.

A mode is called as ``mode(run)`` with the :class:`kdc.compress.recipe.Run` and trains ``RUN/teacher.pt`` through
``run.train("teacher", ...)`` (resumable, best validation epoch kept, ``teacher_mode`` recorded in the checkpoint's
meta); the student and KD stages that follow are the same for every mode.

- ``plain`` (default): the teacher alone, L1 to the target (KD-MRI).
- ``sft``: SFT-KD-Recon's student-friendly teacher, trained jointly with student branches
  (:mod:`kdc.compress.teachers.sft`).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

from kdc.errors import KdcError

if TYPE_CHECKING:
    from kdc.compress.recipe import Run

TeacherMode = Callable[["Run"], dict]
TEACHER_MODES: dict[str, TeacherMode] = {}


def register_teacher_mode(name: str) -> Callable[[TeacherMode], TeacherMode]:
    """Function decorator: make a way of training the teacher selectable by ``name``."""

    def register(mode: TeacherMode) -> TeacherMode:
        TEACHER_MODES[name] = mode
        return mode

    return register


def get_teacher_mode(name: str) -> TeacherMode:
    if name not in TEACHER_MODES:
        raise KdcError(f"--teacher-mode {name!r}: expected one of {sorted(TEACHER_MODES)}")
    return TEACHER_MODES[name]


# Importing the modules registers their modes.
from kdc.compress.teachers import plain, sft  # noqa: E402,F401
