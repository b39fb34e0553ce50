"""The ``kdc`` command as a user runs it: real subprocesses, real h5 files, real run directories."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import h5py
import numpy as np
import pytest

from kdc.models import build_model, save_checkpoint
from tests.conftest import make_phantom

SHAPE = (24, 24)


def kdc(*args: str, check: bool = True, program: tuple[str, str] = ("-m", "kdc")) -> subprocess.CompletedProcess:
    """``kdc ARGS`` in a subprocess; ``program=("-c", CODE)`` runs a ``python -c`` program that ends in kdc's CLI."""
    result = subprocess.run([sys.executable, *program, *args], capture_output=True, text=True, timeout=600)
    if check and result.returncode != 0:
        raise AssertionError(f"kdc {' '.join(args)} failed:\n{result.stdout}\n{result.stderr}")
    return result


@pytest.fixture
def dataset(tmp_path, write_kdmri) -> Path:
    """Two train volumes and one val volume in the KD-MRI layout (targets only: k-space is simulated)."""
    root = tmp_path / "data"
    for split, name, seed in (("train", "a", 0), ("train", "b", 1), ("val", "c", 2)):
        write_kdmri(root / split / f"{name}.h5", make_phantom(4, *SHAPE, seed=seed))
    return root


def assert_user_error(result: subprocess.CompletedProcess, *fragments: str) -> None:
    assert result.returncode != 0
    assert "Traceback" not in result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    for fragment in fragments:
        assert fragment in lines[0]


def test_distill_with_a_given_teacher_then_evaluate(dataset, tmp_path):
    teacher = tmp_path / "teacher.pt"
    save_checkpoint(teacher, build_model("teacher"), {"role": "teacher"})
    run = tmp_path / "run"
    out = kdc("distill", "--data", str(dataset), "--acc", "4", "--out", str(run), "--epochs", "1",
              "--teacher", str(teacher)).stdout
    for row in ("| zero-filled |", "| teacher | 141,765 |", "| student | 49,285 |", "| kd_student | 49,285 |"):
        assert row in out
    names = {p.name for p in run.iterdir()}
    assert {"teacher.pt", "student.pt", "student_at.pt", "kd_student.pt", "mask.npy", "run.json",
            "metrics.json", "train.log", "state"} <= names
    assert (run / "teacher.pt").read_bytes() == teacher.read_bytes()
    assert not (run / "state" / "teacher.pt").exists()
    assert not [p for p in run.rglob("*.tmp")]
    metrics = json.loads((run / "metrics.json").read_text())
    assert set(metrics["models"]) == {"zero-filled", "teacher", "student", "kd_student"}
    assert np.load(run / "mask.npy").shape == SHAPE

    table = kdc("evaluate", str(run), "--json", str(tmp_path / "eval.json")).stdout
    assert "| kd_student | 49,285 |" in table and "HFEN" in table
    assert json.loads((tmp_path / "eval.json").read_text())["models"]["teacher"]["psnr"]["n"] == 4


def test_kill_9_then_resume_keeps_finished_epochs(dataset, tmp_path):
    run = tmp_path / "run"
    args = ["distill", "--data", str(dataset), "--out", str(run), "--epochs", "2", "--pretrain-epochs", "1"]
    process = subprocess.Popen([sys.executable, "-m", "kdc", *args], stdout=subprocess.DEVNULL,
                               stderr=subprocess.DEVNULL, start_new_session=True)
    state = run / "state" / "teacher.pt"
    deadline = time.monotonic() + 300
    while not state.exists() and process.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    os.killpg(process.pid, signal.SIGKILL)
    process.wait()
    assert state.exists(), "the first teacher epoch never finished"

    result = kdc(*args, check=False)
    assert_user_error(result, "already holds a run", "--resume")
    kdc(*args, "--resume")
    log = (run / "train.log").read_text()
    assert "teacher: resuming after epoch 1" in log
    assert log.count("teacher epoch 1/2") <= 1  # the finished epoch was not trained again
    for role in ("teacher", "student", "kd_student"):
        assert f"{role} epoch 2/2" in log
    assert not [p for p in run.rglob("*.tmp")]


def test_resume_with_other_settings_is_refused(dataset, tmp_path):
    run = tmp_path / "run"
    kdc("train", "--model", "student", "--data", str(dataset), "--out", str(run), "--epochs", "1")
    result = kdc("train", "--model", "student", "--data", str(dataset), "--out", str(run), "--epochs", "2",
                 "--resume", check=False)
    assert_user_error(result, "run.json", "different settings (epochs)")


def test_missing_data(tmp_path):
    result = kdc("distill", "--data", str(tmp_path / "nowhere"), "--out", str(tmp_path / "r"), check=False)
    assert_user_error(result, "nowhere")
    assert not (tmp_path / "r").exists()


def test_h5_without_expected_keys(dataset, tmp_path):
    with h5py.File(dataset / "val" / "c.h5", "w") as file:
        file["image"] = np.zeros((4, *SHAPE))
    result = kdc("train", "--model", "student", "--data", str(dataset), "--out", str(tmp_path / "r"), check=False)
    assert_user_error(result, "c.h5", "volfs")


def test_nan_in_target(dataset, tmp_path, write_kdmri):
    images = make_phantom(4, *SHAPE)
    images[2, 3, 3] = np.nan
    write_kdmri(dataset / "train" / "a.h5", images)
    result = kdc("train", "--model", "student", "--data", str(dataset), "--out", str(tmp_path / "r"), check=False)
    assert_user_error(result, "a.h5", "NaN")


def test_mask_of_the_wrong_size(dataset, tmp_path):
    (dataset / "masks").mkdir()
    np.save(dataset / "masks" / "mask_4x.npy", np.ones((16, 16), np.float32))
    result = kdc("train", "--model", "student", "--data", str(dataset), "--out", str(tmp_path / "r"), check=False)
    assert_user_error(result, "mask_4x.npy", "(16, 16)", "(24, 24)")


def test_unknown_acceleration(dataset, tmp_path):
    result = kdc("distill", "--data", str(dataset), "--acc", "3", "--out", str(tmp_path / "r"), check=False)
    assert_user_error(result, "3x", "4, 5, 8")


def test_unknown_method_and_foreign_teacher(dataset, tmp_path):
    result = kdc("distill", "--data", str(dataset), "--out", str(tmp_path / "r"), "--method", "magic", check=False)
    assert_user_error(result, "unknown KD method 'magic'")
    fake = tmp_path / "fake.pt"
    fake.write_bytes(b"\x00not torch")
    result = kdc("distill", "--data", str(dataset), "--out", str(tmp_path / "r2"), "--teacher", str(fake), check=False)
    assert_user_error(result, "fake.pt", "not a kdc checkpoint")


def test_evaluate_needs_a_run_directory(tmp_path):
    assert_user_error(kdc("evaluate", str(tmp_path), check=False), "not a run directory")
