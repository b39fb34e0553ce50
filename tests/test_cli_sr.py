"""``kdc distill/train/evaluate/export --task sr`` as a user runs them: real subprocesses and real h5 files."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from kdc.models import build_model, load_checkpoint, save_checkpoint
from tests.conftest import make_phantom
from tests.test_cli import assert_user_error, kdc

SHAPE = (24, 24)


@pytest.fixture
def dataset(tmp_path, write_kdmri) -> Path:
    root = tmp_path / "data"
    for split, name, seed in (("train", "a", 0), ("val", "c", 2)):
        write_kdmri(root / split / f"{name}.h5", make_phantom(3, *SHAPE, seed=seed))
    return root


def test_distill_sr_evaluate_and_export(dataset, tmp_path):
    run = tmp_path / "run"
    out = kdc("distill", "--task", "sr", "--scale", "4", "--data", str(dataset), "--out", str(run),
              "--epochs", "1", "--batch-size", "3").stdout
    assert "Validation, SR 4x" in out
    for row in ("| low-res | 0 |", "| teacher | 333,569 |", "| student | 185,857 |", "| kd_student | 185,857 |"):
        assert row in out
    assert {p.name for p in run.iterdir()} == {"teacher.pt", "student.pt", "student_at.pt", "kd_student.pt",
                                               "run.json", "metrics.json", "train.log", "history.jsonl", "state"}
    log = (run / "train.log").read_text()
    for stage in ("teacher", "student", "student_at", "kd_student"):
        assert f"{stage} epoch 1/1" in log
    _, meta = load_checkpoint(run / "kd_student.pt")
    assert (meta["task"], meta["scale"], meta["image_size"], meta["role"]) == ("sr", 4, [24, 24], "kd_student")
    metrics = json.loads((run / "metrics.json").read_text())
    assert (metrics["task"], metrics["scale"]) == ("sr", 4)
    assert set(metrics["models"]) == {"low-res", "teacher", "student", "kd_student"}

    table = kdc("evaluate", str(run), "--split", "train", "--json", str(tmp_path / "eval.json")).stdout
    assert "train split, SR 4x (3 slices" in table and "| low-res | 0 |" in table
    assert json.loads((tmp_path / "eval.json").read_text())["models"]["low-res"]["psnr"]["n"] == 3

    exported = kdc("export", str(run), "--out", str(tmp_path / "sr.onnx")).stdout
    assert "dc=none" in exported and (tmp_path / "sr.onnx").is_file()

    drawn = kdc("report", str(run), "--out", str(tmp_path / "sr.png"), "--slices", "0").stdout
    assert "| low-res | 0 |" in drawn and (tmp_path / "sr.png").read_bytes().startswith(b"\x89PNG")


def test_train_sr_student(dataset, tmp_path):
    run = tmp_path / "run"
    out = kdc("train", "--task", "sr", "--model", "student", "--data", str(dataset), "--out", str(run),
              "--epochs", "1").stdout
    assert "| low-res | 0 |" in out and "| student | 185,857 |" in out
    assert json.loads((run / "run.json").read_text())["task"] == "sr"


def test_bad_sr_inputs_are_one_line_errors(dataset, tmp_path):
    result = kdc("distill", "--task", "sr", "--scale", "3", "--data", str(dataset), "--out", str(tmp_path / "r"),
                 check=False)
    assert_user_error(result, "scale 3", "[2, 4]")
    assert not (tmp_path / "r").exists()
    result = kdc("train", "--task", "deblur", "--model", "student", "--data", str(dataset), "--out",
                 str(tmp_path / "r"), check=False)
    assert_user_error(result, "unknown task 'deblur'")

    teacher = tmp_path / "dccnn.pt"
    save_checkpoint(teacher, build_model("teacher"), {"role": "teacher"})
    result = kdc("distill", "--task", "sr", "--data", str(dataset), "--out", str(tmp_path / "r2"),
                 "--teacher", str(teacher), check=False)
    assert_user_error(result, "dccnn.pt", "DCCNN cannot be the teacher of task 'sr'", "VDSR")

    small = tmp_path / "student_as_teacher.pt"
    save_checkpoint(small, build_model("sr_student"), {"role": "student"})
    result = kdc("distill", "--task", "sr", "--data", str(dataset), "--out", str(tmp_path / "r3"),
                 "--teacher", str(small), check=False)
    assert_user_error(result, "student_as_teacher.pt", "'depth': 7", "expected the preset", "'depth': 11")


def test_distill_sr_with_fitnet_sizes_its_regressors_for_vdsr(dataset, tmp_path):
    run = tmp_path / "fitnet"
    kdc("distill", "--task", "sr", "--data", str(dataset), "--out", str(run), "--epochs", "1", "--batch-size", "3",
        "--method", "fitnet")
    assert (run / "kd_student.pt").is_file()
