"""``kdc distill --image complex`` as a user runs it (real subprocesses), on complex slices made from real-valued
phantoms with a smooth phase (tests/complex_data.py), then ``kdc export`` and the torch-free runtime."""

from __future__ import annotations

import json
import subprocess

import numpy as np

from tests.complex_data import PHASED_KDC, open_phased_split
from tests.test_cli import assert_user_error, dataset, kdc  # noqa: F401 (dataset is a fixture)


def phased_kdc(*args: str, check: bool = True) -> subprocess.CompletedProcess:
    """``kdc ARGS`` reading every split as complex images."""
    return kdc(*args, check=check, program=("-c", PHASED_KDC))


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
