import json
from pathlib import Path

import pytest
import typer
from typer.testing import CliRunner

from kdc._cli import user_errors
from kdc.runtime import cli
from kdc.runtime.bench import Measurement, Settings, measure, plan, speedups
from kdc.runtime.tensors import RuntimeModelError

app = typer.Typer()
app.command("bench")(user_errors(cli.bench))
app.command("other")(lambda: None)  # two commands, so typer keeps the command name


def test_bench_teacher_and_student_on_three_runtimes(artefacts, tmp_path):
    out = tmp_path / "bench.json"
    models = [artefacts.teacher_onnx, artefacts.student_onnx, artefacts.teacher_pt, artefacts.student_pt]
    result = CliRunner().invoke(app, ["bench", *map(str, models), "-r", "ort,openvino", "-r", "torch",
                                      "--threads", "1", "--warmup", "1", "-n", "5", "--json", str(out)])
    assert result.exit_code == 0, result.output
    report = json.loads(out.read_text())
    rows = {(m["model"].rsplit("/", 1)[-1], m["runtime"]) for m in report["results"]}
    assert rows == {("teacher.onnx", "ort"), ("teacher.onnx", "openvino"), ("student.onnx", "ort"),
                    ("student.onnx", "openvino"), ("teacher.pt", "torch"), ("student.pt", "torch")}
    for m in report["results"]:
        assert m["iterations"] == 5 and m["shape"] == [1, 2, 40, 32] and m["threads"] == 1
        assert m["min_ms"] <= m["median_ms"] <= m["p90_ms"] <= m["p99_ms"] <= m["max_ms"]
        assert m["create_ms"] > 0 and m["first_ms"] > 0 and m["throughput"] > 0
    assert sorted(s["runtime"] for s in report["speedups"]) == ["openvino", "ort", "torch"]
    assert report["environment"]["versions"]["onnxruntime"] and report["settings"]["threads"] == 1
    assert result.output.count("speed-up of student.onnx over teacher.onnx on") == 2
    assert result.output.count("speed-up of student.pt over teacher.pt on torch") == 1
    assert "openvino 2026" in result.output or "openvino 20" in result.output


def test_bench_user_mistakes_are_one_line_errors(artefacts, tmp_path):
    runner = CliRunner()
    for args, message in ([str(tmp_path / "x.onnx")], "model file not found"), \
            ([str(artefacts.student_xml), "-r", "ort"], "none of the runtimes ['ort'] reads .xml"), \
            ([str(artefacts.student_onnx), "-r", "tflite"], "unknown runtime 'tflite'"), \
            ([str(artefacts.student_onnx), "-n", "0"], "iterations must be >= 1"):
        result = runner.invoke(app, ["bench", *args])
        assert result.exit_code == 1 and result.output.startswith("error: ") and message in result.output, result.output
        assert "Traceback" not in result.output


def test_bench_a_run_directory_and_torch_exports(artefacts, tmp_path):
    """A run directory benchmarks its checkpoints (and exports beside them); TorchScript/.pt2 run through their
    contract on the torch runtime."""
    from kdc.export import export_model

    for suffix in (".ts", ".pt2"):
        export_model(artefacts.student_pt, tmp_path / f"student{suffix}")
    out = tmp_path / "bench.json"
    result = CliRunner().invoke(app, ["bench", str(artefacts.run), str(tmp_path / "student.ts"),
                                      str(tmp_path / "student.pt2"), "--threads", "1", "--warmup", "0", "-n", "2",
                                      "--json", str(out)])
    assert result.exit_code == 0, result.output
    results = json.loads(out.read_text())["results"]
    assert [(Path(m["model"]).name, m["runtime"], m["role"]) for m in results] == [
        ("teacher.pt", "torch", "teacher"), ("student.pt", "torch", "student"),
        ("student.ts", "torch", "student"), ("student.pt2", "torch", "student")]
    assert all(m["shape"] == [1, 2, 40, 32] for m in results)
    assert " ts CPU f32" in results[2]["backend"] and " pt2 CPU f32" in results[3]["backend"]
    empty = tmp_path / "empty"
    empty.mkdir()
    result = CliRunner().invoke(app, ["bench", str(empty)])
    assert result.exit_code == 1 and "directory holds no model files" in result.output


def test_plan_defaults_to_the_native_runtime(artefacts):
    assert plan([artefacts.student_onnx, artefacts.student_xml, artefacts.student_pt], None) == [
        (artefacts.student_onnx, "ort"), (artefacts.student_xml, "openvino"), (artefacts.student_pt, "torch")]


def test_measure_counts_every_run(artefacts):
    steps = []
    m = measure(artefacts.baked_onnx, "ort", Settings(threads=1, batch=2, warmup=3, iterations=4),
                lambda: steps.append(1))
    assert len(steps) == 1 + 3 + 4 and m.batch == 2 and m.shape == [2, 2, 40, 32] and m.role == "student"


def fake(model, runtime, role, median, batch=1):
    return Measurement(model, runtime, role, "b", 1, batch, [1], 1, 1, median, median, median, median, median, 1, 1, [])


def test_speedup_pairs_teacher_and_student_on_the_same_runtime():
    rows = speedups([fake("t", "ort", "teacher", 100), fake("s", "ort", "kd_student", 40),
                     fake("s", "openvino", "student", 10), fake("t", "ort", "teacher", 100, batch=4)])
    assert [(r["runtime"], r["speedup"]) for r in rows] == [("ort", 2.5)]


def test_torch_checkpoint_without_size_needs_one(tmp_path):
    from kdc.models import DCCNN, save_checkpoint

    save_checkpoint(tmp_path / "m.pt", DCCNN(1, 2, 2), {"role": "student"})
    with pytest.raises(RuntimeModelError, match="--size"):
        measure(tmp_path / "m.pt", "torch", Settings(iterations=1, warmup=0))
    m = measure(tmp_path / "m.pt", "torch", Settings(iterations=1, warmup=0, size=(16, 8)))
    assert m.shape == [1, 2, 16, 8] and m.backend.startswith("torch ")


def test_torch_device_is_checked_before_loading(tmp_path):
    import torch

    with pytest.raises(RuntimeModelError, match="runs on CPU or a CUDA GPU"):
        measure(tmp_path / "m.pt", "torch", Settings(iterations=1, warmup=0, device="NPU"))
    if not torch.cuda.is_available():
        with pytest.raises(RuntimeModelError, match="sees no CUDA GPU"):
            measure(tmp_path / "m.pt", "torch", Settings(iterations=1, warmup=0, device="GPU"))
