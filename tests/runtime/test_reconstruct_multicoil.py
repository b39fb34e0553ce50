"""``kdc reconstruct`` with an exported fastMRI VarNet on fastMRI multi-coil files: the image fastMRI's PyTorch gives."""

from __future__ import annotations

import h5py
import numpy as np
import pytest
from typer.testing import CliRunner

import kdc.runtime as rt
from kdc.cli import app
from kdc.data.demo import validation_images
from kdc.mri.masks import cartesian_mask
from kdc.mri.simulate import complex_coil_images
from tests.conftest import TINY_VARNET, VARNET_SIZE

#: Largest relative L2 difference between kdc reconstruct (OpenVINO f32) and fastMRI's VarNet in PyTorch.
TOLERANCE = 1e-4


def undersample(path, seed: int = 0) -> np.ndarray:
    """Turn a fully sampled fastMRI file into a test-set file: k-space zero outside a centred 4x column mask, and
    the ``mask`` (W,) stored beside it. Returns the mask."""
    with h5py.File(path, "r+") as file:
        width = file["kspace"].shape[-1]
        mask = np.fft.fftshift(cartesian_mask("random", 4, (2, width), seed=seed)[0]).astype(bool)
        file["kspace"][...] = file["kspace"][()] * mask
        file["mask"] = mask
    return mask


def test_reconstruct_equals_fastmri_varnet_on_the_same_file(tmp_path, fastmri_varnet, write_fastmri_multicoil):
    torch = pytest.importorskip("torch")
    from fastmri.data import transforms
    from fastmri.models import VarNet

    weights, exported, _ = fastmri_varnet
    coil_images = complex_coil_images(validation_images(VARNET_SIZE, 3), 6) * 2e-4  # fastMRI's scale
    source = write_fastmri_multicoil(tmp_path / "file_brain_AXT2_1.h5", coil_images)
    mask = undersample(source)
    out = tmp_path / "out"
    result = CliRunner().invoke(app, ["reconstruct", str(exported), str(source), "--out", str(out), "-f", "h5",
                                      "--batch", "2"])
    assert result.exit_code == 0, result.output
    assert "3 slices 32x24" in result.output and "acquired" in result.output
    with h5py.File(out / "file_brain_AXT2_1.h5") as file:
        reconstruction = file["reconstruction"][()]
    # fastMRI's own forward on the file's k-space and mask (VarnetDataTransform: to_tensor, mask (1, 1, W, 1)).
    varnet = VarNet(**TINY_VARNET).eval()
    state = torch.load(weights, weights_only=True)["state_dict"]
    varnet.load_state_dict({name.removeprefix("model."): value for name, value in state.items()})
    with h5py.File(source) as file:
        kspace = transforms.to_tensor(file["kspace"][()])
    with torch.no_grad():
        expected = varnet(kspace, torch.from_numpy(mask).reshape(1, 1, 1, -1, 1)).numpy()
    assert reconstruction.shape == expected.shape == (3, *VARNET_SIZE)
    error = np.linalg.norm(reconstruction - expected) / np.linalg.norm(expected)
    assert error < TOLERANCE
    # The Python runtime gives the same image from the same arrays.
    with h5py.File(source) as file:
        direct = rt.load(exported).reconstruct(file["kspace"][()], mask)
    np.testing.assert_allclose(direct, reconstruction, rtol=1e-5, atol=1e-9)


def test_a_file_of_another_size_names_the_export_command(tmp_path, fastmri_varnet, write_fastmri_multicoil):
    _, exported, _ = fastmri_varnet
    source = write_fastmri_multicoil(tmp_path / "big.h5", complex_coil_images(validation_images((40, 24), 1), 2))
    undersample(source)
    result = CliRunner().invoke(app, ["reconstruct", str(exported), str(source), "--out", str(tmp_path / "out")])
    assert result.exit_code == 1 and len(result.output.strip().splitlines()) == 1, result.output
    assert ("kdc export fastmri.models:VarNet --init JSON --weights FILE --size 40 24 --format openvino"
            in result.output)
    assert not (tmp_path / "out").exists()


def test_kdc_serve_answers_with_the_local_image_without_torch(tmp_path, fastmri_varnet):
    from tests.runtime.helpers import running_server

    _, exported, _ = fastmri_varnet
    local = rt.load(exported, threads=1)
    feeds = local.example_feeds(2)
    body = {"inputs": [{"name": name, "shape": list(value.shape), "datatype": "FP32", "data": value.ravel().tolist()}
                       for name, value in feeds.items()]}
    with running_server([exported], tmp_path / "server.log", "--threads", "1") as server:  # torch blocked there
        metadata = server.client.get(f"/v2/models/{exported.stem}").json()
        response = server.client.post(f"/v2/models/{exported.stem}/infer", json=body)
    assert [entry["shape"] for entry in metadata["inputs"]] == [[-1, -1, *VARNET_SIZE, 2], [1, 1, 1, VARNET_SIZE[1], 1]]
    assert response.status_code == 200, response.text
    output = response.json()["outputs"][0]
    image = np.asarray(output["data"], dtype=np.float32).reshape(output["shape"])
    np.testing.assert_allclose(image, local.run(feeds)["image"], rtol=1e-5, atol=1e-9)


def test_reconstruct_with_fastmri_unet_equals_fastmri_unet_pipeline(tmp_path, write_fastmri_multicoil):
    """The U-Net file takes the zero-filled image: kdc reconstruct makes it as UnetDataTransform does (crop, |.|,
    RSS) and the graph normalises, clamps and scales back, as UnetDataTransform and UnetModule do."""
    torch = pytest.importorskip("torch")
    from fastmri.data.transforms import UnetDataTransform
    from fastmri.models import Unet

    from kdc.export import export_model

    torch.manual_seed(2)
    unet = Unet(1, 1, chans=4, num_pool_layers=2).eval()
    exported = export_model(unet, tmp_path / "unet.onnx", image_size=(24, 16)).path
    source = write_fastmri_multicoil(tmp_path / "file1000.h5",
                                     complex_coil_images(validation_images(VARNET_SIZE, 2), 4) * 2e-4)
    mask = undersample(source)
    result = CliRunner().invoke(app, ["reconstruct", str(exported), str(source), "--out", str(tmp_path / "out"),
                                      "-f", "h5"])
    assert result.exit_code == 0, result.output
    with h5py.File(tmp_path / "out" / "file1000.h5") as file:
        reconstruction = file["reconstruction"][()]
    transform = UnetDataTransform("multicoil")
    expected = []
    with h5py.File(source) as file:
        for index, kspace in enumerate(file["kspace"][()]):
            sample = transform(kspace, mask, None, {"recon_size": (24, 16, 1)}, source.name, index)
            with torch.no_grad():
                expected.append((unet(sample.image[None, None])[0, 0] * sample.std + sample.mean).numpy())
    assert reconstruction.shape == (2, 24, 16)
    assert np.linalg.norm(reconstruction - expected) / np.linalg.norm(expected) < 1e-5
