import json
import re

import numpy as np
import onnx
import openvino as ov
import pytest
import torch
from typer.testing import CliRunner

from kdc.data.demo import validation_images
from kdc.mri.masks import cartesian_mask
from kdc.export import ExportError, export_model
from kdc.export.cli import preset_note
from kdc.export.onnx_graph import read_contract
from kdc.runtime import load

from .helpers import column_mask, undersampled
from .test_cli import app

SIZE = (32, 32)
#: Few calibration and gate slices keep the tests fast; the default is 32.
IMAGES = validation_images(SIZE, 8)


@pytest.fixture
def mask():
    return cartesian_mask("random", 4, SIZE, seed=1)


def export(model, out, mask, **options):
    return export_model(model, out, mask=mask, role="student", images=IMAGES, **options)


def producers(graph: onnx.GraphProto) -> dict[str, onnx.NodeProto]:
    return {output: node for node in graph.node for output in node.output}


def test_int8_onnx_quantizes_the_convolutions_only_and_runs_in_the_runtime(model, mask, tmp_path):
    report = export(model, tmp_path / "m.onnx", mask, quantize="int8")
    graph = onnx.load(report.path).graph
    made_by = producers(graph)

    def consumers(name):
        return [node for node in graph.node if name in node.input]

    quantizers = [node for node in graph.node if node.op_type == "QuantizeLinear"]
    assert quantizers
    for q in quantizers:  # quantizes a convolution's output, or an activation that only convolutions read
        readers = {reader.op_type for dq in consumers(q.output[0]) for reader in consumers(dq.output[0])}
        assert made_by[q.input[0]].op_type == "Conv" or readers == {"Conv"}, q.name
    for conv in (node for node in graph.node if node.op_type == "Conv"):
        assert made_by[conv.input[0]].op_type == made_by[conv.input[1]].op_type == "DequantizeLinear"
    for matmul in (node for node in graph.node if node.op_type == "MatMul"):
        assert all(made_by.get(name) is None or made_by[name].op_type != "DequantizeLinear" for name in matmul.input)
    assert not any(node.op_type in ("MatMulInteger", "QLinearMatMul") for node in graph.node)

    quantization = report.metadata["quantization"]
    assert quantization["mode"] == "int8" and quantization["settings"]["op_types_to_quantize"] == ["Conv"]
    assert (quantization["calibration_slices"], quantization["gate_slices"]) == (4, 4)
    assert quantization["psnr_drop"] == pytest.approx(quantization["psnr_fp32"] - quantization["psnr"])
    assert quantization["psnr_drop"] <= 0.1 == quantization["max_psnr_drop"]
    assert read_contract(onnx.load(report.path)) == report.metadata

    runtime = load(report.path, threads=1)
    kspace, mask_input = undersampled(SIZE, mask), column_mask(mask)
    image = runtime.reconstruct(kspace.numpy(), mask_input.numpy())
    with torch.no_grad():
        expected = model(kspace, mask_input).numpy()
    error = np.abs(image - expected).max()
    assert 0 < error < 0.1  # quantized: close to, not equal to, float32


def test_impossible_gate_refuses_with_the_measured_drop_and_writes_nothing(model, mask, tmp_path):
    out = tmp_path / "out" / "m.onnx"
    with pytest.raises(ExportError, match=r"quantization gate failed: int8 PSNR [0-9.]+ dB vs float32 PyTorch "
                                          r"[0-9.]+ dB on 4 validation slices, a drop of -?[0-9.]+ dB > "
                                          r"--max-psnr-drop -1 dB; .*m.onnx not written"):
        export(model, out, mask, quantize="int8", max_psnr_drop=-1)
    assert not out.parent.exists()


def test_openvino_int8_falls_back_to_the_mixed_preset_when_the_performance_one_fails_the_gate(model, mask, tmp_path):
    with pytest.raises(ExportError) as refused:
        export(model, tmp_path / "never.xml", mask, fmt="openvino", quantize="int8", max_psnr_drop=-1)
    found = re.search(r"int8 \(NNCF mixed preset\) PSNR .* a drop of (-?[0-9.]+) dB > --max-psnr-drop -1 dB "
                      r"\(performance preset: drop (-?[0-9.]+) dB\); .*never.xml not written$", str(refused.value))
    assert found and "\n" not in str(refused.value)
    mixed, performance = map(float, found.groups())
    if not mixed < performance - 0.001:
        pytest.skip(f"NNCF's presets give drops {performance} and {mixed} dB here: no gate separates them")
    report = export(model, tmp_path / "m.xml", mask, fmt="openvino", quantize="int8",
                    max_psnr_drop=(performance + mixed) / 2)
    quantization = report.metadata["quantization"]
    assert quantization["settings"]["preset"] == "mixed" and quantization["psnr_drop"] <= (performance + mixed) / 2
    [first] = quantization["settings"]["refused"]
    assert first["preset"] == "performance" and first["psnr_drop"] == pytest.approx(performance, abs=1e-3)
    single = export(model, tmp_path / "m2.xml", mask, fmt="openvino", quantize="int8")  # passes at first try
    fake_quantize = [sum(op.get_type_name() == "FakeQuantize" for op in ov.Core().read_model(path).get_ops())
                     for path in (report.path, single.path)]
    assert fake_quantize[0] == fake_quantize[1] > 0  # the fallback quantized the float graph, not the quantized one


def test_openvino_int8_quantizes_convolutions_and_runs_at_f32(model, mask, tmp_path):
    report = export(model, tmp_path / "m.xml", mask, fmt="openvino", quantize="int8")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.bin", "m.xml"]
    ir = ov.Core().read_model(report.path)
    quantized = {target.get_node().get_type_name() for op in ir.get_ops() if op.get_type_name() == "FakeQuantize"
                 for output in op.outputs() for target in output.get_target_inputs()}
    assert quantized == {"Convolution"}
    contract = json.loads(ir.get_rt_info(["kdc", "contract"]).astype(str))
    assert contract["quantization"]["mode"] == "int8" and contract["quantization"]["psnr_drop"] <= 0.1
    assert contract["quantization"]["settings"]["engine"].startswith("nncf")
    assert contract["quantization"]["settings"]["preset"] == "performance"
    assert contract["quantization"]["settings"]["refused"] == []
    runtime = load(report.path, threads=1)
    assert runtime.backend.endswith("f32")
    assert runtime.reconstruct(undersampled(SIZE, mask).numpy(), column_mask(mask).numpy()).shape == (4, 1, *SIZE)


def test_fp16_onnx_keeps_float32_io_and_dc_and_passes_the_gate(model, mask, tmp_path):
    report = export(model, tmp_path / "m.onnx", mask, quantize="fp16")
    proto = onnx.load(report.path)
    float16 = onnx.TensorProto.FLOAT16
    assert all(value.type.tensor_type.elem_type == onnx.TensorProto.FLOAT
               for value in [*proto.graph.input, *proto.graph.output])
    assert any(init.data_type == float16 for init in proto.graph.initializer)
    by_name = {init.name: init for init in proto.graph.initializer}
    matmul_weights = [by_name[name] for node in proto.graph.node if node.op_type == "MatMul"
                      for name in node.input if name in by_name]
    assert all(init.data_type == onnx.TensorProto.FLOAT for init in matmul_weights)
    quantization = report.metadata["quantization"]
    assert quantization["mode"] == "fp16" and quantization["psnr_drop"] <= 0.1
    assert quantization["max_abs_error_vs_fp32"] < 1e-2
    runtime = load(report.path)
    assert runtime.reconstruct(undersampled(SIZE, mask).numpy(), column_mask(mask).numpy()).dtype == np.float32


@pytest.mark.parametrize("options, message", [
    ({"quantize": "int4"}, "unknown quantization 'int4'"),
    ({"quantize": "fp16", "fmt": "openvino"}, "--quantize fp16 needs --format onnx, not openvino"),
    ({"quantize": "int8", "fmt": "torchscript"}, "--quantize int8 needs --format onnx or openvino, not torchscript"),
])
def test_unsupported_quantization_is_refused_before_export(model, mask, tmp_path, options, message):
    suffix = {"openvino": ".xml", "torchscript": ".pt"}.get(options.get("fmt", "onnx"), ".onnx")
    out = tmp_path / "out" / f"m{suffix}"
    with pytest.raises(ExportError, match=message):
        export(model, out, mask, **options)
    assert not out.parent.exists()


def test_cli_reports_the_drop_and_fails_in_one_line(run_dir, tmp_path):
    out = tmp_path / "q.onnx"
    result = CliRunner().invoke(app, ["export", str(run_dir), "--out", str(out), "--quantize", "int8",
                                      "--max-psnr-drop", "-1"])
    assert result.exit_code == 1 and not out.exists()
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: quantization gate failed: int8 PSNR")


def test_cli_names_the_nncf_preset_an_openvino_int8_file_kept(run_dir, tmp_path):
    out = tmp_path / "q.xml"
    result = CliRunner().invoke(app, ["export", str(run_dir), "--out", str(out), "--quantize", "int8"])
    assert result.exit_code == 0, result.output
    last = result.output.strip().splitlines()[-1]
    assert last.endswith("runs on OpenVINO at f32 by default; NNCF preset performance")
    refused = {"settings": {"preset": "mixed", "refused": [{"preset": "performance", "psnr_drop": 0.2061}]}}
    assert preset_note(refused) == "; NNCF preset mixed (performance refused: drop 0.206 dB)"
    assert preset_note({"settings": {"op_types_to_quantize": ["Conv"]}}) == preset_note(None) == ""
    nan = {"settings": {"preset": "mixed", "refused": [{"preset": "performance", "psnr_drop": None}]}}
    assert preset_note(nan) == "; NNCF preset mixed (performance refused: no finite PSNR)"


def test_calibration_takes_the_users_dataset(model, mask, tmp_path, write_kdmri, phantom):
    """``--calibration DATA``: the user's validation slices calibrate int8 and feed both gates."""
    write_kdmri(tmp_path / "data" / "val" / "a.h5", phantom(6, 64, 48))
    report = export(model, tmp_path / "m.onnx", mask, quantize="int8", max_psnr_drop=5.0,
                    calibration=tmp_path / "data")
    quantization = report.metadata["quantization"]
    assert quantization["calibration_slices"] == 3 and quantization["gate_slices"] == 3
    assert report.metadata["parity"]["slices"] == 6
    with pytest.raises(ExportError, match=r"--calibration: .*nowhere: dataset directory not found"):
        export(model, tmp_path / "n.onnx", mask, quantize="int8", calibration=tmp_path / "nowhere")
