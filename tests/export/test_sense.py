"""``kdc export`` of kdc's multi-coil SENSE models: one ONNX or OpenVINO file for any coil count, gated on the
relative error, and ``kdc reconstruct`` with it on an 8-coil fastMRI file and an 8-coil ISMRMRD file."""

from __future__ import annotations

import json
import shutil
import subprocess

import h5py
import numpy as np
import pytest
import torch
from typer.testing import CliRunner

import kdc.runtime as rt
from kdc.cli import app
from kdc.data.demo import validation_images
from kdc.export import export_model
from kdc.export.architectures import relative_error
from kdc.models import SenseDCCNN, SenseVarNet, save_checkpoint
from kdc.mri.simulate import complex_coil_images
from tests.models.test_sense import coil_inputs, trained_like
from tests.runtime.test_reconstruct_multicoil import undersample

SIZE = (32, 32)


@pytest.fixture(scope="module")
def exported(tmp_path_factory) -> tuple[SenseVarNet, object]:
    """A tiny trained-like SENSE VarNet, saved as a kdc checkpoint and exported to ONNX with dynamic coils."""
    directory = tmp_path_factory.mktemp("sense")
    model = trained_like(SenseVarNet(2, 4, 1, 2, 1))
    save_checkpoint(directory / "kd_student.pt", model, {"role": "kd_student", "image_size": list(SIZE),
                                                          "acceleration": 4, "task": "recon_multicoil"})
    return model, export_model(directory, directory / "student.onnx")


def test_export_is_gated_on_the_relative_error_with_a_dynamic_coil_count(exported):
    _, report = exported
    metadata = report.metadata
    assert metadata["task"] == "recon_multicoil" and metadata["coils"] == "dynamic"
    assert metadata["parity"]["metric"] == "relative_l2" and metadata["parity"]["relative_l2_error"] <= 1e-4
    assert [runtime.split()[0] for runtime in metadata["parity"]["relative_l2_errors"]] == ["onnxruntime"]
    assert metadata["inputs"][0]["shape"] == ["N", "C", *SIZE, 2]
    assert metadata["outputs"][0]["shape"] == ["N", *SIZE]
    assert metadata["model"]["config"]["arch"] == "sense_varnet" and metadata["model"]["role"] == "kd_student"
    assert metadata["acceleration"] == 4


def test_one_onnx_file_serves_4_and_6_coils_as_pytorch_does(exported):
    model, report = exported
    session = rt.load(report.path, engine="ort")
    for coils in (4, 6):
        kspace, mask = coil_inputs(coils, size=SIZE, seed=coils)
        with torch.no_grad():
            expected = model(kspace, mask).numpy()
        got = session.run({"kspace": kspace.numpy(), "mask": mask.numpy()})["image"]
        assert got.shape == (2, *SIZE) and relative_error(got, expected) < 1e-4


def test_reconstruct_an_8_coil_fastmri_file_as_pytorch_does(tmp_path, exported, write_fastmri_multicoil):
    model, report = exported
    source = write_fastmri_multicoil(tmp_path / "scan.h5", complex_coil_images(validation_images(SIZE, 2), 8) * 3e-4)
    mask = undersample(source)
    result = CliRunner().invoke(app, ["reconstruct", str(report.path), str(source), "--out", str(tmp_path / "out"),
                                      "-f", "h5"])
    assert result.exit_code == 0, result.output
    with h5py.File(tmp_path / "out" / "scan.h5") as file:
        reconstruction = file["reconstruction"][()]
    with h5py.File(source) as file:
        kspace = torch.from_numpy(np.stack([file["kspace"][()].real, file["kspace"][()].imag], -1).astype(np.float32))
    with torch.no_grad():
        expected = model(kspace, torch.from_numpy(mask.astype(np.float32)).reshape(1, 1, 1, -1, 1)).numpy()
    assert reconstruction.shape == (2, *SIZE) and relative_error(reconstruction, expected) < 1e-4


@pytest.mark.skipif(not shutil.which("ismrmrd_generate_cartesian_shepp_logan"), reason="ismrmrd-tools (make deps)")
def test_reconstruct_an_8_coil_ismrmrd_file(tmp_path, exported):
    _, report = exported
    source = tmp_path / "phantom.h5"
    subprocess.run(["ismrmrd_generate_cartesian_shepp_logan", "-c", "8", "-m", str(SIZE[0]), "-o", str(source)],
                   check=True, capture_output=True)
    result = CliRunner().invoke(app, ["reconstruct", str(report.path), str(source), "--acc", "4", "--out",
                                      str(tmp_path / "out")])
    assert result.exit_code == 0, result.output
    assert f"1 slices {SIZE[0]}x{SIZE[1]}" in result.output
    scored = json.loads((tmp_path / "out" / "metrics.json").read_text())["volumes"]["phantom"]
    assert scored["slices"] == 1 and np.isfinite(scored["psnr"]) and np.isfinite(scored["zero_filled"]["psnr"])


def test_sense_dccnn_exports_to_openvino_too(tmp_path):
    model = trained_like(SenseDCCNN(2, 2, 4, 2, 1))
    report = export_model(model, tmp_path / "dccnn.xml", image_size=SIZE, role="student")
    metadata = report.metadata
    assert metadata["model"]["config"]["arch"] == "sense_dccnn" and metadata["coils"] == "dynamic"
    assert sorted(runtime.split()[0] for runtime in metadata["parity"]["relative_l2_errors"]) == [
        "onnxruntime", "openvino"]
    kspace, mask = coil_inputs(5, size=SIZE)
    with torch.no_grad():
        expected = model(kspace, mask).numpy()
    got = rt.load(report.path).run({"kspace": kspace.numpy(), "mask": mask.numpy()})["image"]  # OpenVINO
    assert relative_error(got, expected) < 1e-4


def test_kdc_bench_runs_the_checkpoint_in_pytorch(exported):
    _, report = exported
    checkpoint = report.path.parent / "kd_student.pt"
    result = CliRunner().invoke(app, ["bench", str(checkpoint), "--runtime", "torch", "-n", "1", "--warmup", "0",
                                      "--threads", "1"])
    assert result.exit_code == 0, result.output
    assert "kd_student" in result.output
