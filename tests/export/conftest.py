"""Fixtures of the export tests: a tiny model and a run directory."""

from __future__ import annotations

import numpy as np
import pytest

from kdc.mri.masks import cartesian_mask
from kdc.models import DCCNN, save_checkpoint

from .helpers import tiny_model


@pytest.fixture
def model() -> DCCNN:
    return tiny_model()


@pytest.fixture
def run_dir(tmp_path):
    """A run directory as ``kdc distill`` writes it, at 64x48, 4x, with teacher, student and KD student."""
    run = tmp_path / "run"
    for seed, role in enumerate(("teacher", "student", "kd_student")):
        meta = {"role": role, "acceleration": 4, "image_size": [64, 48], "mask_kind": "random", "mask_seed": 0,
                "metrics": {"psnr": 30.0 + seed}}
        save_checkpoint(run / f"{role}.pt", tiny_model(seed), meta)
    np.save(run / "mask.npy", cartesian_mask("random", 4, (64, 48), seed=3))
    return run
