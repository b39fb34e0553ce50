"""``kdc export MODULE:CLASS``: fastMRI's own Unet and VarNet, the generic complex/FFT lowering, one-line failures."""

from __future__ import annotations

import inspect

import numpy as np
import pytest
import torch
from torch import nn
from typer.testing import CliRunner

import kdc.runtime as rt
from kdc.cli import app
from kdc.export import ExportError, export_model
from kdc.export.architectures import ARCHITECTURES, DeclaredArchitecture, ExportRequest, registered, relative_error
from kdc.export.complex_lowering import RealComplexMode, UnsupportedOperation
from kdc.tasks import IMAGE_RECON

from tests.conftest import TINY_VARNET, VARNET_SIZE

fastmri_models = pytest.importorskip("fastmri.models", reason="fastmri 0.3.0 (make install: pip install --no-deps)")
import fastmri  # noqa: E402
from fastmri.data import transforms  # noqa: E402

TINY_UNET = {"in_chans": 1, "out_chans": 1, "chans": 4, "num_pool_layers": 2}


def test_complex_mode_lowers_torch_fft_and_complex_ops_exactly():
    data = torch.randn(2, 3, 10, 7, 2)
    z = torch.view_as_complex(data)

    def program(data: torch.Tensor) -> list[torch.Tensor]:
        z = torch.view_as_complex(data)
        shifted = torch.fft.fftshift(torch.fft.fft2(z, norm="ortho"), dim=(-2, -1))
        return [fastmri.fft2c(data), fastmri.ifft2c(data), torch.view_as_real(shifted),
                torch.view_as_real(torch.fft.ifftn(z, dim=(1, 3))), torch.view_as_real(torch.fft.fft(z, norm="forward")),
                torch.view_as_real(torch.fft.ifftshift(torch.fft.ifft2(z * z.conj() + z - 2 * z), dim=-1)),
                torch.abs(torch.fft.fft(z)), torch.complex(data[..., 0], data[..., 1]).real]

    with RealComplexMode():
        lowered = program(data)
        assert torch.view_as_complex(data).shape == z.shape and torch.view_as_complex(data).dim() == 4
    for got, expected in zip(lowered, program(data)):
        assert not got.is_complex() and got.shape == expected.shape
        torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-5)


def test_an_operator_it_cannot_lower_is_one_line_with_the_model_line():
    def program(data: torch.Tensor) -> torch.Tensor:
        return torch.angle(torch.fft.fft2(torch.view_as_complex(data)))

    line = inspect.getsourcelines(program)[1] + 1
    with pytest.raises(UnsupportedOperation) as caught, RealComplexMode():
        program(torch.randn(1, 4, 4, 2))
    message = str(caught.value)
    assert "\n" not in message and "torch.angle" in message and f"test_user_models.py:{line}" in message


def test_fastmri_adapters_are_value_identical():
    torch.manual_seed(0)
    varnet = fastmri_models.VarNet(**TINY_VARNET).eval()
    unet = fastmri_models.Unet(**TINY_UNET).eval()
    request = ExportRequest(size=(30, 22), fmt="onnx", coils=3)  # odd halvings: the U-Net pads
    architecture = registered()["fastmri_varnet"]
    graph, feeds, expected, _, _ = architecture.prepare(varnet, request)
    assert feeds["kspace"].shape == (4, 3, 30, 22, 2) and feeds["mask"].shape == (1, 1, 1, 22, 1)
    with torch.no_grad():
        original = varnet(torch.from_numpy(feeds["kspace"]), torch.from_numpy(feeds["mask"]).bool()).numpy()
        lowered = graph(*map(torch.from_numpy, feeds.values())).numpy()
    assert np.array_equal(expected, original) and relative_error(lowered, original) < 1e-6
    image = torch.rand(2, 1, 30, 22)
    from kdc.export.fastmri import UNET_PADDING, unet_forward

    with torch.no_grad(), UNET_PADDING.patch():
        assert fastmri_models.Unet.forward is unet_forward
        patched = unet(image)
    assert fastmri_models.Unet.forward is not unet_forward
    assert torch.equal(patched, unet(image).detach())


def test_unet_exports_with_fastmri_pre_and_post_processing_in_the_graph(tmp_path):
    torch.manual_seed(1)
    unet = fastmri_models.Unet(**TINY_UNET).eval()
    weights = tmp_path / "unet.pt"
    torch.save(unet.state_dict(), weights)
    out = tmp_path / "unet.xml"  # OpenVINO IR: gated on onnxruntime and OpenVINO
    result = CliRunner().invoke(app, ["export", "fastmri.models:Unet", "--init", '{"in_chans": 1, "out_chans": 1, '
                                      '"chans": 4, "num_pool_layers": 2}', "--weights", str(weights), "--size", "32",
                                      "24", "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert "parity relative L2 error" in result.output
    model = rt.load(out)
    assert model.task == IMAGE_RECON.name and model.input_names == ["image_zero_filled"]
    contract = model.contract.to_dict()
    assert contract["parity"]["metric"] == "relative_l2" and contract["parity"]["tolerance"] == 1e-3
    assert sorted(runtime.split()[0] for runtime in contract["parity"]["relative_l2_errors"]) == [
        "onnxruntime", "openvino"]
    assert contract["model"]["source"] == "fastmri.models:Unet" and contract["model"]["config"]["chans"] == 4
    assert set(contract["lowering"]["adapters"]) == {"unet_padding_test"}
    # fastMRI's pipeline (UnetDataTransform + UnetModule) on a zero-filled image at scanner scale, in PyTorch.
    zero_filled = (np.random.default_rng(0).random((3, 32, 24)) * 3e-4).astype(np.float32)
    expected = []
    for image in torch.from_numpy(zero_filled):
        normalised, mean, std = transforms.normalize_instance(image, eps=1e-11)
        with torch.no_grad():
            output = unet(normalised.clamp(-6, 6)[None, None])[0, 0]
        expected.append((output * std + mean).numpy())
    got = model.run({"image_zero_filled": zero_filled[:, None]})["image"][:, 0]  # OpenVINO f32
    assert relative_error(got, np.stack(expected)) < 1e-5


def test_varnet_export_passes_onnxruntime_and_openvino(fastmri_varnet):
    _, path, metadata = fastmri_varnet
    parity = metadata["parity"]
    assert parity["metric"] == "relative_l2" and parity["relative_l2_error"] <= 1e-3
    assert sorted(runtime.split()[0] for runtime in parity["relative_l2_errors"]) == ["onnxruntime", "openvino"]
    assert metadata["task"] == "recon_multicoil" and metadata["coils"] == "dynamic"
    assert metadata["inputs"][0]["shape"] == ["N", "C", *VARNET_SIZE, 2]
    assert metadata["outputs"][0]["shape"] == ["N", *VARNET_SIZE]
    assert set(metadata["lowering"]["adapters"]) == {"unet_padding_test", "varnet_mask_center"}
    assert all(error < 1e-5 for error in metadata["lowering"]["pytorch_checks_relative_l2"].values())
    model = rt.load(path)
    for coils in (1, 5):  # the coil count is an input dimension
        feeds = model.example_feeds(2) | {"kspace": model.example_feeds(2)["kspace"][:, :1].repeat(coils, axis=1)}
        assert model.run(feeds)["image"].shape == (2, *VARNET_SIZE)


class DataDependent(nn.Module):
    """A model with a branch on a value: no exporter takes it, and kdc has no adapter for it."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(1, 1, 3, padding=1)

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        if image.mean() > 0.5:
            return self.conv(image)
        return image


def test_a_model_that_cannot_be_exported_is_one_line_naming_its_source_line(tmp_path, monkeypatch):
    from kdc.export.fastmri import unet_feeds

    entry = DeclaredArchitecture("data_dependent", (f"{__name__}:DataDependent",), IMAGE_RECON, graph=lambda m: m,
                                 feeds=unet_feeds, contract=lambda request: {"dc_lowering": "none"})
    monkeypatch.setitem(ARCHITECTURES, entry.name, entry.as_architecture())
    with pytest.raises(ExportError) as caught:
        export_model(DataDependent(), tmp_path / "m.onnx", image_size=(16, 16))
    line = inspect.getsourcelines(DataDependent.forward)[1] + 1
    message = str(caught.value)
    assert "\n" not in message and message.startswith("cannot export DataDependent: ")
    assert f"test_user_models.py:{line}" in message
    assert not (tmp_path / "m.onnx").exists()


@pytest.mark.parametrize(("args", "expected"), [
    (["--coils", "0"], "expected a positive number of coils or 'dynamic'"),
    (["--init", '{"in_chans": 1, "out_chans": 1}', "--coils", "15"],
     "--coils: a fastmri_unet model takes image_zero_filled; drop it"),
    (["--init", "[1]"], "expected a JSON object of constructor arguments"),
    (["--init", '{"chans": 4, "bogus": 1}'], "fastmri.models:Unet: cannot build it with --init"),
    (["--init", '{"in_chans": 1, "out_chans": 1}', "--mask", "m.npy"],
     "--mask: a fastmri_unet model takes image_zero_filled; drop it"),
])
def test_bad_user_model_options_are_one_line(tmp_path, args, expected):
    result = CliRunner().invoke(app, ["export", "fastmri.models:Unet", "--size", "16", "16", "--out",
                                      str(tmp_path / "u.onnx"), *args])
    assert result.exit_code != 0 and expected in result.output, result.output
    assert "Traceback" not in result.output and not (tmp_path / "u.onnx").exists()


@pytest.mark.parametrize(("source", "expected"), [
    ("torch.nn:Identity", "no registered architecture exports a torch.nn.modules.linear:Identity: kdc exports"),
    ("fastmri.models:Nothing", "fastmri.models has no torch.nn.Module subclass 'Nothing'"),
    ("nowhere.models:Net", "cannot import 'nowhere.models'"),
])
def test_a_class_kdc_cannot_export_or_find_is_one_line(tmp_path, source, expected):
    result = CliRunner().invoke(app, ["export", source, "--size", "16", "16", "--out", str(tmp_path / "u.onnx")])
    assert result.exit_code != 0 and expected in result.output, result.output
    assert "Traceback" not in result.output and not (tmp_path / "u.onnx").exists()
