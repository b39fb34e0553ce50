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

from kdc.compress.precision import cpu_has_native_bf16
from kdc.models import build_model, save_checkpoint
from tests.conftest import make_phantom

SHAPE = (24, 24)


def kdc(*args: str, check: bool = True, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    """``kdc ARGS`` in a subprocess (``env`` added to the environment)."""
    result = subprocess.run([sys.executable, "-m", "kdc", *args], capture_output=True, text=True, timeout=600,
                            env=None if env is None else {**os.environ, **env})
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
    result = kdc("distill", "--data", str(dataset), "--acc", "4", "--out", str(run), "--epochs", "1",
                 "--teacher", str(teacher), env={"KDC_PROGRESS_SECONDS": "0"})
    out = result.stdout
    # Not a terminal: plain progress lines and the per-epoch validation lines on the console.
    assert "student epoch 1/1: step 1/2, loss " in result.stderr and " steps/s" in result.stderr
    assert "kd_student epoch 1/1: step 2/2, loss " in result.stderr
    precision = "bf16" if cpu_has_native_bf16() else "fp32"  # --precision auto, stated in the log
    assert f"precision {precision} on cpu" in result.stderr
    assert f"kd_student epoch 1/1 ({precision}): train loss " in result.stderr and "val PSNR " in result.stderr
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
    # What a kill in the middle of atomic writes leaves: temps named after the killed process.
    (run / "cache").mkdir(exist_ok=True)
    stale = [run / "state" / f".kd_student.pt.pid{process.pid}.a1.tmp",
             run / "cache" / f".teacher-at.npy.pid{process.pid}.b2.tmp"]
    for path in stale:
        path.write_bytes(b"partial")

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


def test_distill_with_augmentation_runs_the_live_teacher_and_records_it(dataset, tmp_path):
    teacher = tmp_path / "teacher.pt"
    save_checkpoint(teacher, build_model("teacher"), {"role": "teacher"})
    run = tmp_path / "run"
    kdc("distill", "--data", str(dataset), "--out", str(run), "--epochs", "1", "--teacher", str(teacher),
        "--augment", "flip,rot90")
    assert json.loads((run / "run.json").read_text())["augment"] == "flip,rot90"
    assert not list(run.glob("cache/*"))  # augmented items change every epoch: nothing to cache
    assert "| kd_student | 49,285 |" in kdc("evaluate", str(run), "--split", "train").stdout

    assert_user_error(kdc("train", "--model", "student", "--data", str(dataset), "--out", str(tmp_path / "b"),
                          "--augment", "flip,mirror", check=False), "--augment 'mirror': expected one of")
    assert_user_error(kdc("train", "--model", "student", "--task", "sr", "--data", str(dataset), "--out",
                          str(tmp_path / "c"), "--augment", "flip", check=False), "the sr task has no augmentation")
    assert not (tmp_path / "b").exists() and not (tmp_path / "c").exists()


def test_noise_gamma_and_random_masks_are_recorded_and_the_run_scores_on_an_unseen_mask(dataset, tmp_path):
    run = tmp_path / "run"
    kdc("train", "--model", "student", "--data", str(dataset), "--out", str(run), "--epochs", "1",
        "--augment", "noise,gamma", "--random-masks")
    settings = json.loads((run / "run.json").read_text())
    assert settings["augment"] == "noise,gamma" and settings["random_masks"] is True
    assert_user_error(kdc("train", "--model", "student", "--data", str(dataset), "--out", str(run), "--epochs", "1",
                          "--augment", "noise,gamma", "--resume", check=False), "different settings (random_masks)")

    scores = {}
    for name, options in (("fixed", []), ("seed7", ["--mask-seed", "7"]), ("equispaced", ["--mask-kind", "equispaced"]),
                          ("noisy", ["--augment", "noise"])):
        kdc("evaluate", str(run), *options, "--json", str(tmp_path / f"{name}.json"))
        scores[name] = json.loads((tmp_path / f"{name}.json").read_text())
    assert scores["fixed"]["mask_seed"] == 0 and scores["seed7"]["mask_seed"] == 7
    assert scores["equispaced"]["mask_kind"] == "equispaced" and scores["noisy"]["augment"] == "noise"
    zero_filled = {name: table["models"]["zero-filled"]["psnr"]["mean"] for name, table in scores.items()}
    assert len(set(zero_filled.values())) == 4  # three different masks, and noisy inputs
    assert zero_filled["noisy"] < zero_filled["fixed"]

    assert_user_error(kdc("train", "--model", "student", "--data", str(dataset), "--out", str(tmp_path / "b"),
                          "--augment", "noise,noize", check=False), "--augment 'noize': expected one of")
    assert not (tmp_path / "b").exists()
    (dataset / "masks").mkdir()
    np.save(dataset / "masks" / "mask_4x.npy", np.load(run / "mask.npy"))
    assert_user_error(kdc("evaluate", str(run), "--mask-seed", "7", check=False),
                      "--mask-seed/--mask-kind:", "has a 4x mask of its own")


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
    assert not (tmp_path / "r2").exists()  # nothing blocks the corrected command


def test_evaluate_needs_a_run_directory(tmp_path):
    assert_user_error(kdc("evaluate", str(tmp_path), check=False), "not a run directory")


def test_every_option_is_readable_in_help_at_80_columns():
    """Help wraps instead of truncating option names (``--imitation-weig…``), and says only what each command has."""
    import click
    from typer.main import get_command
    from typer.testing import CliRunner

    from kdc.cli import app

    root = get_command(app)
    commands = {name: command for name, command in root.commands.items() if not isinstance(command, click.Group)}
    commands |= {f"data {name}": command for name, command in root.commands["data"].commands.items()}
    for name, command in commands.items():
        text = CliRunner().invoke(app, [*name.split(), "--help"], env={"COLUMNS": "80"}, terminal_width=80).output
        assert "…" not in text, f"kdc {name} --help truncates:\n{text}"
        for param in command.params:
            for option in (*param.opts, *param.secondary_opts):
                if option.startswith("--"):
                    assert option in text, f"kdc {name} --help lacks {option}"
    serve = CliRunner().invoke(app, ["serve", "--help"]).output
    assert "--runtime" not in serve
    assert "[default: the first of these the run has]" in " ".join(
        CliRunner().invoke(app, ["export", "--help"], terminal_width=200).output.split())


def test_train_at_6x_with_a_centre_fraction_scores_the_fastmri_crop(tmp_path, write_fastmri):
    """Issue 10 item 7: --acc 6 --center-fraction 0.07 and --crop through kdc train and kdc evaluate."""
    root = tmp_path / "knee"
    for split, name, seed in (("train", "a", 0), ("val", "b", 1)):
        write_fastmri(root / split / f"{name}.h5", make_phantom(1, 330, 340, seed=seed))
    run = tmp_path / "run"
    kdc("train", "--model", "student", "--data", str(root), "--acc", "6", "--center-fraction", "0.07", "--crop",
        "--out", str(run), "--epochs", "1")
    mask = np.load(run / "mask.npy")
    assert mask.shape == (330, 340) and np.fft.fftshift(mask[0])[158:182].all()  # round(340 * 0.07) = 24 lines
    assert 5 < mask.size / mask.sum() < 7
    settings = json.loads((run / "run.json").read_text())
    assert (settings["center_fraction"], settings["crop"]) == (0.07, True)
    from kdc.data.slices import open_split

    item = open_split(root, "val", 6, center_fraction=0.07, crop=(320, 320))[0]
    assert item["target"].shape == (1, 320, 320)
    table = json.loads(kdc("evaluate", str(run), "--json", str(tmp_path / "t.json")).stdout and
                       (tmp_path / "t.json").read_text())
    assert table["crop"] is True and table["center_fraction"] == 0.07


def test_crafted_checkpoint_and_mask_directory_give_one_line_errors(tmp_path):
    import torch

    student = tmp_path / "student.pt"
    save_checkpoint(student, build_model("student"), {"role": "student", "acceleration": 4, "image_size": [24, 24]})
    payload = torch.load(student, weights_only=True)
    payload["config"] = json.dumps({"arch": "dccnn", "cascades": 5, "convs": 3, "channels": 10**6})
    torch.save(payload, tmp_path / "crafted.pt")
    result = kdc("export", str(tmp_path / "crafted.pt"), "--out", str(tmp_path / "x.onnx"), check=False)
    assert_user_error(result, "crafted.pt", "'channels': 1000000")
    result = kdc("export", str(student), "--out", str(tmp_path / "x.onnx"), "--mask", str(tmp_path), check=False)
    assert_user_error(result, str(tmp_path), "mask file not found (it is a directory)")
    assert not (tmp_path / "x.onnx").exists()


def test_empty_images_give_a_one_line_error(dataset, tmp_path):
    with h5py.File(dataset / "val" / "c.h5", "w") as file:
        file["volfs"] = np.zeros((0, 0, 5))
    result = kdc("train", "--model", "student", "--data", str(dataset), "--out", str(tmp_path / "r"), check=False)
    assert_user_error(result, "c.h5", "0x0 images, expected at least 2x2")


def test_a_full_disk_during_export_is_one_line_and_leaves_nothing(tmp_path):
    """The export's writes fail as on a full disk (a file-size limit: EFBIG, as ENOSPC an OSError)."""
    student = tmp_path / "student.pt"
    save_checkpoint(student, build_model("student"), {"role": "student", "acceleration": 4, "image_size": [24, 24]})
    limit = ("import resource, signal, sys, runpy; signal.signal(signal.SIGXFSZ, signal.SIG_IGN); "
             "resource.setrlimit(resource.RLIMIT_FSIZE, (4096, 4096)); sys.argv = ['kdc', *sys.argv[1:]]; "
             "runpy.run_module('kdc', run_name='__main__')")
    out = tmp_path / "out"
    out.mkdir()
    result = subprocess.run([sys.executable, "-c", limit, "export", str(student), "--out", str(out / "s.onnx")],
                            capture_output=True, text=True, timeout=600)
    assert_user_error(result, "File too large")
    assert list(out.iterdir()) == []


def test_a_vdsr_student_is_refused_by_evaluate(dataset, tmp_path):
    run = tmp_path / "run"
    kdc("train", "--model", "student", "--data", str(dataset), "--out", str(run), "--epochs", "1")
    save_checkpoint(run / "student.pt", build_model("sr_student"), {"role": "student"})
    assert_user_error(kdc("evaluate", str(run), check=False), "student.pt", "a VDSR cannot be the student")


def test_scoring_images_of_another_size_is_said(dataset, tmp_path, write_kdmri):
    run = tmp_path / "run"
    kdc("train", "--model", "student", "--data", str(dataset), "--out", str(run), "--epochs", "1")
    other = tmp_path / "other"
    for split, seed in (("train", 0), ("val", 1)):
        write_kdmri(other / split / "v.h5", make_phantom(2, 32, 32, seed=seed))
    result = kdc("evaluate", str(run), "--data", str(other))
    assert "warning: student was trained on 24x24 images; scoring it on 32x32 images" in result.stderr
