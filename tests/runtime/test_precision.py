"""The runtime runs a file at the precision its export validated, warns on an unvalidated one, and ``kdc bench``
names the runtime that runs bf16 when onnxruntime cannot."""

import onnx
import pytest

import kdc.runtime as rt
from kdc.runtime.bench import Settings, measure, plan
from kdc.runtime.onnx_metadata import metadata_props
from kdc.runtime.session import PrecisionWarning

from .conftest import needs_bf16, with_contract


@needs_bf16
def test_a_bf16_export_runs_on_openvino_at_bf16_by_default_and_at_f32_on_onnxruntime(bf16_onnx, kspace, artefacts):
    model = rt.load(bf16_onnx, threads=1)
    assert model.engine == "openvino" and model.backend.endswith(" bf16") and model.warnings == []
    ort = rt.load(bf16_onnx, engine="ort", threads=1)  # f32 is validated too (the parity gate)
    assert ort.backend.endswith("CPUExecutionProvider f32") and ort.warnings == []
    f32 = rt.load(bf16_onnx, precision="f32", threads=1)
    assert f32.engine == "openvino" and f32.backend.endswith(" f32") and f32.warnings == []
    image = model.reconstruct(kspace, artefacts.mask)
    assert 0 < abs(image - ort.reconstruct(kspace, artefacts.mask)).max() < 0.05


def test_an_unvalidated_precision_warns_once_in_one_line(artefacts):
    with pytest.warns(PrecisionWarning) as caught:
        model = rt.load(artefacts.student_xml, precision="bf16", threads=1)
    note = ("student.xml was validated at f32, not bf16: its accuracy there is unmeasured (kdc export --precision "
            "bf16 gates it on PSNR)")
    assert [str(w.message) for w in caught] == [note] and note in model.warnings


def test_files_without_a_recorded_precision_keep_the_old_defaults(artefacts, tmp_path):
    old = with_contract(artefacts.student_onnx, tmp_path / "old.onnx", lambda contract: contract.pop("precision"))
    model = rt.load(old, threads=1)
    assert model.engine == "onnxruntime" and model.backend.endswith(" f32") and model.warnings == []
    assert rt.load(artefacts.student_xml, threads=1).backend.endswith(" f32")


def test_onnx_metadata_is_read_without_a_session_and_garbage_gives_none(artefacts, tmp_path):
    expected = {prop.key: prop.value for prop in onnx.load(artefacts.student_onnx).metadata_props}
    assert metadata_props(artefacts.student_onnx) == expected and "kdc.contract" in expected
    data = artefacts.student_onnx.read_bytes()
    for name, content in (("empty", b""), ("cut", data[: len(data) // 2]), ("noise", b"\xff" * 64),
                          ("huge_length", b"\x72\xff\xff\xff\xff\x0f")):  # field 14 claiming 4 GiB
        path = tmp_path / f"{name}.onnx"
        path.write_bytes(content)
        assert metadata_props(path) == {}, name


@needs_bf16
def test_bench_defaults_to_the_validated_runtime_and_names_openvino_when_onnxruntime_is_asked_for_bf16(
        bf16_onnx, artefacts):
    assert plan([bf16_onnx, artefacts.student_onnx], None) == [(bf16_onnx, "openvino"), (artefacts.student_onnx, "ort")]
    m = measure(artefacts.student_onnx, "ort", Settings(threads=1, warmup=0, iterations=1, precision="bf16"))
    assert m.backend.endswith("CPUExecutionProvider f32")
    [note] = m.warnings
    assert note.startswith("onnxruntime's CPU provider has no bf16 kernels") and "\n" not in note
    assert note.endswith("it ran f32; OpenVINO runs bf16 (--runtime openvino --precision bf16)")
