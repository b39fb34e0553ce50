"""``kdc distill --task multicoil`` with kdc's own SENSE models: no --teacher/--student, per-cascade taps."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from kdc.cli import app
from kdc.compress.architectures import spaced_cascades, tap_paths
from kdc.compress.tasks import get_task
from kdc.compress.trainer import read_history
from kdc.data.slices import open_split
from kdc.models import SenseDCCNN, SenseVarNet, build_model, load_checkpoint
from kdc.mri.simulate import complex_coil_images
from tests.conftest import make_phantom

SIZE = (24, 80)


@pytest.fixture
def coil_data(tmp_path, write_fastmri_multicoil) -> Path:
    """fastMRI multi-coil files, 4 coils (what ``kdc data build --coils 4 --height 24 --width 80`` writes): two
    train volumes of 2 slices, one val volume of 2; 80 columns give the 6 centre lines ``bart ecalib`` needs."""
    for split, name, seed in (("train", "a", 0), ("train", "b", 1), ("val", "c", 2)):
        coil_images = complex_coil_images(make_phantom(2, *SIZE, seed=seed), coils=4, seed=seed)
        write_fastmri_multicoil(tmp_path / "data" / split / f"{name}.h5", coil_images)
    return tmp_path / "data"


def test_kdcs_sense_varnet_distils_with_no_model_options(coil_data, tmp_path):
    run = tmp_path / "run"
    result = CliRunner().invoke(app, [
        "distill", "--task", "multicoil", "--data", str(coil_data), "--out", str(run), "--epochs", "1",
        "--pretrain-epochs", "1", "--batch-size", "2", "--precision", "fp32", "--lr", "3e-3"])
    assert result.exit_code == 0, result.output
    assert "| kd_student |" in result.output and "| zero-filled |" in result.output
    assert {record["stage"] for record in read_history(run)} == {"teacher", "student", "student_at", "kd_student"}
    teacher, meta = load_checkpoint(run / "teacher.pt")
    student, _ = load_checkpoint(run / "kd_student.pt")
    assert isinstance(teacher, SenseVarNet) and isinstance(student, SenseVarNet)
    assert (len(teacher.cascades), len(student.cascades)) == (6, 3)
    assert meta["task"] == "recon_multicoil"
    if shutil.which("bart"):  # the classical row of a multi-coil run is SENSE-CS, scored against the RSS
        scored = CliRunner().invoke(app, ["evaluate", str(run), "--cs", "--cs-lambda", "0.01", "--cs-iterations", "5"])
        assert scored.exit_code == 0, scored.output
        assert "| SENSE-CS (BART ecalib + pics l1-wavelet) |" in scored.output and "| CS (BART" not in scored.output


def test_the_sense_dccnn_is_distilled_as_the_student_named_by_its_preset(coil_data, tmp_path):
    """``--student multicoil_dccnn`` (a registered student of the task): the VarNet teacher's three taps teach the
    DC-CNN's three, every stage runs, and evaluate scores the run with its DC-CNN students."""
    run = tmp_path / "run"
    result = CliRunner().invoke(app, [
        "distill", "--task", "multicoil", "--student", "multicoil_dccnn", "--data", str(coil_data), "--out", str(run),
        "--epochs", "1", "--pretrain-epochs", "1", "--batch-size", "2", "--precision", "fp32"])
    assert result.exit_code == 0, result.output
    assert {record["stage"] for record in read_history(run)} == {"teacher", "student", "student_at", "kd_student"}
    for role, expected in (("teacher", SenseVarNet), ("student", SenseDCCNN), ("kd_student", SenseDCCNN)):
        model, _ = load_checkpoint(run / f"{role}.pt")
        assert type(model) is expected and (role == "teacher" or model.config == build_model("multicoil_dccnn").config)
    scored = CliRunner().invoke(app, ["evaluate", str(run)])
    assert scored.exit_code == 0, scored.output
    assert "| kd_student |" in scored.output


def test_a_student_preset_of_another_task_is_not_a_name(coil_data, tmp_path):
    result = CliRunner().invoke(app, [
        "distill", "--task", "multicoil", "--student", "student", "--data", str(coil_data), "--out",
        str(tmp_path / "run"), "--epochs", "1"])
    assert result.exit_code == 1 and "student: checkpoint not found" in result.output


@pytest.mark.parametrize("preset", ["multicoil_teacher", "multicoil_student", "multicoil_dccnn"])
def test_sense_models_tap_themselves_per_cascade(coil_data, preset):
    """Three features per VarNet (teacher cascades 2, 4, 6 <-> student 1, 2, 3), one per DC-CNN cascade, each at the
    image size; the image has the target's shape."""
    model = build_model(preset)
    item = open_split(coil_data, "train", 4, coils=True)[0]
    batch = {key: torch.from_numpy(item[key][None]) for key in ("kspace", "mask", "target")}
    outputs = get_task("recon_multicoil").outputs(model, batch)
    assert outputs.image.shape == batch["target"].shape
    assert len(outputs.features) == 3
    assert all(feature.shape[-2:] == SIZE for feature in outputs.features)
    assert tap_paths(build_model("multicoil_teacher"), model) == ([], [])
    assert spaced_cascades(6) == [1, 3, 5] and spaced_cascades(3) == [0, 1, 2] and spaced_cascades(2) == [0, 1]
