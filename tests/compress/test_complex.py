"""``kdc distill --image complex`` as a user runs it (real subprocesses), on fastMRI files of complex images (phantoms
with a smooth phase, written by ``kdc data build``'s own writer), then ``kdc export`` and the torch-free runtime."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from kdc.data.build import write_fastmri_volume
from kdc.data.slices import open_split
from kdc.mri.simulate import complex_coil_images
from tests.conftest import make_phantom
from tests.test_cli import SHAPE, assert_user_error, dataset, kdc  # noqa: F401 (dataset is a fixture)


@pytest.fixture
def complex_dataset(tmp_path) -> Path:
    """Two train volumes and one val volume of complex images (smooth phase) as fully sampled fastMRI files."""
    root = tmp_path / "complex"
    for split, name, seed in (("train", "a", 0), ("train", "b", 1), ("val", "c", 2)):
        (root / split).mkdir(parents=True, exist_ok=True)
        images = complex_coil_images(make_phantom(4, *SHAPE, seed=seed), 1, seed)
        write_fastmri_volume(root / split / f"{name}.h5", images, multicoil=False)
    return root


def test_complex_distill_export_and_runtime(complex_dataset, tmp_path):
    run = tmp_path / "run"
    out = kdc("distill", "--image", "complex", "--data", str(complex_dataset), "--out", str(run), "--epochs", "1",
              "--batch-size", "2").stdout
    for row in ("| zero-filled |", "| teacher | 144,650 |", "| student | 52,170 |", "| kd_student | 52,170 |"):
        assert row in out
    assert "4x complex" in out
    settings = json.loads((run / "run.json").read_text())
    assert (settings["task"], settings["image"]) == ("recon", "complex")

    from kdc.models import load_checkpoint

    _, meta = load_checkpoint(run / "kd_student.pt")
    assert meta["task"] == "recon_complex"
    assert "| kd_student | 52,170 |" in kdc("evaluate", str(run)).stdout

    import kdc.runtime as rt

    val = open_split(complex_dataset, "val", 4, image="complex")
    items = [val[i] for i in range(2)]
    kspace = np.stack([item["kspace"] for item in items])
    for lowering in ("masked", "matmul", "dft"):
        onnx = tmp_path / f"{lowering}.onnx"
        kdc("export", str(run), "--out", str(onnx), "--dc", lowering)
        model = rt.load(onnx)
        assert model.contract.output_kind == "complex"
        image = model.reconstruct(kspace, val.mask, output="complex")[:, 0]
        target = np.stack([item["target"][0] + 1j * item["target"][1] for item in items])
        assert np.abs(image - target).mean() < np.abs(target).mean()  # a reconstruction, phase included


def test_the_image_kind_must_fit_the_data(dataset, complex_dataset, tmp_path):  # noqa: F811 (fixture)
    result = kdc("distill", "--image", "complex", "--data", str(dataset), "--out", str(tmp_path / "a"), check=False)
    assert_user_error(result, "a.h5: holds magnitude images", "a complex model needs complex k-space")
    assert not (tmp_path / "a").exists()
    # A magnitude model on complex data trains on the magnitude and says once that the phase is dropped.
    result = kdc("train", "--model", "student", "--data", str(complex_dataset), "--out", str(tmp_path / "b"),
                 "--epochs", "1")
    assert result.stderr.count("the phase is dropped") == 1
    result = kdc("train", "--model", "student", "--task", "sr", "--image", "complex", "--data", str(dataset),
                 "--out", str(tmp_path / "c"), check=False)
    assert_user_error(result, "task 'sr' has magnitude images only")
