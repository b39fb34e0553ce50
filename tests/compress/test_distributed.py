"""``kdc distill --distributed`` under torchrun (2 CPU processes, gloo) against the same recipe in one process."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from kdc.compress import recipe
from kdc.models import build_model, save_checkpoint
from tests.conftest import make_phantom, write_mask_without_dc

SHAPE = (16, 16)
TRAINED = ("student", "student_at", "kd_student")


@pytest.fixture(scope="module")
def reference(tmp_path_factory, write_kdmri) -> tuple[list[str], Path]:
    """Arguments of a tiny distill run and the run directory it gives in one process.

    7 training slices: with --batch-size 3 the last global batch has 1 slice, so one of two ranks gets none.
    In fp32: the weights of one and two processes agree to float32 error, which bf16 rounding of the split batches
    would exceed.
    """
    tmp_path = tmp_path_factory.mktemp("distributed")
    root = tmp_path / "data"
    write_mask_without_dc(root, SHAPE)
    for split, name, slices, seed in (("train", "a", 4, 0), ("train", "b", 3, 1), ("val", "c", 2, 2)):
        write_kdmri(root / split / f"{name}.h5", make_phantom(slices, *SHAPE, seed=seed))
    teacher = tmp_path / "teacher.pt"
    torch.manual_seed(0)
    save_checkpoint(teacher, build_model("teacher"), {"role": "teacher"})
    one = tmp_path / "one"
    recipe.distill(recipe.RunConfig(str(root), str(one), epochs=1, batch_size=3, teacher=str(teacher),
                                     precision="fp32"))
    return ["--data", str(root), "--epochs", "1", "--batch-size", "3", "--teacher", str(teacher),
            "--precision", "fp32"], one


def torchrun(*args: str) -> str:
    """``torchrun --standalone --nproc-per-node 2 -m kdc distill --distributed ARGS``."""
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
               "-m", "kdc", "distill", "--distributed", *args]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    result = subprocess.run(command, capture_output=True, text=True, timeout=300, env=env)
    assert result.returncode == 0, result.stdout + result.stderr
    return result.stdout


def assert_same_weights(a: Path, b: Path, roles=TRAINED) -> None:
    for role in roles:
        expected = torch.load(a / "state" / f"{role}.pt", weights_only=True)["model"]
        produced = torch.load(b / "state" / f"{role}.pt", weights_only=True)["model"]
        for name in expected:
            torch.testing.assert_close(produced[name], expected[name], rtol=1e-4, atol=1e-6, msg=f"{role} {name}")


def test_two_processes_train_the_weights_of_one(reference, tmp_path):
    args, one = reference
    two = tmp_path / "two"
    out = torchrun(*args, "--out", str(two))
    assert out.count("| kd_student | 49,285 |") == 1  # rank 0 alone prints the table
    assert_same_weights(one, two)
    log = (two / "train.log").read_text()
    assert all(log.count(f" {role} epoch 1/1") == 1 for role in TRAINED)  # rank 0 alone logs
    assert sorted(p.name for p in (two / "cache").iterdir()) == sorted(p.name for p in (one / "cache").iterdir())
    assert not list(two.rglob("*.tmp"))


def test_two_processes_resume_a_run_of_one(reference, tmp_path):
    """A one-process run stopped after AT pre-training is finished by two processes with --resume, and with the live
    teacher instead of the cache (neither changes the result)."""
    args, one = reference
    resumed = tmp_path / "resumed"
    shutil.copytree(one, resumed)
    for path in ("kd_student.pt", "state/kd_student.pt", "metrics.json"):
        (resumed / path).unlink()
    torchrun(*args, "--out", str(resumed), "--resume", "--no-teacher-cache")
    assert_same_weights(one, resumed)
    assert (resumed / "metrics.json").is_file()


def test_distributed_outside_torchrun_is_refused(tmp_path):
    env = {k: v for k, v in os.environ.items() if k not in ("RANK", "LOCAL_RANK", "WORLD_SIZE", "MASTER_ADDR")}
    command = [sys.executable, "-m", "kdc", "distill", "--distributed", "--out", str(tmp_path / "run")]
    result = subprocess.run(command, capture_output=True, text=True, timeout=120, env=env)
    assert result.returncode == 1
    assert result.stderr.startswith("error: --distributed: RANK, LOCAL_RANK, WORLD_SIZE, MASTER_ADDR")
    assert "torchrun --nproc-per-node" in result.stderr and len(result.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "run").exists()


def test_relational_methods_are_refused_across_processes(reference, tmp_path):
    """RKD, SP, CC and PKT compare the samples of a batch, which ranks would each see only a share of."""
    args, _ = reference
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
               "-m", "kdc", "distill", "--distributed", *args, "--method", "rkd", "--out", str(tmp_path / "run")]
    result = subprocess.run(command, capture_output=True, text=True, timeout=300,
                            env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert result.returncode != 0
    assert "error: --method rkd compares the samples of a batch, which --distributed splits" in result.stderr
    assert not (tmp_path / "run").exists()
