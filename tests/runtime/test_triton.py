import pytest
import typer
from typer.testing import CliRunner

from kdc._cli import user_errors
from kdc._io import OverwriteError
from kdc.runtime import cli
from kdc.runtime.tensors import RuntimeModelError
from kdc.runtime.triton import render_pbtxt, write_triton_repo

from .conftest import needs_bf16

app = typer.Typer()
app.command("triton-repo")(user_errors(cli.triton_repo))
app.command("other")(lambda: None)


def test_baked_model_gets_dynamic_batching(artefacts, tmp_path):
    target = write_triton_repo(artefacts.baked_onnx, tmp_path / "repo", name="recon", threads=2, instances=2)
    assert target == tmp_path / "repo" / "recon"
    assert (target / "1" / "model.onnx").read_bytes() == artefacts.baked_onnx.read_bytes()
    assert (target / "config.pbtxt").read_text() == """name: "recon"
platform: "onnxruntime_onnx"
backend: "onnxruntime"
max_batch_size: 8
input {
  name: "kspace"
  data_type: TYPE_FP32
  dims: [ 2, 40, 32 ]
}
output {
  name: "image"
  data_type: TYPE_FP32
  dims: [ 1, 40, 32 ]
}
instance_group {
  count: 2
  kind: KIND_CPU
}
dynamic_batching {
}
parameters {
  key: "intra_op_thread_count"
  value {
    string_value: "2"
  }
}
parameters {
  key: "inter_op_thread_count"
  value {
    string_value: "1"
  }
}
"""
    assert sorted(p.name for p in (tmp_path / "repo").iterdir()) == ["recon"]  # nothing staged is left over


@needs_bf16
def test_a_bf16_export_gets_the_openvino_backend_at_bf16(bf16_onnx, tmp_path):
    """The contract's validated runtime and precision, as kdc.runtime.load runs the file."""
    target = write_triton_repo(bf16_onnx, tmp_path / "repo", name="recon", threads=2)
    config = (target / "config.pbtxt").read_text()
    assert config.startswith('name: "recon"\nbackend: "openvino"\ndefault_model_filename: "model.onnx"\n')
    assert "onnxruntime" not in config
    assert config.endswith("""parameters {
  key: "HINT_BF16"
  value {
    string_value: "YES"
  }
}
parameters {
  key: "INFERENCE_NUM_THREADS"
  value {
    string_value: "2"
  }
}
""")
    assert (target / "1" / "model.onnx").read_bytes() == bf16_onnx.read_bytes()


def test_mask_input_has_no_batch_dimension_so_no_triton_batching(artefacts, tmp_path):
    result = CliRunner().invoke(app, ["triton-repo", str(artefacts.student_onnx), "--repo", str(tmp_path), "--gpu"])
    assert result.exit_code == 0, result.output
    config = (tmp_path / "student" / "config.pbtxt").read_text()
    assert "max_batch_size: 0" in config and "dynamic_batching" not in config and "kind: KIND_GPU" in config
    assert "dims: [ -1, 2, 40, 32 ]" in config and "dims: [ 1, 1, 1, 32 ]" in config


def test_existing_model_directory_is_replaced_only_when_asked(artefacts, tmp_path):
    write_triton_repo(artefacts.student_onnx, tmp_path, name="m")
    with pytest.raises(RuntimeModelError, match="already exists"):
        write_triton_repo(artefacts.baked_onnx, tmp_path, name="m")
    assert "max_batch_size: 0" in (tmp_path / "m" / "config.pbtxt").read_text()
    write_triton_repo(artefacts.baked_onnx, tmp_path, name="m", overwrite=True)
    assert "max_batch_size: 8" in (tmp_path / "m" / "config.pbtxt").read_text()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m"]


def test_overwrite_keeps_a_model_directory_kdc_did_not_write_and_the_model_itself(artefacts, tmp_path):
    import shutil

    (tmp_path / "m" / "1").mkdir(parents=True)
    (tmp_path / "m" / "1" / "model.onnx").write_bytes(b"tuned by hand")
    with pytest.raises(OverwriteError, match="m: a directory kdc did not write"):
        write_triton_repo(artefacts.baked_onnx, tmp_path, name="m", overwrite=True)
    assert (tmp_path / "m" / "1" / "model.onnx").read_bytes() == b"tuned by hand"
    model = shutil.copy(artefacts.baked_onnx, tmp_path / "m.onnx")
    write_triton_repo(model, tmp_path, name="x")
    shutil.move(model, tmp_path / "x" / "m.onnx")  # the model now lives in the directory to be replaced
    with pytest.raises(OverwriteError, match="which this command reads"):
        write_triton_repo(tmp_path / "x" / "m.onnx", tmp_path, name="x", overwrite=True)
    assert (tmp_path / "x" / "m.onnx").is_file()


def test_only_onnx_models_and_bf16_irs(artefacts, tmp_path):
    result = CliRunner().invoke(app, ["triton-repo", str(artefacts.student_pt), "--repo", str(tmp_path)])
    assert result.exit_code == 1 and "needs an exported .onnx model (or a bf16 .xml)" in result.output
    result = CliRunner().invoke(app, ["triton-repo", str(artefacts.student_xml), "--repo", str(tmp_path)])
    assert result.exit_code == 1 and "cannot hold this IR at its validated f32" in result.output
    assert list(tmp_path.iterdir()) == []


@needs_bf16
def test_a_bf16_ir_goes_to_the_openvino_backend_with_its_weights(bf16_xml, tmp_path):
    """The IR keeps its data consistency at f32 (its nodes are marked), so Triton gets the IR, not an ONNX file."""
    result = CliRunner().invoke(app, ["triton-repo", str(bf16_xml), "--repo", str(tmp_path), "--name", "recon"])
    assert result.exit_code == 0, result.output
    target = tmp_path / "recon"
    config = (target / "config.pbtxt").read_text()
    assert config.startswith('name: "recon"\nbackend: "openvino"\ndefault_model_filename: "model.xml"\n')
    assert 'key: "HINT_BF16"' in config
    assert (target / "1" / "model.xml").read_bytes() == bf16_xml.read_bytes()
    assert (target / "1" / "model.bin").read_bytes() == bf16_xml.with_suffix(".bin").read_bytes()


def test_pbtxt_writes_enums_bare_and_strings_quoted():
    assert render_pbtxt({"name": 'a"b', "kind": "KIND_CPU", "flag": True, "dims": [1, -1]}) == (
        'name: "a\\"b"\nkind: KIND_CPU\nflag: true\ndims: [ 1, -1 ]\n')
