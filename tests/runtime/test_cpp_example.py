"""examples/cpp: build the C++ program with the OpenVINO of the pip wheel and check it against kdc.runtime."""

import os
import subprocess
from pathlib import Path

import numpy as np
import pytest

import kdc.runtime as rt

from .conftest import needs_bf16

TOLERANCE = 1e-5


@pytest.fixture(scope="module")
def program(cpp_build) -> Path:
    return cpp_build / "kdc_reconstruct"


def run_program(program: Path, model: Path, kspace: np.ndarray, mask: np.ndarray | None, tmp_path: Path):
    kspace.tofile(tmp_path / "kspace.f32")
    mask_arg = "-"
    if mask is not None:
        mask.reshape(-1).astype(np.float32).tofile(tmp_path / "mask.f32")
        mask_arg = str(tmp_path / "mask.f32")
    return subprocess.run([str(program), str(model), str(tmp_path / "kspace.f32"), mask_arg,
                           str(tmp_path / "image.f32"), "2"], capture_output=True, text=True, timeout=120,
                          env={**os.environ, "OMP_NUM_THREADS": "2"})


@pytest.mark.parametrize("name", ["student_onnx", "student_xml", "baked_onnx"])
def test_cpp_output_equals_the_runtime(program, artefacts, kspace, tmp_path, name):
    path = getattr(artefacts, name)
    model = rt.load(path)
    mask = None if model.mask_baked else rt.mask_columns(artefacts.mask, model.image_size[1])
    result = run_program(program, path, kspace, mask, tmp_path)
    assert result.returncode == 0, result.stderr
    assert "kdc contract v1, image 40x32, acceleration 4" in result.stderr and ", precision f32" in result.stderr
    image = np.fromfile(tmp_path / "image.f32", dtype=np.float32).reshape(kspace.shape[0], 1, *model.image_size)
    for engine in ("ort", "openvino"):
        if engine == "ort" and path.suffix == ".xml":
            continue
        expected = rt.load(path, engine=engine).reconstruct(kspace, mask)
        error = float(np.abs(image - expected).max())
        print(f"examples/cpp {path.name} vs kdc.runtime {engine}: max abs error {error:.2e}")
        assert error <= TOLERANCE


@needs_bf16
@pytest.mark.parametrize("name", ["bf16_onnx", "bf16_xml"])
def test_cpp_runs_a_bf16_export_at_bf16_as_the_runtime_does(program, name, request, artefacts, kspace, tmp_path):
    """The contract's validated precision reaches OpenVINO's INFERENCE_PRECISION_HINT: bf16 here, f32 for the others
    (test_cpp_output_equals_the_runtime); an IR's DC marked f32 stays f32 there too."""
    path = request.getfixturevalue(name)
    model = rt.load(path, threads=2)
    mask = rt.mask_columns(artefacts.mask, model.image_size[1])
    result = run_program(program, path, kspace, mask, tmp_path)
    assert result.returncode == 0, result.stderr
    assert ", precision bf16" in result.stderr
    image = np.fromfile(tmp_path / "image.f32", dtype=np.float32).reshape(kspace.shape[0], 1, *model.image_size)
    bf16 = model.reconstruct(kspace, mask)
    f32 = rt.load(path, precision="f32", threads=2).reconstruct(kspace, mask)
    assert np.abs(bf16 - f32).max() > 100 * TOLERANCE  # the two precisions are told apart
    assert np.abs(image - bf16).max() <= TOLERANCE


def test_readme_run_steps_work_as_written_after_the_build(cpp_build):
    """examples/cpp/README.md's first Run block, from the clone root the Build steps ran in (.venv not activated)."""
    from .conftest import cpp_readme_block, fresh_clone_environment

    clone = cpp_build.parents[1]
    result = subprocess.run(["bash", "-e", "-c", cpp_readme_block("Run")], cwd=clone, env=fresh_clone_environment(),
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout + result.stderr
    model = rt.load(clone / "student.onnx")
    kspace = np.fromfile(clone / "kspace.f32", dtype=np.float32).reshape(2, 2, *model.image_size)
    mask = np.fromfile(clone / "mask.f32", dtype=np.float32)
    image = np.fromfile(clone / "image.f32", dtype=np.float32).reshape(2, 1, *model.image_size)
    assert np.abs(image - model.reconstruct(kspace, mask)).max() <= TOLERANCE


def test_cpp_errors_are_one_line(program, artefacts, kspace, tmp_path):
    result = run_program(program, artefacts.student_onnx, kspace, None, tmp_path)
    assert result.returncode == 1 and result.stderr.strip().splitlines()[-1] == \
        "error: this model takes a mask: pass MASK.f32"
    result = run_program(program, artefacts.student_onnx, kspace[:, :1], np.ones(32), tmp_path)
    assert result.returncode == 1 and "expected (N, 2, 40, 32) float32 values" in result.stderr
    result = run_program(program, tmp_path / "absent.onnx", kspace, np.ones(32), tmp_path)
    assert result.returncode == 1 and result.stderr.strip() == f"error: {tmp_path / 'absent.onnx'}: cannot open the model"
    assert not (tmp_path / "image.f32").exists()
