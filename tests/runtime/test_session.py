import subprocess
import sys
import threading
import warnings



import numpy as np
import pytest
import torch

import kdc.runtime as rt
from kdc.models import load_checkpoint
from kdc.runtime.session import captured_stderr, fallback_warnings

from .conftest import SIZE
from .helpers import BLOCK_TORCH


def torch_reference(checkpoint, kspace, mask):
    model, _ = load_checkpoint(checkpoint)
    with torch.no_grad():
        return model(torch.from_numpy(kspace), torch.from_numpy(mask[None, None, :1])).numpy()


def test_runtime_runs_where_importing_torch_fails(artefacts, kspace):
    code = BLOCK_TORCH + f"""
import numpy as np
try:
    import torch
except ImportError:
    pass
else:
    raise SystemExit("the torch blocker does not work")
import kdc.runtime, kdc.runtime.bench, kdc.runtime.server, kdc.runtime.triton, kdc.runtime.cli
kspace = np.load({str(artefacts.run / 'k.npy')!r})
for path, engine in (({str(artefacts.student_onnx)!r}, "ort"), ({str(artefacts.student_xml)!r}, "openvino")):
    model = kdc.runtime.load(path, engine=engine, threads=1)
    image = model.reconstruct(kspace, np.load({str(artefacts.run / 'mask.npy')!r}))
    assert image.shape == (3, 1, 40, 32) and np.isfinite(image).all()
assert not any(name == "torch" or name.startswith("torch.") for name in sys.modules)
print("ok")
"""
    np.save(artefacts.run / "k.npy", kspace)
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip().endswith("ok")


@pytest.mark.parametrize("name,engine", [("student_onnx", "ort"), ("student_onnx", "openvino"),
                                         ("student_xml", "openvino"), ("baked_onnx", "ort")])
def test_reconstruction_matches_pytorch(artefacts, kspace, name, engine):
    model = rt.load(getattr(artefacts, name), engine=engine, threads=2)
    image = model.reconstruct(kspace, None if model.mask_baked else artefacts.mask)
    expected = torch_reference(artefacts.student_pt, kspace, artefacts.mask)
    assert image.dtype == np.float32 and image.shape == expected.shape
    np.testing.assert_allclose(image, expected, atol=1e-4)


def test_openvino_runs_at_f32_unless_asked(artefacts):
    from kdc.runtime.session import openvino_core

    model = rt.load(artefacts.student_xml)
    assert model.backend.endswith(" f32") and model.warnings == []
    with pytest.warns(rt.PrecisionWarning):  # exported at f32: bf16 is unvalidated (tests/runtime/test_precision.py)
        bf16 = rt.load(artefacts.student_xml, precision="bf16")
    unvalidated = bf16.warnings[-1:]
    if "BF16" in openvino_core().get_property("CPU", "OPTIMIZATION_CAPABILITIES"):
        assert bf16.backend.endswith(" bf16") and bf16.warnings == unvalidated
    else:  # this CPU has no bf16: OpenVINO stays at f32, and the reconstructor says so
        assert bf16.backend.endswith(" f32") and bf16.warnings == ["asked for bf16, CPU runs f32", *unvalidated]


def test_contract_is_read_from_onnx_and_openvino(artefacts):
    onnx_model = rt.load(artefacts.student_onnx)
    ir_model = rt.load(artefacts.student_xml)
    for model in (onnx_model, ir_model):
        assert model.input_names == ["kspace", "mask"] and model.output_names == ["image"]
        assert model.image_size == (40, 32) and model.role == "student"
        assert model.contract.inputs[0].shape == ("N", 2, 40, 32)
    baked = rt.load(artefacts.baked_onnx)
    assert baked.input_names == ["kspace"] and baked.mask_baked
    np.testing.assert_array_equal(baked.baked_mask()[0, 0, 0], artefacts.mask[0])


@pytest.fixture(scope="module")
def odd_student(artefacts, tmp_path_factory):
    """The test student exported at an odd size, where fftshift and ifftshift differ."""
    from kdc.export import export_model

    out = tmp_path_factory.mktemp("odd") / "student_odd.onnx"
    export_model(artefacts.student_pt, out, image_size=(39, 33))
    return out


@pytest.mark.parametrize("odd", [False, True], ids=["40x32", "39x33"])
def test_centred_kspace_gives_the_upright_image(artefacts, odd_student, odd):
    """A user's path: image -> fastMRI-centred k-space and mask -> kspace_channels/mask_columns(centred=True) ->
    reconstruct gives the pixels of kdc's own (uncentred) path, not an image rolled by (H/2, W/2)."""
    from kdc.data.demo import validation_images
    from kdc.mri.fft import fft2, fft2c
    from kdc.mri.masks import cartesian_lines

    model = rt.load(odd_student if odd else artefacts.student_onnx)
    height, width = model.image_size
    images = validation_images((height, width), 2)
    centred_lines = cartesian_lines("random", 4, width, seed=3)  # DC column in the middle, as fastMRI stores it
    lines = np.fft.ifftshift(centred_lines)
    reference = model.reconstruct(rt.kspace_channels(fft2(images) * lines), lines)
    centred = fft2c(images) * centred_lines
    image = model.reconstruct(rt.kspace_channels(centred, centred=True), rt.mask_columns(centred_lines, width,
                                                                                          centred=True))
    np.testing.assert_allclose(image, reference, atol=1e-5 * np.abs(reference).max())
    rolled = np.roll(reference, (height // 2, width // 2), axis=(-2, -1))
    assert np.abs(image - rolled).max() > 0.1 * np.abs(reference).max()


def test_complex_kspace_helper_shapes(artefacts, kspace):
    complex_kspace = kspace[:, 0] + 1j * kspace[:, 1]
    np.testing.assert_array_equal(rt.kspace_channels(complex_kspace), kspace)
    assert rt.kspace_channels(complex_kspace[0]).shape == (1, 2, 40, 32)


def test_kspace_with_phase_warns_with_its_share(artefacts):
    """A magnitude model keeps the real part: an image with phase (or k-space in the wrong centring) is said."""
    from kdc.data.demo import validation_images
    from kdc.mri.fft import fft2, fft2c

    model = rt.load(artefacts.student_onnx)
    images = validation_images((40, 32), 2)
    mask = artefacts.mask
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        model.reconstruct(rt.kspace_channels(fft2(images) * mask), mask)  # real image: no warning
    with pytest.warns(rt.PhaseWarning, match=r"8\.7% of the input image's energy is imaginary"):
        model.reconstruct(rt.kspace_channels(fft2(images * np.exp(0.3j)) * mask), mask)
    with pytest.warns(rt.PhaseWarning, match="does not sample the DC column"):  # centred, passed as uncentred
        model.reconstruct(rt.kspace_channels(fft2c(images) * np.fft.fftshift(mask)), np.fft.fftshift(mask))
    _, notes = model.run_with_notes({"kspace": rt.kspace_channels(fft2(images * 1j) * mask),
                                     "mask": rt.mask_columns(mask, 32)})
    assert len(notes) == 1 and "100.0%" in notes[0]


def test_normalise_gives_the_same_image_at_any_scale(artefacts, kspace):
    model = rt.load(artefacts.student_onnx)
    feeds = {"kspace": kspace, "mask": rt.mask_columns(artefacts.mask, 32)}
    unit = model.run(feeds, normalise=True)["image"]
    scaled = model.run({**feeds, "kspace": kspace * 3000}, normalise=True)["image"]
    np.testing.assert_allclose(scaled / 3000, unit, rtol=1e-4, atol=1e-6 * np.abs(unit).max())
    np.testing.assert_array_equal(model.reconstruct(kspace, artefacts.mask, normalise=True), unit)


def test_kspace_outside_the_mask_is_zeroed(artefacts, kspace):
    """The contract wants zeros outside the sampled columns; fully sampled k-space must give the same image."""
    model = rt.load(artefacts.student_onnx)
    noisy = kspace + (1 - artefacts.mask) * 5.0
    np.testing.assert_array_equal(model.reconstruct(noisy, artefacts.mask), model.reconstruct(kspace, artefacts.mask))


@pytest.mark.parametrize("name", ["student_onnx", "student_xml", "baked_onnx"])
def test_run_zeroes_fully_sampled_kspace_outside_the_mask(artefacts, kspace, full_kspace, images, name):
    """A scanner integrator sends fully sampled k-space and the mask to apply: run() (the one place the Python
    API, kdc serve and kdc reconstruct go through) gives the pixels, and so the PSNR, of pre-masked k-space."""
    from kdc.data.metrics import psnr

    model = rt.load(getattr(artefacts, name), threads=1)
    feeds = {} if model.mask_baked else {"mask": rt.mask_columns(artefacts.mask, 32)}
    masked = model.run({**feeds, "kspace": kspace})["image"]
    full = model.run({**feeds, "kspace": full_kspace})["image"]
    np.testing.assert_array_equal(full, masked)
    assert psnr(images, full[:, 0]) == psnr(images, masked[:, 0]) > 15  # random weights: about 19 dB
    scaled = model.run({**feeds, "kspace": full_kspace * 3000}, normalise=True)["image"]
    np.testing.assert_allclose(scaled / 3000, model.run({**feeds, "kspace": kspace}, normalise=True)["image"],
                               rtol=1e-4, atol=1e-6 * np.abs(masked).max())


def test_masking_copies_only_kspace_that_needs_it(artefacts, kspace, full_kspace):
    from kdc.runtime.session import zero_outside

    mask = rt.mask_columns(artefacts.mask, 32)
    assert zero_outside(kspace, mask) is kspace  # a large pre-masked request costs no copy
    np.testing.assert_array_equal(zero_outside(full_kspace, mask), kspace)
    rows = np.ascontiguousarray(np.swapaxes(full_kspace, -1, -2)[..., :32, :])  # (N, 2, 32, 32): a row mask
    row_mask = mask.reshape(1, 1, 32, 1)
    np.testing.assert_array_equal(zero_outside(rows, row_mask), rows * row_mask)


@pytest.mark.parametrize("name", ["student_onnx", "student_xml"])
@pytest.mark.parametrize("normalise,hint", [(False, "into the training range (normalise)"),
                                            (True, "exceeds float32's range")])
def test_outputs_with_nan_are_refused_in_one_line(artefacts, name, normalise, hint):
    """Finite k-space of 3e38 overflows float32 inside the model: one error line and no numpy warning, never NaN
    pixels."""
    model = rt.load(getattr(artefacts, name), threads=1)
    huge = np.full((1, 2, *SIZE), 3e38, dtype=np.float32) * artefacts.mask
    with warnings.catch_warnings(), pytest.raises(rt.RuntimeModelError) as err:
        warnings.simplefilter("error")
        model.reconstruct(huge, artefacts.mask, normalise=normalise)
    message = str(err.value)
    assert "NaN or infinite values of 1280 in output 'image'" in message and "largest magnitude 3e+38" in message
    assert hint in message and "\n" not in message


@pytest.mark.parametrize("call,message", [
    (lambda m, k, mask: m.reconstruct(k), "takes a mask"),
    (lambda m, k, mask: m.reconstruct(k[:, :1], mask), "shape (3, 1, 40, 32), expected (N, 2, 40, 32)"),
    (lambda m, k, mask: m.reconstruct(k[..., :16], mask), "shape (3, 2, 40, 16)"),
    (lambda m, k, mask: m.reconstruct(k[:, 0] + 1j * k[:, 1], mask), "kspace_channels"),
    (lambda m, k, mask: m.reconstruct(np.where(k == 0, k, np.nan), mask), "NaN"),
    (lambda m, k, mask: m.reconstruct(k, mask[:, :16]), "width 32"),
    (lambda m, k, mask: m.reconstruct(k, mask * 2), "only 0 and 1"),
    (lambda m, k, mask: m.reconstruct(k, np.random.default_rng(0).integers(0, 2, mask.shape)), "not 1-D Cartesian"),
    (lambda m, k, mask: m.run({"kspace": k}), "missing ['mask']"),
    (lambda m, k, mask: m.run({"kspace": k.astype(np.float64), "mask": mask[None, None, :1]}), "dtype float64"),
    (lambda m, k, mask: m.run({"kspace": k, "mask": mask[None, None, :1], "x": k}), "unexpected ['x']"),
    (lambda m, k, mask: m.run({"kspace": k, "mask": mask[None, None, :1] * -7}), "input 'mask': mask must hold only 0"),
    (lambda m, k, mask: m.run({"kspace": k, "mask": mask[None, None, :1] * 0.5}), "input 'mask': mask must hold only"),
    (lambda m, k, mask: m.run({"kspace": k, "mask": mask[None, None, :1] * 0}), "input 'mask': mask samples nothing"),
    (lambda m, k, mask: m.reconstruct(k, mask * 0), "input 'mask': mask samples nothing"),
])
def test_bad_inputs_raise_clear_errors(artefacts, kspace, call, message):
    model = rt.load(artefacts.student_onnx)
    with pytest.raises(rt.RuntimeModelError) as err:
        call(model, kspace, artefacts.mask)
    assert message in str(err.value)


@pytest.mark.parametrize("engine", ["ort", "openvino"])
@pytest.mark.parametrize("edit,message", [
    (lambda c: c.update(image_size="abc"), "'image_size' must be two positive integers [H, W], got 'abc'"),
    (lambda c: c.update(image_size=[40, -32]), "'image_size' must be two positive integers"),
    (lambda c: c.update(image_size=[32, 40]), "'image_size' [32, 40] differs from the shape of output 'image'"),
    (lambda c: c["inputs"][0].update(shape=["N", 2, 32, 40]), "shape of 'kspace' (N, 2, 32, 40) differs from the graph"),
    (lambda c: c["inputs"][1].update(shape=[1, 1, 32]), "shape of 'mask' (1, 1, 32) differs from the graph's (1, 1, 1, 32)"),
    (lambda c: c["inputs"][1].update(shape=["N", 1, 1, 32]), "shape of 'mask' (N, 1, 1, 32) differs"),
    (lambda c: c["outputs"][0].update(name="picture"), "contract tensor 'picture' is not in the graph"),
    (lambda c: c["inputs"][0].update(dtype="object"),
     "contract inputs[0] ('kspace') 'dtype' is 'object', expected one of ['float32']"),
    (lambda c: c["outputs"][0].update(dtype="float64"), "contract outputs[0] ('image') 'dtype' is 'float64'"),
    (lambda c: c["inputs"][1].update(shape=[1, 1, 1.5, 32]),
     "contract inputs[1] ('mask') 'shape' must be a list of positive integers and dimension names, got "
     "[1, 1, 1.5, 32]"),
    (lambda c: c["inputs"][0].update(shape="N2HW"), "inputs[0] ('kspace') 'shape' must be a list"),
    (lambda c: c["inputs"][0].update(shape=[True, 2, 40, 32]), "inputs[0] ('kspace') 'shape' must be a list"),
    (lambda c: c["inputs"][0].update(name=["kspace"]), "contract inputs[0] 'name' must be a non-empty string"),
    (lambda c: c["inputs"].__setitem__(0, "kspace"), "contract inputs[0] must be an object, got 'kspace'"),
    (lambda c: c.pop("outputs"), "contract 'outputs' must be a non-empty list of tensors, got None"),
    (lambda c: c.update(inputs={"x" * 500: 1}), "got {'xxxxxxxx"),
    (lambda c: c.update(acceleration="4x"), "contract 'acceleration' must be a positive number or null, got '4x'"),
    (lambda c: c.update(mask_columns=[0, 32]), "contract 'mask_columns' must be null or distinct indices in [0, 32)"),
    (lambda c: c.update(task=["recon"]), "contract 'task' must be a string, got ['recon']"),
    (lambda c: c.update(task="recon_4d"), "contract unknown task 'recon_4d'"),
    (lambda c: c.update(contract_version="1"), "contract 'contract_version' must be a non-negative integer"),
    (lambda c: c.update(model="student"), "contract 'model' must be an object, got 'student'"),
    (lambda c: c["model"].update(role=None), "contract 'model.role' must be a string, got None"),
    (lambda c: c.update(quantization="int8"), "contract 'quantization' must be null or an object with a string mode"),
    (lambda c: c.update(precision="bf16"), "contract 'precision' must be null or an object, got 'bf16'"),
])
def test_contracts_that_contradict_the_graph_are_refused_at_load(artefacts, tmp_path, engine, edit, message):
    from .conftest import with_contract

    path = with_contract(artefacts.student_onnx, tmp_path / "edited.onnx", edit)
    with pytest.raises(rt.RuntimeModelError) as err:
        rt.load(path, engine=engine)
    assert message in str(err.value) and "\n" not in str(err.value)
    assert str(err.value).startswith(str(path)) and len(str(err.value)) < len(str(path)) + 200


def test_baked_model_rejects_a_different_mask(artefacts, kspace):
    model = rt.load(artefacts.baked_onnx)
    model.reconstruct(kspace, artefacts.mask)  # the same mask is fine
    with pytest.raises(rt.RuntimeModelError, match="baked"):
        model.reconstruct(kspace, np.ones(32))


@pytest.mark.parametrize("kwargs,message", [
    ({"engine": "tensorflow"}, "unknown engine"),
    ({"precision": "int4"}, "unknown precision"),
    ({"threads": 0}, "threads must be >= 1"),
    ({"providers": ["cuda"]}, "CUDAExecutionProvider is not available"),
    ({"precision": "f16"}, "cannot run at f16"),
])
def test_bad_load_options(artefacts, kwargs, message):
    with pytest.raises(rt.RuntimeModelError, match=message):
        rt.load(artefacts.student_onnx, **kwargs)


@pytest.mark.parametrize("name,engine,message", [
    ("student.pt", None, "student.pt: a PyTorch file, which the runtime does not run: export the checkpoint (kdc "
                         "export {path} --out student.onnx) and use the .onnx"),
    ("student.pt", "openvino", "a PyTorch file"),
    ("scan.h5", None, "scan.h5: not an exported model: expected .onnx or .xml"),
    ("student.xml", "ort",
     "student.xml: onnxruntime loads .onnx files; OpenVINO IR (.xml) runs on the openvino engine"),
])
def test_files_of_other_kinds_are_named_without_api_only_words(tmp_path, name, engine, message):
    """Messages that the CLI shows too: they name the file's kind and the next step, not engine='...'."""
    path = tmp_path / name
    path.write_bytes(b"\0" * 16)
    with pytest.raises(rt.RuntimeModelError) as err:
        rt.load(path, engine=engine)
    assert message.format(path=path) in str(err.value) and "engine=" not in str(err.value)


def test_files_that_are_not_kdc_models(tmp_path, artefacts):
    with pytest.raises(rt.RuntimeModelError, match="not found"):
        rt.load(tmp_path / "missing.onnx")
    garbage = tmp_path / "garbage.onnx"
    garbage.write_bytes(b"not a model")
    with pytest.raises(rt.RuntimeModelError, match="onnxruntime cannot load it"):
        rt.load(garbage)
    import onnx

    bare = onnx.load(artefacts.student_onnx)
    del bare.metadata_props[:]
    onnx.save(bare, tmp_path / "bare.onnx")
    with pytest.raises(rt.RuntimeModelError, match="no kdc contract"):
        rt.load(tmp_path / "bare.onnx")


@pytest.mark.parametrize("name", ["student_onnx", "student_xml"])
def test_concurrent_calls_do_not_mix_results(artefacts, name):
    """Eight threads on one reconstructor, each with its own input: every output is its own input's."""
    model = rt.load(getattr(artefacts, name), threads=1)
    inputs = [model.example_feeds(batch=1, seed=seed) for seed in range(8)]
    expected = [model.run(feeds)["image"] for feeds in inputs]
    mismatches = []

    def work(index: int) -> None:
        for _ in range(10):
            if not np.array_equal(model.run(inputs[index])["image"], expected[index]):
                mismatches.append(index)

    threads = [threading.Thread(target=work, args=(i,)) for i in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert mismatches == []


def test_gpu_fallback_is_reported():
    log = ["[V:onnxruntime:, session_state.cc:1598 VerifyEachNodeIsAssignedToAnEp] Node placements",
           "[V:onnxruntime:, session_state.cc:1601 VerifyEachNodeIsAssignedToAnEp]  Node(s) placed on "
           "[CUDAExecutionProvider]. Number of nodes: 30",
           "[V:onnxruntime:, session_state.cc:1601 VerifyEachNodeIsAssignedToAnEp]  Node(s) placed on "
           "[CPUExecutionProvider]. Number of nodes: 5"]
    cuda = ["CUDAExecutionProvider", "CPUExecutionProvider"]
    assert fallback_warnings(log, cuda, cuda) == [
        "5 of 35 nodes fell back to CPUExecutionProvider (placements: {'CUDAExecutionProvider': 30, "
        "'CPUExecutionProvider': 5}); run with a verbose onnxruntime log to see which"]
    assert fallback_warnings(log, cuda, ["CPUExecutionProvider"]) == [
        "CUDAExecutionProvider was requested but the session does not use it"]
    assert fallback_warnings(log[:2], cuda, cuda) == []


def test_native_stderr_is_captured():
    with captured_stderr() as lines:
        import os

        os.write(2, b"from native code\n")
    assert lines == ["from native code"]


def test_normalise_scales_a_volume_into_the_training_range_and_back(artefacts, kspace):
    model = rt.load(artefacts.student_onnx)
    peak = np.abs(np.fft.ifft2(kspace[:, 0] + 1j * kspace[:, 1], norm="ortho")).max()
    unit = model.reconstruct(kspace / np.float32(peak), artefacts.mask)
    scanner = model.reconstruct(kspace * 1000, artefacts.mask, normalise=True)
    np.testing.assert_allclose(scanner / (1000 * peak), unit, atol=1e-5)
    assert not np.allclose(model.reconstruct(kspace * 1000, artefacts.mask) / (1000 * peak), unit, atol=1e-3)


def test_openvino_models_freed_in_creation_order_leave_signals_deliverable(artefacts):
    """OpenVINO's CPU plugin gives the thread a new signal stack per Core and restores the previous one when the
    Core is freed, even if that one was freed meanwhile. With a Core per model, two models freed in the order they
    were loaded left the main thread on an unmapped signal stack: the next signal with a Python handler (torch's
    DataLoader installs one for SIGCHLD) killed the process with SIGSEGV, as one pytest process running the whole
    suite died when a test's subprocess exited."""
    code = f"""
import gc, signal, subprocess, sys
import kdc.runtime as rt
first = rt.load({str(artefacts.student_xml)!r})
second = rt.load({str(artefacts.student_onnx)!r}, engine="openvino")
del first; gc.collect()
del second; gc.collect()
signal.signal(signal.SIGCHLD, lambda signum, frame: None)
subprocess.run([sys.executable, "-c", "pass"], check=True)
print("ok")
"""
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0 and result.stdout.strip() == "ok", (result.returncode, result.stderr[-2000:])
