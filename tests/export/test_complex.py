"""Complex DC-CNNs and row-sampled masks through export and the runtime: real ONNX files on onnxruntime/OpenVINO."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

import kdc.runtime as rt
from kdc.export import ExportError, export_model
from kdc.models import load_checkpoint, save_checkpoint
from kdc.mri.masks import cartesian_mask

from .helpers import complex_model, line_mask, phased_undersampled, row_mask, tiny_model, undersampled

SIZE = (24, 20)
OLD_FILES = Path(__file__).parents[1] / "runtime" / "data"


@pytest.fixture(scope="module")
def complex_checkpoint(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("complex") / "kd_student.pt"
    meta = {"role": "kd_student", "task": "recon_complex", "acceleration": 4, "image_size": list(SIZE)}
    save_checkpoint(path, complex_model(), meta)
    return path


@pytest.mark.parametrize("lowering", ["masked", "matmul", "dft"])
def test_complex_export_matches_torch_per_lowering(complex_checkpoint, tmp_path, lowering):
    mask = cartesian_mask("random", 4, SIZE, seed=2)
    report = export_model(complex_checkpoint, tmp_path / "m.onnx", dc=lowering, mask=mask)
    contract = report.metadata
    assert (contract["task"], contract["output_kind"], contract["dc_lowering"]) == ("recon_complex", "complex", lowering)
    assert contract["outputs"][0]["shape"] == ["N", 2, *SIZE] and report.parity_error < 1e-4

    kspace = phased_undersampled(SIZE, mask, count=3)
    with torch.no_grad():
        expected = load_checkpoint(complex_checkpoint)[0](kspace, line_mask(mask)).numpy()
    model = rt.load(tmp_path / "m.onnx")
    image = model.reconstruct(kspace.numpy(), mask, output="complex")
    assert image.dtype == np.complex64 and image.shape == (3, 1, *SIZE)
    assert np.abs(image - (expected[:, :1] + 1j * expected[:, 1:])).max() < 1e-4
    magnitude = model.reconstruct(kspace.numpy(), mask)  # the default output: |x|
    assert magnitude.dtype == np.float32 and np.allclose(magnitude, np.abs(image), atol=1e-6)


@pytest.mark.parametrize("image", ["magnitude", "complex"])
@pytest.mark.parametrize("bake", [False, True], ids=["mask-input", "baked"])
def test_row_masks_take_the_masked_fast_path(tmp_path, image, bake):
    model = complex_model() if image == "complex" else tiny_model()
    mask = row_mask(SIZE)
    out = tmp_path / "rows.xml"
    report = export_model(model, out, fmt="openvino", image_size=SIZE, mask=mask, bake_mask=bake, role="student")
    assert report.dc == "masked"
    assert report.metadata["mask_rows"] == (np.flatnonzero(mask[:, 0]).tolist() if bake else None)
    kspace = (phased_undersampled if image == "complex" else undersampled)(SIZE, mask, 2)
    with torch.no_grad():
        expected = model(kspace, line_mask(mask)).numpy()
    loaded = rt.load(out)
    assert loaded.mask_axis == -2
    got = loaded.reconstruct(kspace.numpy(), None if bake else mask[:, 0])
    magnitude = np.hypot(expected[:, :1], expected[:, 1:]) if image == "complex" else expected
    assert np.abs(got - magnitude).max() < 1e-4
    assert sorted(loaded.example_feeds(2)) == (["kspace"] if bake else ["kspace", "mask"])
    loaded.run(loaded.example_feeds(2))
    with pytest.raises(rt.RuntimeModelError, match="not 1-D Cartesian along the rows"):
        loaded.reconstruct(kspace.numpy(), cartesian_mask("random", 4, SIZE, seed=2))


def test_files_made_the_old_way_still_load_and_export(tmp_path):
    """A checkpoint and ONNX file written by kdc before complex models (tests/runtime/data/PROVENANCE.md)."""
    old_onnx, old_pt, mask = OLD_FILES / "old_student.onnx", OLD_FILES / "old_student.pt", np.load(OLD_FILES / "old_mask.npy")
    model, meta = load_checkpoint(old_pt)
    kspace = (np.fft.fft2(np.random.default_rng(0).random((2, 16, 12)), norm="ortho") * mask)
    channels = rt.kspace_channels(kspace)
    with torch.no_grad():
        expected = model(torch.from_numpy(channels), torch.from_numpy(mask[None, None, :1])).numpy()
    loaded = rt.load(old_onnx)
    assert (loaded.task, loaded.mask_axis, loaded.contract.output_kind) == ("recon", -1, "real part")
    assert np.abs(loaded.reconstruct(channels, mask) - expected).max() < 1e-5
    assert meta["role"] == "student" and model.image_channels == 1
    report = export_model(old_pt, tmp_path / "again.onnx", mask=mask)
    assert (report.metadata["task"], report.metadata["output_kind"], report.dc) == ("recon", "real part", "masked")
    assert np.abs(rt.load(tmp_path / "again.onnx").reconstruct(channels, mask) - expected).max() < 1e-5


def test_magnitude_models_refuse_complex_and_complex_models_refuse_quantization(complex_checkpoint, tmp_path):
    mask = cartesian_mask("random", 4, SIZE, seed=2)
    images = np.ones((2, *SIZE), np.complex64)
    with pytest.raises(ExportError, match="images are complex but the 'recon' model reconstructs real images"):
        export_model(tiny_model(), tmp_path / "m.onnx", image_size=SIZE, mask=mask, images=images)
    with pytest.raises(ExportError, match="--quantize supports magnitude reconstruction"):
        export_model(complex_checkpoint, tmp_path / "m.onnx", mask=mask, quantize="int8")
    export_model(tiny_model(), tmp_path / "m.onnx", image_size=SIZE, mask=mask)
    with pytest.raises(rt.RuntimeModelError, match="reconstructs real images .*--image complex"):
        rt.load(tmp_path / "m.onnx").reconstruct(phased_undersampled(SIZE, mask).numpy(), mask, output="complex")
    assert not list(tmp_path.glob("*.tmp*"))
