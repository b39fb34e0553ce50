import subprocess
import sys

import onnx
import typer
from typer.testing import CliRunner

from kdc._cli import user_errors
from kdc.export.cli import export
from kdc.export.onnx_graph import read_contract

app = typer.Typer()
app.command()(user_errors(export))
app.command("noop")(lambda: None)  # two commands, so typer keeps the command name as on `kdc export`


def test_export_writes_the_student_of_a_run(run_dir, tmp_path):
    out = tmp_path / "s.onnx"
    result = CliRunner().invoke(app, ["export", str(run_dir), "--out", str(out), "--model", "student", "--bake-mask"])
    assert result.exit_code == 0, result.output
    assert f"wrote {out} (onnx, dc=masked" in result.output
    contract = read_contract(onnx.load(out))
    assert contract["model"]["role"] == "student" and contract["mask_baked"]


def test_bad_format_is_one_line_and_exit_1(run_dir, tmp_path):
    out = tmp_path / "m.onnx"
    result = CliRunner().invoke(app, ["export", str(run_dir), "--out", str(out), "--format", "tflite"])
    assert result.exit_code == 1
    assert result.output.strip().splitlines() == [
        "error: unknown format 'tflite': expected one of ['onnx', 'openvino', 'pt2', 'torchscript']"]
    assert not out.exists()


def test_importing_the_command_does_not_import_torch():
    code = "import sys, kdc.export.cli; print('torch' in sys.modules, 'onnx' in sys.modules)"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "False False"
