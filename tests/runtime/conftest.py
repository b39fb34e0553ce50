"""Fixtures of the runtime tests: real artefacts written by ``kdc.export.export_model`` from tiny checkpoints."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

CPP_EXAMPLE = Path(__file__).parents[2] / "examples" / "cpp"
SIZE = (40, 32)  # not square, so that H and W cannot be swapped unnoticed


@dataclass(frozen=True)
class Artefacts:
    run: Path
    teacher_pt: Path
    student_pt: Path
    student_onnx: Path  # mask input
    teacher_onnx: Path  # mask input
    baked_onnx: Path  # student, mask baked in
    student_xml: Path  # OpenVINO IR, mask input
    mask: np.ndarray  # (H, W) uncentred, as used for export


@pytest.fixture(scope="session")
def artefacts(tmp_path_factory) -> Artefacts:
    from kdc.mri.masks import cartesian_mask
    from kdc.export import export_model
    from kdc.models import DCCNN, save_checkpoint

    import torch

    run = tmp_path_factory.mktemp("run")
    mask = cartesian_mask("random", 4, SIZE, seed=1)
    np.save(run / "mask.npy", mask)
    for seed, (role, convs) in enumerate((("teacher", 4), ("student", 3))):
        torch.manual_seed(seed)
        meta = {"role": role, "acceleration": 4, "image_size": list(SIZE), "mask_kind": "random", "mask_seed": 1}
        save_checkpoint(run / f"{role}.pt", DCCNN(cascades=2, convs=convs, channels=4), meta)
    out = tmp_path_factory.mktemp("exported")
    export_model(run / "teacher.pt", out / "teacher.onnx")
    export_model(run / "student.pt", out / "student.onnx")
    export_model(run / "student.pt", out / "student_baked.onnx", bake_mask=True)
    export_model(run / "student.pt", out / "student.xml", fmt="openvino")
    return Artefacts(run, run / "teacher.pt", run / "student.pt", out / "student.onnx", out / "teacher.onnx",
                     out / "student_baked.onnx", out / "student.xml", mask)


def cpu_has_bf16() -> bool:
    from kdc.runtime.session import openvino_core

    return "BF16" in openvino_core().get_property("CPU", "OPTIMIZATION_CAPABILITIES")


needs_bf16 = pytest.mark.skipif(not cpu_has_bf16(), reason="this CPU has no bf16: OpenVINO runs f32")


@pytest.fixture(scope="session")
def bf16_onnx(artefacts, tmp_path_factory) -> Path:
    """The student exported with ``--precision bf16`` (gated on OpenVINO at bf16)."""
    from kdc.export import export_model

    if not cpu_has_bf16():
        pytest.skip("this CPU has no bf16: OpenVINO runs f32")
    out = tmp_path_factory.mktemp("bf16") / "student_bf16.onnx"
    export_model(artefacts.student_pt, out, precision="bf16", max_psnr_drop=1.0)
    return out


@pytest.fixture(scope="session")
def bf16_xml(artefacts, tmp_path_factory) -> Path:
    """The student exported with ``--precision bf16`` as an OpenVINO IR (its DC marked to stay at f32)."""
    from kdc.export import export_model

    if not cpu_has_bf16():
        pytest.skip("this CPU has no bf16: OpenVINO runs f32")
    out = tmp_path_factory.mktemp("bf16") / "student_bf16.xml"
    export_model(artefacts.student_pt, out, fmt="openvino", precision="bf16", max_psnr_drop=1.0)
    return out


@pytest.fixture(scope="session")
def images() -> np.ndarray:
    """Three real MRI slices ``(3, H, W)`` (kdc's validation images)."""
    from kdc.data.demo import validation_images

    return validation_images(SIZE, 3)


@pytest.fixture(scope="session")
def full_kspace(images) -> np.ndarray:
    """Fully sampled uncentred k-space ``(3, 2, H, W)`` float32 of :func:`images`."""
    full = np.fft.fft2(images, norm="ortho")
    return np.stack([full.real, full.imag], axis=1).astype(np.float32)


@pytest.fixture(scope="session")
def kspace(artefacts, full_kspace) -> np.ndarray:
    """Undersampled k-space ``(3, 2, H, W)`` of real MRI slices (kdc's validation images), as float32."""
    return full_kspace * artefacts.mask


def with_contract(source: Path, out: Path, edit) -> Path:
    """A copy of the exported ONNX ``source`` whose contract is ``edit(contract)`` (edited in place)."""
    import json

    import onnx

    model = onnx.load(source)
    entry = next(prop for prop in model.metadata_props if prop.key == "kdc.contract")
    contract = json.loads(entry.value)
    edit(contract)
    entry.value = json.dumps(contract)
    onnx.save(model, out)
    return out


@pytest.fixture(scope="session")
def faulty_onnx(artefacts, tmp_path_factory) -> Path:
    """A graph with the student's contract that always fails inside onnxruntime: it gathers k-space channel
    5 x max(mask), out of range, and shape inference cannot see it. The server must answer it with 500."""
    import onnx
    from onnx import TensorProto, helper

    height, width = SIZE
    contract = next(p.value for p in onnx.load(artefacts.student_onnx).metadata_props if p.key == "kdc.contract")
    graph = helper.make_graph(
        [helper.make_node("ReduceMax", ["mask"], ["peak"], keepdims=0),
         helper.make_node("Mul", ["peak", "five"], ["scaled"]),
         helper.make_node("Cast", ["scaled"], ["index"], to=TensorProto.INT64),
         helper.make_node("Reshape", ["index", "single"], ["channel"]),
         helper.make_node("Gather", ["kspace", "channel"], ["image"], axis=1)],
        "faulty",
        [helper.make_tensor_value_info("kspace", TensorProto.FLOAT, ["N", 2, height, width]),
         helper.make_tensor_value_info("mask", TensorProto.FLOAT, [1, 1, 1, width])],
        [helper.make_tensor_value_info("image", TensorProto.FLOAT, ["N", 1, height, width])],
        [helper.make_tensor("five", TensorProto.FLOAT, [], [5.0]),
         helper.make_tensor("single", TensorProto.INT64, [1], [1])],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
    model.ir_version = 9
    helper.set_model_props(model, {"kdc.contract": contract})
    path = tmp_path_factory.mktemp("faulty") / "faulty.onnx"
    onnx.save(model, path)
    return path


def cpp_readme_block(section: str) -> str:
    """The first bash block of ``section`` (e.g. ``Build``) of examples/cpp/README.md, as a user copies it."""
    match = re.search(rf"## {section}\n.*?```bash\n(.*?)```", (CPP_EXAMPLE / "README.md").read_text(), re.S)
    assert match, f"examples/cpp/README.md has no bash block under {section}"
    return match.group(1)


def fresh_clone_environment() -> dict[str, str]:
    """This process's environment with the virtual environment not activated (its bin not on PATH), as in a fresh
    clone's shell."""
    venv_bin = (Path(sys.prefix) / "bin").resolve()
    path = os.pathsep.join(p for p in os.environ["PATH"].split(os.pathsep) if Path(p).resolve() != venv_bin)
    return {**{k: v for k, v in os.environ.items() if k != "VIRTUAL_ENV"}, "PATH": path}


@pytest.fixture(scope="session")
def cpp_build(tmp_path_factory) -> Path:
    """examples/cpp built with g++/CMake/Ninja against the OpenVINO of the pip wheel (and libismrmrd where
    installed) by the README's Build steps, run as written from the root of a fresh clone whose ``.venv`` (this
    interpreter's environment) is not activated; skip, saying why, where a compiler or build tool is missing."""
    missing = [tool for tool in ("g++", "cmake", "ninja") if shutil.which(tool) is None]
    if missing:
        pytest.skip(f"cannot build examples/cpp: {', '.join(missing)} not installed (`make deps` installs them)")
    clone = tmp_path_factory.mktemp("clone")
    (clone / "examples").symlink_to(CPP_EXAMPLE.parent)
    (clone / ".venv").symlink_to(sys.prefix)
    result = subprocess.run(["bash", "-e", "-c", cpp_readme_block("Build")], cwd=clone, env=fresh_clone_environment(),
                            capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stdout + result.stderr
    return clone / "build" / "cpp"
