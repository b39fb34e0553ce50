import json

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch

from kdc.mri.masks import cartesian_mask
from kdc.export import ExportError, export_model
from kdc.export.onnx_graph import read_contract
from kdc.runtime.session import openvino_core

from .helpers import column_mask, undersampled


def run_onnx(path, feeds):
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return session.run(["image"], {name: value.numpy() for name, value in feeds.items()})[0]


def reference(model, kspace, mask_input):
    with torch.no_grad():
        return model(kspace, mask_input).numpy()


@pytest.mark.parametrize("size", [(150, 150), (240, 240), (640, 368)])
def test_masked_onnx_matches_torch_at_kd_mri_sizes_for_batch_1_and_4(model, tmp_path, size):
    mask = cartesian_mask("random", 4, size, seed=2)
    report = export_model(model, tmp_path / "m.onnx", dc="masked", mask=mask, role="student")
    kspace, mask_input = undersampled(size, mask, count=4), column_mask(mask)
    expected = reference(model, kspace, mask_input)
    for batch in (slice(0, 1), slice(None)):
        output = run_onnx(report.path, {"kspace": kspace[batch], "mask": mask_input})
        assert output.shape == expected[batch].shape
        assert np.abs(output - expected[batch]).max() < 1e-5
    assert report.parity_error < 1e-5 and report.dc == "masked"


def test_contract_metadata_and_clean_graph(run_dir, tmp_path):
    report = export_model(run_dir, tmp_path / "m.onnx")
    proto = onnx.load(report.path)
    onnx.checker.check_model(proto, full_check=True)
    contract = read_contract(proto)
    assert contract == report.metadata
    assert contract["contract_version"] == 1
    assert [(t["name"], t["shape"], t["dtype"]) for t in contract["inputs"]] == [
        ("kspace", ["N", 2, 64, 48], "float32"), ("mask", [1, 1, 1, 48], "float32")]
    assert contract["outputs"][0]["shape"] == ["N", 1, 64, 48]
    assert contract["model"]["role"] == "kd_student" and contract["metrics"] == {"psnr": 32.0}
    assert contract["model"]["config"] == {"arch": "dccnn", "cascades": 2, "convs": 3, "channels": 8}
    assert (contract["dc_lowering"], contract["mask_baked"], contract["kspace_centred"]) == ("masked", False, False)
    assert (contract["fft_norm"], contract["output_kind"], contract["image_size"]) == ("ortho", "real part", [64, 48])
    assert contract["parity"]["max_abs_error"] == report.parity_error and contract["parity"]["slices"] == 4
    assert [i.name for i in proto.graph.input] == ["kspace", "mask"] and proto.graph.output[0].name == "image"
    assert proto.graph.input[0].type.tensor_type.shape.dim[0].dim_param == "N"
    fingerprints = [(t.data_type, tuple(t.dims), onnx.numpy_helper.to_array(t).tobytes()) for t in proto.graph.initializer]
    assert len(set(fingerprints)) == len(fingerprints)
    assert report.file_size == report.path.stat().st_size


def test_baked_mask_has_one_input_and_records_the_columns(run_dir, tmp_path):
    report = export_model(run_dir, tmp_path / "m.onnx", bake_mask=True, role="teacher")
    mask = np.load(run_dir / "mask.npy")
    kspace = undersampled((64, 48), mask)
    proto = onnx.load(report.path)
    assert [i.name for i in proto.graph.input] == ["kspace"]
    contract = read_contract(proto)
    assert contract["mask_baked"] and contract["mask_columns"] == np.flatnonzero(mask[0]).tolist()
    assert contract["model"]["role"] == "teacher"
    from kdc.models import load_checkpoint

    teacher, _ = load_checkpoint(run_dir / "teacher.pt")
    expected = reference(teacher, kspace, column_mask(mask))
    assert np.abs(run_onnx(report.path, {"kspace": kspace}) - expected).max() < 1e-5


def test_one_file_serves_several_accelerations(model, tmp_path):
    size = (64, 48)
    report = export_model(model, tmp_path / "m.onnx", dc="masked", mask=cartesian_mask("random", 4, size))
    mask8 = cartesian_mask("equispaced", 8, size, seed=5)
    kspace, mask_input = undersampled(size, mask8), column_mask(mask8)
    output = run_onnx(report.path, {"kspace": kspace, "mask": mask_input})
    assert np.abs(output - reference(model, kspace, mask_input)).max() < 1e-5


@pytest.mark.parametrize("dc", ["matmul", "dft"])
def test_2d_mask_is_a_full_size_input(model, tmp_path, dc):
    size = (48, 40)
    mask = (np.random.default_rng(1).random(size) < 0.4).astype(np.float32)
    report = export_model(model, tmp_path / "m.onnx", dc=dc, mask=mask)
    assert report.metadata["inputs"][1]["shape"] == [1, 1, 48, 40]
    kspace, mask_input = undersampled(size, mask), torch.from_numpy(mask[None, None])
    output = run_onnx(report.path, {"kspace": kspace, "mask": mask_input})
    assert np.abs(output - reference(model, kspace, mask_input)).max() < 1e-4


def test_openvino_ir_runs_at_f32_with_contract_in_rt_info(run_dir, tmp_path):
    report = export_model(run_dir, tmp_path / "ir" / "m.xml", fmt="openvino", dc="matmul")
    assert sorted(p.name for p in report.path.parent.iterdir()) == ["m.bin", "m.xml"]
    core = openvino_core()  # kdc's one Core: see its docstring
    ir = core.read_model(report.path)
    contract = json.loads(ir.get_rt_info(["kdc", "contract"]).astype(str))
    assert contract["dc_lowering"] == "matmul" and contract["format"] == "openvino"
    assert any(r.startswith("openvino") for r in contract["parity"]["errors"])
    compiled = core.compile_model(ir, "CPU", {"INFERENCE_PRECISION_HINT": "f32"})
    mask = np.load(run_dir / "mask.npy")
    kspace, mask_input = undersampled((64, 48), mask), column_mask(mask)
    from kdc.models import load_checkpoint

    student, _ = load_checkpoint(run_dir / "kd_student.pt")
    output = compiled({"kspace": kspace.numpy(), "mask": mask_input.numpy()})["image"]
    assert np.abs(output - reference(student, kspace, mask_input)).max() < 1e-4


def test_parity_gate_failure_writes_nothing(model, tmp_path):
    mask = cartesian_mask("random", 4, (48, 40))
    with pytest.raises(ExportError, match=r"parity gate failed: max abs error [0-9.e-]+ > tolerance 1e-12"):
        export_model(model, tmp_path / "m.onnx", dc="matmul", mask=mask, tolerance=1e-12)
    assert list(tmp_path.iterdir()) == []


def write_file(path, content):
    path.write_bytes(content)
    return path


@pytest.mark.parametrize(
    "make_source, options, message",
    [
        (lambda d, run: write_file(d / "bad.pt", b"not a checkpoint"), {}, "bad.pt: not a kdc checkpoint"),
        (lambda d, run: d / "missing.pt", {}, "missing.pt: checkpoint not found"),
        (lambda d, run: (d / "empty").mkdir() or d / "empty", {}, "has no kd_student.pt / student.pt / teacher.pt"),
        (lambda d, run: run, {"fmt": "tflite"}, "unknown format 'tflite'"),
        (lambda d, run: run, {"dc": "fast"}, "unknown DC lowering 'fast'"),
        (lambda d, run: run, {"image_size": (64, 64), "mask": cartesian_mask("random", 4, (64, 48))},
         "does not match image shape"),
        (lambda d, run: run, {"mask": np.eye(64, 48, dtype=np.float32), "dc": "masked"}, "needs a 1-D Cartesian"),
        (lambda d, run: run, {"fmt": "openvino"}, "--format openvino writes files ending in .xml"),
        (lambda d, run: run, {"fmt": "pt2"}, "--format pt2 writes files ending in .pt2"),
        (lambda d, run: run, {"role": "vdsr"}, "has no vdsr.pt"),
    ],
)
def test_bad_input_is_a_clear_error_and_writes_nothing(run_dir, tmp_path, make_source, options, message):
    work = tmp_path / "work"
    work.mkdir()
    source = make_source(work, run_dir)
    out = tmp_path / "out" / "m.onnx"
    with pytest.raises(ExportError, match=message):
        export_model(source, out, **options)
    assert not out.parent.exists()


@pytest.mark.parametrize("name, fmt", [("m.onnx", "onnx"), ("m.xml", "openvino"), ("m.ts", "torchscript"),
                                       ("m.pt", "torchscript"), ("m.pt2", "pt2")])
def test_format_follows_the_file_suffix(run_dir, tmp_path, name, fmt):
    report = export_model(run_dir, tmp_path / name)
    assert report.format == fmt and report.metadata["format"] == fmt
    assert (tmp_path / "m.bin").exists() == (fmt == "openvino")
    if fmt == "onnx":
        onnx.checker.check_model(str(tmp_path / name))


def test_a_suffix_without_a_format_is_refused(run_dir, tmp_path):
    with pytest.raises(ExportError, match=r"m.onnxx: cannot tell the format from the suffix '.onnxx'"):
        export_model(run_dir, tmp_path / "m.onnxx")
    assert list(tmp_path.iterdir()) == [run_dir]


def test_size_redraws_the_training_mask_of_a_run(run_dir, tmp_path):
    """``--size`` on a run directory: the run's mask.npy is 64x48, so the training mask is drawn at the new size."""
    report = export_model(run_dir, tmp_path / "m.onnx", image_size=(32, 40), bake_mask=True)
    expected = cartesian_mask("random", 4, (32, 40), seed=0)
    assert report.metadata["image_size"] == [32, 40]
    assert report.metadata["mask_columns"] == np.flatnonzero(expected[0]).tolist()
    same = export_model(run_dir, tmp_path / "same.onnx", bake_mask=True)  # the trained size keeps mask.npy
    assert same.metadata["mask_columns"] == np.flatnonzero(np.load(run_dir / "mask.npy")[0]).tolist()
