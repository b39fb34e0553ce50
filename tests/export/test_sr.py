"""Export of a super-resolution (VDSR) run: one low-resolution image in, no DC, parity gate, task in the contract."""

import json
import subprocess
import sys

import numpy as np
import onnx
import pytest
import torch

from kdc.data.demo import validation_images
from kdc.data.lowres import low_resolution
from kdc.export import ExportError, export_model
from kdc.export.onnx_graph import read_contract
from kdc.models import VDSR, load_checkpoint, save_checkpoint
from tests.runtime.helpers import BLOCK_TORCH

SIZE = (40, 32)


@pytest.fixture(scope="module")
def sr_run(tmp_path_factory):
    """A super-resolution run directory with a tiny VDSR teacher and KD student (random weights), scale 4."""
    run = tmp_path_factory.mktemp("sr_run")
    for seed, (role, depth) in enumerate((("teacher", 5), ("kd_student", 3))):
        torch.manual_seed(seed)
        meta = {"role": role, "task": "sr", "scale": 4, "image_size": list(SIZE), "metrics": {"psnr": 30.0}}
        save_checkpoint(run / f"{role}.pt", VDSR(depth=depth, channels=8), meta)
    return run


@pytest.fixture(scope="module")
def lowres() -> np.ndarray:
    return low_resolution(validation_images(SIZE, 3), 4)[:, None]


def reference(path, lowres):
    model, _ = load_checkpoint(path)
    with torch.no_grad():
        return model(torch.from_numpy(lowres)).numpy()


def test_onnx_graph_contract_and_torch_free_runtime(sr_run, lowres, tmp_path):
    report = export_model(sr_run, tmp_path / "sr.onnx")
    assert report.parity_error < 1e-4 and report.dc == "none"
    proto = onnx.load(report.path)
    assert [i.name for i in proto.graph.input] == ["image_lowres"] and proto.graph.output[0].name == "image"
    assert proto.graph.input[0].type.tensor_type.shape.dim[0].dim_param == "N"
    contract = read_contract(proto)
    assert (contract["task"], contract["scale"], contract["model"]["role"]) == ("sr", 4, "kd_student")
    assert contract["inputs"] == [{"name": "image_lowres", "shape": ["N", 1, 40, 32], "dtype": "float32",
                                   "description": "low-resolution image, see input_layout"}]
    assert contract["outputs"][0]["shape"] == ["N", 1, 40, 32]
    assert contract["model"]["config"] == {"arch": "vdsr", "depth": 3, "channels": 8}
    assert "mask" not in json.dumps(contract["inputs"])

    np.save(tmp_path / "lowres.npy", lowres)
    code = BLOCK_TORCH + f"""
import numpy as np
from kdc.runtime import load
model = load({str(report.path)!r}, threads=1)
out = model.run({{"image_lowres": np.load({str(tmp_path / 'lowres.npy')!r})}})["image"]
np.save({str(tmp_path / 'out.npy')!r}, out)
print(model.task, model.input_names, sorted(model.example_feeds(2)))
"""
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "sr ['image_lowres'] ['image_lowres']"
    output = np.load(tmp_path / "out.npy")
    expected = reference(sr_run / "kd_student.pt", lowres)
    assert output.shape == (3, 1, 40, 32) and np.abs(output - expected).max() < 1e-4
    assert np.abs(output - lowres).max() > 1e-3  # the network did something


@pytest.mark.parametrize("fmt, suffix", [("openvino", ".xml"), ("torchscript", ".pt")])
def test_openvino_and_torchscript(sr_run, lowres, tmp_path, fmt, suffix):
    report = export_model(sr_run, tmp_path / f"teacher{suffix}", fmt=fmt, role="teacher")
    expected = reference(sr_run / "teacher.pt", lowres)
    if fmt == "openvino":
        from kdc.runtime import load

        model = load(report.path)
        assert model.task == "sr" and model.contract.scale == 4
        output = model.run({"image_lowres": lowres})["image"]
    else:
        extra = {"kdc_contract.json": ""}
        module = torch.jit.load(str(report.path), _extra_files=extra)
        assert json.loads(extra["kdc_contract.json"])["task"] == "sr"
        output = module(torch.from_numpy(lowres)).detach().numpy()
    assert np.abs(output - expected).max() < 1e-4


def test_runtime_refuses_kspace_calls_and_bad_inputs(sr_run, lowres, tmp_path):
    from kdc.runtime import RuntimeModelError, load

    model = load(export_model(sr_run, tmp_path / "sr.onnx").path)
    with pytest.raises(RuntimeModelError, match="'sr' model, not a reconstruction"):
        model.reconstruct(np.zeros((1, 2, 40, 32), np.float32))
    with pytest.raises(RuntimeModelError, match=r"input 'image_lowres' has shape \(1, 2, 40, 32\)"):
        model.run({"image_lowres": np.zeros((1, 2, 40, 32), np.float32)})


def test_mask_options_are_refused_and_nothing_is_written(sr_run, tmp_path):
    for kwargs in ({"bake_mask": True}, {"dc": "masked"}, {"mask": np.ones(SIZE, np.float32)}):
        with pytest.raises(ExportError, match="a vdsr model takes image_lowres; drop it"):
            export_model(sr_run, tmp_path / "sr.onnx", **kwargs)
    assert not list(tmp_path.iterdir())


def test_bench_times_the_exported_model_and_the_checkpoint(sr_run, tmp_path):
    from kdc.runtime.bench import Settings, run_bench

    path = export_model(sr_run, tmp_path / "sr.onnx").path
    settings = Settings(threads=1, batch=2, warmup=1, iterations=2)
    report = run_bench([path, sr_run / "kd_student.pt"], ["ort", "torch"], settings)
    assert [(r["runtime"], r["shape"], r["role"]) for r in report["results"]] == [
        ("ort", [2, 1, 40, 32], "kd_student"), ("torch", [2, 1, 40, 32], "kd_student")]
