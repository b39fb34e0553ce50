"""``kdc distill --method NAME`` end to end for every registered KD loss, and the ablation options."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from kdc.cli import app
from kdc.compress.losses import KD_LOSSES
from kdc.models import build_model, load_checkpoint, save_checkpoint
from tests.conftest import make_phantom


@pytest.fixture
def inputs(tmp_path, write_kdmri) -> dict[str, Path]:
    """Tiny KD-MRI data (two train volumes, one val volume, 16x16) and a random-weight teacher and student."""
    for split, name, seed in (("train", "a", 0), ("train", "b", 1), ("val", "c", 2)):
        write_kdmri(tmp_path / "data" / split / f"{name}.h5", make_phantom(2, 16, 16, seed=seed))
    paths = {"data": tmp_path / "data"}
    for role in ("teacher", "student"):
        torch.manual_seed(1)
        paths[role] = tmp_path / f"{role}.pt"
        save_checkpoint(paths[role], build_model(role), {"role": role})
    return paths


def distill(inputs: dict[str, Path], out: Path, *options: str):
    # Batches of 4: with 2 slices the relations are trivial (RKD's normalised distances and angles are the same for
    # any features), so a relational pre-training would move the weights by float error alone.
    args = ["distill", "--data", str(inputs["data"]), "--out", str(out), "--epochs", "1", "--batch-size", "4",
            "--teacher", str(inputs["teacher"]), "--student", str(inputs["student"]), *options]
    return CliRunner().invoke(app, args)


@pytest.mark.parametrize("method", sorted(KD_LOSSES))
def test_distill_with_every_method(inputs, tmp_path, method):
    run = tmp_path / "run"
    result = distill(inputs, run, "--method", method)
    assert result.exit_code == 0, result.output
    assert "| kd_student | 49,285 |" in result.output
    assert (run / "student_at.pt").exists() and (run / "kd_student.pt").exists()
    assert (run / "student.pt").read_bytes() == inputs["student"].read_bytes()
    assert json.loads((run / "run.json").read_text())["method"] == method
    pretrained, _ = load_checkpoint(run / "student_at.pt")
    torch.manual_seed(0)  # the pre-trained student's initial weights (seed 0)
    untouched = build_model("student")
    assert any(not torch.equal(a, b) for a, b in zip(pretrained.state_dict().values(), untouched.state_dict().values()))


def test_ablation_without_pretraining_with_feature_loss_in_kd(inputs, tmp_path):
    """No pre-training, no imitation, FitNet in the KD stage: its regressors train with the KD student."""
    run = tmp_path / "run"
    result = distill(inputs, run, "--method", "fitnet", "--pretrain-epochs", "0", "--imitation-weight", "0",
                     "--feature-weight", "1")
    assert result.exit_code == 0, result.output
    assert not (run / "student_at.pt").exists() and not (run / "state" / "student_at.pt").exists()
    state = torch.load(run / "state" / "kd_student.pt", weights_only=True)
    assert len(state["extra"]) == 1 and "regressors.0.weight" in state["extra"][0]
    settings = json.loads((run / "run.json").read_text())
    assert settings["pretrain_epochs"] == 0 and settings["feature_weight"] == 1.0


def test_relational_method_refuses_batch_size_one(inputs, tmp_path):
    result = distill(inputs, tmp_path / "run", "--method", "sp", "--batch-size", "1")
    assert result.exit_code == 1
    assert "error: --method sp compares the samples of a batch: --batch-size must be >= 2" in result.output
    assert not (tmp_path / "run").exists()
