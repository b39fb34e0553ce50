"""``kdc export --precision``: bf16 gated on PSNR on OpenVINO, int8 as --quantize int8, recorded in the contract."""

import copy

import onnx
import pytest
import torch
from typer.testing import CliRunner

from kdc.data.demo import validation_images
from kdc.export import ExportError, export_model
from kdc.export.onnx_graph import read_contract
from kdc.mri.masks import cartesian_mask
from kdc.runtime.session import openvino_core

from .helpers import complex_model, tiny_model
from .test_cli import app

SIZE = (32, 32)
IMAGES = validation_images(SIZE, 8)  # 4 gate slices keep the tests fast; the default is 32 (16 gate)
needs_bf16 = pytest.mark.skipif("BF16" not in openvino_core().get_property("CPU", "OPTIMIZATION_CAPABILITIES"),
                                reason="this CPU has no bf16: OpenVINO runs f32")


@pytest.fixture
def mask():
    mask = cartesian_mask("random", 4, SIZE, seed=1)
    assert mask[0, 0] == 1  # samples the k = 0 column, which data consistency restores exactly
    return mask


def export(model, out, mask, **options):
    return export_model(model, out, mask=mask, role="student", images=IMAGES, **options)


def bf16_losing_model():
    """A tiny DC-CNN whose cascades add a constant 64 that data consistency removes: in float32 the constant's
    k-space (the sampled k = 0 column only) is replaced exactly, so the reconstruction is the plain model's; in bf16
    an image near 64 keeps 8 bits of mantissa (steps of 0.25 to 0.5), and the reconstruction truly loses."""
    model = copy.deepcopy(tiny_model())
    with torch.no_grad():
        for cascade in model.cascades:
            cascade.convs[-1].bias += 64.0
    return model


@needs_bf16
def test_bf16_export_is_gated_recorded_and_run_on_openvino_at_bf16_by_default(model, mask, tmp_path):
    from kdc.runtime import load

    report = export(model, tmp_path / "m.onnx", mask, precision="bf16")
    entry = report.metadata["precision"]
    assert (entry["name"], entry["engine"], entry["inference_precision"]) == ("bf16", "openvino", "bf16")
    assert entry["runtime"].startswith("openvino ") and entry["runtime"].endswith(" CPU bf16")
    gate = entry["gate"]
    assert gate["gate_slices"] == 4 and gate["max_psnr_drop"] == 0.05
    assert gate["psnr_drop"] == pytest.approx(gate["psnr_fp32"] - gate["psnr"]) and gate["psnr_drop"] <= 0.05
    assert 0 < gate["max_abs_error_vs_fp32"] < 0.05  # bf16: close to, not equal to, float32
    proto = onnx.load(report.path)
    assert read_contract(proto) == report.metadata and report.metadata["quantization"] is None
    assert {p.key: p.value for p in proto.metadata_props}["kdc.precision"] == "bf16"
    runtime = load(report.path, threads=1)
    assert runtime.engine == "openvino" and runtime.backend.endswith(" bf16") and runtime.warnings == []


@needs_bf16
def test_a_bf16_openvino_ir_keeps_its_data_consistency_at_f32(model, mask, tmp_path):
    """Only the CNN runs at bf16: OpenVINO's runtime model of the written IR has every matrix product (the DC) at
    f32 and every convolution at bf16; the contract counts the nodes kept at f32. An ONNX file cannot carry it."""
    from kdc.runtime import load

    report = export(model, tmp_path / "m.xml", mask, fmt="openvino", precision="bf16")
    assert report.metadata["precision"]["f32_nodes"] > 0
    runtime = load(report.path, threads=1)  # as kdc.runtime runs it by default
    assert runtime.backend.endswith(" bf16")
    precisions = {}
    for node in runtime.compiled.get_runtime_model().get_ordered_ops():
        info = node.get_rt_info()
        precisions.setdefault(info["layerType"].astype(str), set()).add(info["runtimePrecision"].astype(str))
    assert precisions["Convolution"] == {"bf16"} and precisions["MatMul"] == {"f32"}
    onnx_entry = export(model, tmp_path / "m.onnx", mask, precision="bf16").metadata["precision"]
    assert onnx_entry["f32_nodes"] == 0


@needs_bf16
def test_bf16_gate_refuses_a_model_that_loses_at_bf16_and_writes_nothing(mask, tmp_path):
    model = bf16_losing_model()
    report = export(model, tmp_path / "f32.onnx", mask, tolerance=1e-3)  # exact in float32 (parity gate)
    assert report.metadata["precision"] == {"name": "f32", "engine": "ort", "inference_precision": "f32",
                                            "runtime": report.metadata["parity"]["runtime"], "gate": "parity",
                                            "rewrites": []}  # 8 -> 1: not rewritten
    out = tmp_path / "out" / "m.onnx"
    with pytest.raises(ExportError, match=r"^precision gate failed: bf16 \(openvino \S+ CPU bf16\) PSNR [0-9.]+ dB vs "
                                          r"float32 PyTorch [0-9.]+ dB on 4 validation slices, a drop of [0-9.]+ dB > "
                                          r"--max-psnr-drop 0.05 dB; .*m.onnx not written$"):
        export(model, out, mask, tolerance=1e-3, precision="bf16")
    assert not out.parent.exists()


@needs_bf16
def test_bf16_gate_takes_a_tighter_or_looser_max_psnr_drop(model, mask, tmp_path):
    with pytest.raises(ExportError, match="precision gate failed: .* > --max-psnr-drop -1 dB"):
        export(model, tmp_path / "strict.onnx", mask, precision="bf16", max_psnr_drop=-1)
    report = export(bf16_losing_model(), tmp_path / "loose.xml", mask, tolerance=1e-3, precision="bf16",
                    max_psnr_drop=100)
    assert report.metadata["precision"]["gate"]["psnr_drop"] > 0.05  # it truly loses: the 0.05 dB gate refused it
    assert report.metadata["precision"]["engine"] == "openvino" and report.metadata["format"] == "openvino"


def test_int8_precision_is_quantize_int8_and_records_its_gate(model, mask, tmp_path):
    report = export(model, tmp_path / "m.onnx", mask, precision="int8")
    entry, quantization = report.metadata["precision"], report.metadata["quantization"]
    assert quantization["mode"] == "int8" and quantization["max_psnr_drop"] == 0.1
    assert (entry["name"], entry["engine"], entry["inference_precision"]) == ("int8", "ort", "f32")
    assert entry["gate"]["psnr_drop"] == quantization["psnr_drop"] and entry["runtime"] == quantization["runtime"]


@pytest.mark.parametrize("out,options,message", [
    ("m.onnx", {"precision": "fp8"}, r"unknown --precision 'fp8': expected one of \['f32', 'bf16', 'int8'\]"),
    ("m.onnx", {"precision": "bf16", "quantize": "int8"}, "--precision bf16 and --quantize int8 contradict each other"),
    ("m.pt", {"precision": "bf16"}, "--precision bf16 runs on OpenVINO: it needs --format onnx or openvino, not "
                                    "torchscript"),
    ("m.onnx", {"precision": "bf16", "max_psnr_drop": float("nan")}, "--max-psnr-drop must be a finite number"),
])
def test_precision_mistakes_are_refused_before_exporting(model, mask, tmp_path, out, options, message):
    with pytest.raises(ExportError, match=message):
        export(model, tmp_path / out, mask, **options)
    assert not (tmp_path / out).exists()


def test_bf16_is_gated_for_magnitude_dc_cnns_only(mask, tmp_path):
    with pytest.raises(ExportError, match="--precision bf16 supports magnitude reconstruction .* not 'recon_complex'"):
        export(complex_model(), tmp_path / "m.onnx", mask, precision="bf16")


@needs_bf16
def test_cli_prints_the_bf16_gate_and_a_refusal_as_one_line(run_dir, tmp_path):
    ok, refused = tmp_path / "ok.onnx", tmp_path / "refused.onnx"
    result = CliRunner().invoke(app, ["export", str(run_dir), "--out", str(ok), "--precision", "bf16"])
    assert result.exit_code == 0, result.output
    assert "bf16 on openvino " in result.output and "runs on OpenVINO at bf16 by default" in result.output
    result = CliRunner().invoke(app, ["export", str(run_dir), "--out", str(refused), "--precision", "bf16",
                                      "--max-psnr-drop", "-1"])
    assert result.exit_code == 1 and len(result.output.strip().splitlines()) == 1
    assert result.output.startswith("error: precision gate failed: bf16") and not refused.exists()
