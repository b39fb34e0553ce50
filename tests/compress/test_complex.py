"""``kdc distill --image complex`` as a user runs it (real subprocesses), on complex slices made from real-valued
phantoms with a smooth phase (tests/complex_data.py), then ``kdc export`` and the torch-free runtime."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from tests.complex_data import PHASED_KDC, open_phased_split
from tests.conftest import make_phantom
from tests.test_cli import assert_user_error, kdc

SHAPE = (24, 24)


def phased_kdc(*args: str, check: bool = True) -> subprocess.CompletedProcess:
    """``kdc ARGS`` reading every split as complex images."""
    result = subprocess.run([sys.executable, "-c", PHASED_KDC, *args], capture_output=True, text=True, timeout=600)
    if check and result.returncode != 0:
        raise AssertionError(f"kdc {' '.join(args)} failed:\n{result.stdout}\n{result.stderr}")
    return result


@pytest.fixture
def dataset(tmp_path, write_kdmri) -> Path:
    root = tmp_path / "data"
    for split, name, seed in (("train", "a", 0), ("val", "c", 2)):
        write_kdmri(root / split / f"{name}.h5", make_phantom(4, *SHAPE, seed=seed))
    return root


def test_complex_distill_export_and_runtime(dataset, tmp_path):
    run = tmp_path / "run"
    out = phased_kdc("distill", "--image", "complex", "--data", str(dataset), "--out", str(run), "--epochs", "1",
                     "--batch-size", "2").stdout
    for row in ("| zero-filled |", "| teacher | 144,650 |", "| student | 52,170 |", "| kd_student | 52,170 |"):
        assert row in out
    assert "4x complex" in out
    settings = json.loads((run / "run.json").read_text())
    assert (settings["task"], settings["image"]) == ("recon", "complex")

    from kdc.models import load_checkpoint

    _, meta = load_checkpoint(run / "kd_student.pt")
    assert meta["task"] == "recon_complex"
    assert "| kd_student | 52,170 |" in phased_kdc("evaluate", str(run)).stdout

    import kdc.runtime as rt

    val = open_phased_split(dataset, "val", 4)
    items = [val[i] for i in range(2)]
    kspace = np.stack([item["kspace"] for item in items])
    for lowering in ("masked", "matmul", "dft"):
        onnx = tmp_path / f"{lowering}.onnx"
        kdc("export", str(run), "--out", str(onnx), "--dc", lowering)
        model = rt.load(onnx)
        assert model.contract["output_kind"] == "complex"
        image = model.reconstruct(kspace, val.mask, output="complex")[:, 0]
        target = np.stack([item["target"][0] + 1j * item["target"][1] for item in items])
        assert np.abs(image - target).mean() < np.abs(target).mean()  # a reconstruction, phase included


def test_the_image_kind_must_fit_the_data(dataset, tmp_path):
    result = kdc("distill", "--image", "complex", "--data", str(dataset), "--out", str(tmp_path / "a"), check=False)
    assert_user_error(result, str(dataset), "'target' holds magnitude images", "a complex model needs")
    result = phased_kdc("train", "--model", "student", "--data", str(dataset), "--out", str(tmp_path / "b"),
                        check=False)
    assert_user_error(result, "'target' holds complex images", "use --image complex")
    result = kdc("train", "--model", "student", "--task", "sr", "--image", "complex", "--data", str(dataset),
                 "--out", str(tmp_path / "c"), check=False)
    assert_user_error(result, "task 'sr' has magnitude images only")
