"""Writers of small h5 files in exactly the KD-MRI and fastMRI single-coil layouts, and of NIfTI volumes."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import h5py
import numpy as np
import pytest

from kdc.mri.fft import fft2, fft2c, ifft2


@pytest.fixture(scope="session", autouse=True)
def volume_stats_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The volume-statistics cache of the tests' datasets: a temporary directory, not ``~/.cache/kdc``."""
    directory = tmp_path_factory.mktemp("kdc-cache")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("KDC_CACHE_DIR", str(directory))
        yield directory


def make_phantom(slices: int, height: int, width: int, seed: int = 0) -> np.ndarray:
    """``(S, H, W)`` non-negative images: an ellipse of varying size plus texture, zero outside it."""
    rng = np.random.default_rng(seed)
    y, x = np.meshgrid(np.linspace(-1, 1, height), np.linspace(-1, 1, width), indexing="ij")
    radius = np.linspace(0.6, 0.9, slices)[:, None, None]
    inside = (x / radius) ** 2 + (y / (0.9 * radius)) ** 2 < 1
    return (inside * (0.5 + 0.5 * rng.random((slices, height, width)))).astype(np.float32)


@pytest.fixture
def phantom() -> Callable[..., np.ndarray]:
    return make_phantom


@pytest.fixture(scope="session")
def write_kdmri() -> Callable[..., Path]:
    """``write(path, images (S, H, W), masks {acc: (H, W)})``: KD-MRI file, arrays (H, W, S), k-space uncentred."""

    def write(path: Path, images: np.ndarray, masks: dict[int, np.ndarray] | None = None) -> Path:
        path.parent.mkdir(parents=True, exist_ok=True)
        with h5py.File(path, "w") as file:
            file["volfs"] = np.moveaxis(images, 0, -1).astype(np.float64)
            for acc, mask in (masks or {}).items():
                kspace = fft2(images) * mask
                file[f"kspace_volus_{acc}"] = np.moveaxis(kspace, 0, -1).astype(np.complex128)
                file[f"img_volus_{acc}"] = np.moveaxis(np.abs(ifft2(kspace)), 0, -1)
        return path

    return write


@pytest.fixture
def write_fastmri() -> Callable[..., Path]:
    """``write(path, images (S, H, W))``: fastMRI single-coil file with centred ``kspace`` and its attributes."""

    def write(path: Path, images: np.ndarray) -> Path:
        path.parent.mkdir(parents=True, exist_ok=True)
        phase = np.exp(1j * np.linspace(0, 1, images.shape[-1]))
        kspace = fft2c(images * phase).astype(np.complex64)
        with h5py.File(path, "w") as file:
            file["kspace"] = kspace
            file["reconstruction_esc"] = np.zeros((images.shape[0], 320, 320), np.float32)
            file.attrs["acquisition"] = "CORPD_FBK"
            file.attrs["max"] = float(np.abs(images).max())
            file.attrs["norm"] = float(np.linalg.norm(images))
        return path

    return write


@pytest.fixture
def write_fastmri_multicoil() -> Callable[..., Path]:
    """``write(path, coil_images (S, C, H, W))``: fastMRI multi-coil file: centred ``kspace`` (S, C, H, W),
    ``reconstruction_rss`` (S, 320, 320), ``ismrmrd_header`` and the attributes."""

    def write(path: Path, coil_images: np.ndarray) -> Path:
        path.parent.mkdir(parents=True, exist_ok=True)
        height, width = coil_images.shape[-2:]
        rss = np.sqrt((np.abs(coil_images) ** 2).sum(axis=1))
        with h5py.File(path, "w") as file:
            file["kspace"] = fft2c(coil_images).astype(np.complex64)
            file["reconstruction_rss"] = np.zeros((len(rss), 320, 320), np.float32)
            file["ismrmrd_header"] = FASTMRI_HEADER.format(height=height, width=width, last_line=width - 1,
                                                           centre_line=width // 2)
            file.attrs["acquisition"] = "CORPD_FBK"
            file.attrs["max"] = float(rss.max())
            file.attrs["norm"] = float(np.linalg.norm(rss))
            file.attrs["patient_id"] = "test"
        return path

    return write


FASTMRI_HEADER = """<?xml version="1.0" encoding="utf-8"?>
<ismrmrdHeader xmlns="http://www.ismrm.org/ISMRMRD">
<experimentalConditions><H1resonanceFrequency_Hz>127000000</H1resonanceFrequency_Hz></experimentalConditions>
<encoding><encodedSpace><matrixSize><x>{height}</x><y>{width}</y><z>1</z></matrixSize>
<fieldOfView_mm><x>280</x><y>140</y><z>4.5</z></fieldOfView_mm></encodedSpace>
<reconSpace><matrixSize><x>320</x><y>320</y><z>1</z></matrixSize>
<fieldOfView_mm><x>140</x><y>140</y><z>4.5</z></fieldOfView_mm></reconSpace>
<encodingLimits><kspace_encoding_step_1><minimum>0</minimum><maximum>{last_line}</maximum><center>{centre_line}</center>
</kspace_encoding_step_1></encodingLimits>
<trajectory>cartesian</trajectory></encoding></ismrmrdHeader>"""


@pytest.fixture
def write_nifti() -> Callable[..., Path]:
    """``write(path, data (X, Y, Z), affine)``: a NIfTI-1 volume written by nibabel."""
    import nibabel as nib

    def write(path: Path, data: np.ndarray, affine: np.ndarray | None = None) -> Path:
        nib.save(nib.Nifti1Image(data, np.eye(4) if affine is None else affine), path)
        return path

    return write


def write_mask_without_dc(root: Path, shape: tuple[int, int]) -> None:
    """A 4x mask that leaves out the DC column. A sampled DC term hides the last bias of every cascade from the loss
    (data consistency removes a constant image), and Adam turns that zero gradient's rounding noise into steps of
    +-lr; without it every weight has a real gradient and two runs can be compared weight by weight."""
    mask = np.zeros(shape, np.float32)
    mask[:, 1::4] = 1
    (root / "masks").mkdir(parents=True)
    np.save(root / "masks" / "mask_4x.npy", mask)


#: Constructor arguments of the tiny fastMRI VarNet the tests export (1 cascade, 2 pools).
TINY_VARNET = {"num_cascades": 1, "chans": 4, "pools": 2, "sens_chans": 2, "sens_pools": 2}
#: Size the tiny VarNet is exported at (fastMRI layout: H rows, W phase-encode columns).
VARNET_SIZE = (32, 24)


@pytest.fixture(scope="session")
def fastmri_varnet(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, dict]:
    """``(weights, exported .xml, report metadata)``: fastMRI's own VarNet with random weights, exported once by
    ``kdc.export.export_model`` to OpenVINO IR (gated on onnxruntime and OpenVINO) with a dynamic coil count."""
    pytest.importorskip("fastmri.models", reason="fastmri 0.3.0 (make install: pip install --no-deps fastmri)")
    import torch
    from fastmri.models import VarNet

    from kdc.export import export_model

    directory = tmp_path_factory.mktemp("varnet")
    torch.manual_seed(0)
    weights = directory / "varnet.pt"
    state = {f"model.{k}": v for k, v in VarNet(**TINY_VARNET).state_dict().items()}
    torch.save({"state_dict": state, "epoch": torch.tensor(3)}, weights)  # as a Lightning checkpoint holds it
    report = export_model("fastmri.models:VarNet", directory / "varnet.xml", init=TINY_VARNET, weights=weights,
                          image_size=VARNET_SIZE)
    return weights, report.path, report.metadata
