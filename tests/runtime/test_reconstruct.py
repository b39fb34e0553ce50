"""``kdc reconstruct`` end to end: real h5/npy inputs, real exported models, files read back, errors one line each."""

import contextlib
import json
import os
import re
import signal
import subprocess
import sys
import time

import h5py
import numpy as np
import pytest
from typer.testing import CliRunner

import kdc.runtime as rt
from kdc.cli import app
from kdc.mri.fft import fft2c
from kdc.mri.masks import cartesian_mask

from .conftest import SIZE
from .helpers import BLOCK_TORCH


def kdc_reconstruct(*args):
    return CliRunner().invoke(app, ["reconstruct", *map(str, args)])


def leftovers(directory):
    """Temporary directories left beside outputs."""
    return [p.name for p in directory.iterdir() if p.name.startswith(".") and p.name.endswith(".tmp")]


@pytest.fixture(scope="module")
def fastmri_file(tmp_path_factory):
    """A fully sampled fastMRI single-coil file of 4 real brain slices (kdc's validation images), no phase."""
    from kdc.data.demo import validation_images

    path = tmp_path_factory.mktemp("inputs") / "file1000.h5"
    with h5py.File(path, "w") as file:
        file["kspace"] = fft2c(validation_images(SIZE, 4)).astype(np.complex64)
    return path


def test_fastmri_file_to_every_format_equals_the_model(tmp_path, artefacts, fastmri_file):
    out = tmp_path / "out"
    result = kdc_reconstruct(artefacts.student_onnx, fastmri_file, "--out", out, "--format", "nifti,dicom",
                             "-f", "h5", "--acc", "4", "--batch", "3", "--threads", "1")
    assert result.exit_code == 0, result.output
    assert "[1/1] file1000.h5: 4 slices 40x32" in result.output and "-> nifti, dicom, h5" in result.output
    assert sorted(p.name for p in out.iterdir()) == [".kdc-output", "file1000", "file1000.h5", "file1000.nii.gz",
                                                     "metrics.json"]
    with h5py.File(fastmri_file) as file:
        kspace = file["kspace"][()]
    mask = cartesian_mask("random", 4, SIZE, seed=0)
    model = rt.load(artefacts.student_onnx)
    expected = np.abs(model.reconstruct(rt.kspace_channels(kspace, centred=True), mask, normalise=True)[:, 0])
    with h5py.File(out / "file1000.h5") as file:
        np.testing.assert_allclose(file["reconstruction"][()], expected, rtol=1e-5, atol=1e-6)
    import nibabel as nib

    np.testing.assert_allclose(nib.load(out / "file1000.nii.gz").get_fdata().transpose(2, 1, 0), expected, atol=1e-6)
    assert len(list((out / "file1000").glob("IM_*.dcm"))) == 4
    metrics = json.loads((out / "metrics.json").read_text())["volumes"]["file1000"]
    assert set(metrics) >= {"psnr", "ssim", "nmse", "zero_filled"} and metrics["mask"] == "random seed 0"
    assert not leftovers(tmp_path)


def test_reconstruction_is_upright_against_the_reference(tmp_path, artefacts, fastmri_file):
    result = kdc_reconstruct(artefacts.student_onnx, fastmri_file, "--out", tmp_path / "out", "--acc", "4")
    assert result.exit_code == 0, result.output
    metrics = json.loads((tmp_path / "out" / "metrics.json").read_text())["volumes"]["file1000"]
    assert metrics["zero_filled"]["psnr"] > 20 and metrics["psnr"] > 15


def test_kdmri_input_with_mask_file_on_openvino(tmp_path, artefacts, write_kdmri, phantom):
    np.save(tmp_path / "mask.npy", artefacts.mask)
    source = write_kdmri(tmp_path / "vol.h5", phantom(2, *SIZE))
    result = kdc_reconstruct(artefacts.student_xml, source, "--out", tmp_path / "out", "--mask", tmp_path / "mask.npy",
                             "--engine", "openvino", "--format", "h5")
    assert result.exit_code == 0, result.output
    model = rt.load(artefacts.student_xml)
    expected = np.abs(model.reconstruct(rt.kspace_channels(np.fft.fft2(phantom(2, *SIZE), norm="ortho")),
                                        artefacts.mask, normalise=True)[:, 0])
    with h5py.File(tmp_path / "out" / "vol.h5") as file:
        np.testing.assert_allclose(file["reconstruction"][()], expected, rtol=1e-4, atol=1e-5)
        assert file.attrs["mask"] == "mask mask.npy"


def test_fastmri_partial_fourier_file_samples_inside_its_band(tmp_path, artefacts, fastmri_file):
    """A fastMRI file whose ismrmrd_header limits (fastMRI's padding_left) leave its first columns unacquired: --acc
    draws its columns inside the band, the model gets the others as unacquired, the reference is the POCS image."""
    from kdc.data.metrics import psnr
    from kdc.mri.fft import centred_to_uncentred, ifft2
    from kdc.mri.partial_fourier import Band, pocs
    from tests.conftest import FASTMRI_HEADER

    height, width = SIZE
    first = width // 2 - 4  # 4 columns before the centre: 20 of 32
    source = tmp_path / "pf.h5"
    with h5py.File(fastmri_file) as file:
        kspace = file["kspace"][()]
    kspace[..., :first] = 0
    with h5py.File(source, "w") as file:
        file["kspace"] = kspace
        file["ismrmrd_header"] = FASTMRI_HEADER.format(height=height, width=width, last_line=width - 1 - first,
                                                       centre_line=width // 2 - first)
    out = tmp_path / "out"
    result = kdc_reconstruct(artefacts.student_onnx, source, "--out", out, "-f", "h5", "--acc", "4", "--threads", "1")
    assert result.exit_code == 0, result.output  # before: the zero columns were fed to the model as acquired
    assert "random seed 0 within the partial Fourier band" in result.output
    band = Band(first, width, width).lines()
    mask = cartesian_mask("random", 4, SIZE, seed=0) * band
    model = rt.load(artefacts.student_onnx)
    expected = np.abs(model.reconstruct(rt.kspace_channels(kspace, centred=True) * mask, mask, normalise=True)[:, 0])
    with h5py.File(out / "pf.h5") as file:
        image = file["reconstruction"][()]
    np.testing.assert_allclose(image, expected, rtol=1e-5, atol=1e-6)
    reference = np.abs(ifft2(pocs(centred_to_uncentred(kspace), None, band)))
    metrics = json.loads((out / "metrics.json").read_text())["volumes"]["pf"]
    assert metrics["psnr"] == pytest.approx(psnr(reference, image), abs=0.05)


def test_undersampled_npy_uses_its_columns_and_a_baked_model_its_mask(tmp_path, artefacts, fastmri_file):
    with h5py.File(fastmri_file) as file:
        kspace = file["kspace"][()]
    columns = np.fft.fftshift(artefacts.mask[0])  # the baked mask, centred like the k-space
    np.save(tmp_path / "scan.npy", kspace * columns)
    result = kdc_reconstruct(artefacts.baked_onnx, tmp_path / "scan.npy", "--out", tmp_path / "out", "--crop")
    assert result.exit_code == 1 and "--crop 320x320: the image is only 40x32" in result.output
    result = kdc_reconstruct(artefacts.baked_onnx, tmp_path / "scan.npy", "--out", tmp_path / "out")
    assert result.exit_code == 0, result.output
    assert "acquired" in result.output and not (tmp_path / "out" / "metrics.json").exists()
    other = np.roll(columns, 1)
    np.save(tmp_path / "other.npy", kspace * other)
    result = kdc_reconstruct(artefacts.baked_onnx, tmp_path / "other.npy", "--out", tmp_path / "out2")
    assert result.exit_code == 1 and "mask baked in" in result.output


def bad_input(tmp_path, artefacts, fastmri_file):
    """name -> (model, input, extra options, expected message)."""
    with h5py.File(tmp_path / "multi.h5", "w") as file:
        file["kspace"] = np.ones((2, 4, *SIZE), np.complex64)
    np.save(tmp_path / "big.npy", fft2c(np.ones((2, 64, 48))).astype(np.complex64))
    (tmp_path / "broken.h5").write_bytes(b"\x89HDF\r\n\x1a\n" + b"\0" * 64)
    under = tmp_path / "under.h5"
    with h5py.File(under, "w") as file:
        file["kspace"], file["mask"] = np.ones((1, *SIZE), np.complex64), (np.arange(SIZE[1]) % 2).astype(np.float32)
    return {
        "multi-coil": (artefacts.student_onnx, tmp_path / "multi.h5", [], "multi-coil k-space (4 coils) needs a complex"),
        "size": (artefacts.student_onnx, tmp_path / "big.npy", ["--acc", "4"],
                 "k-space matrix 64x48 does not fit student.onnx, exported for 40x32; export the model for this size: "
                 "kdc export RUN --model student --size 64 48 --out student_64x48.onnx"),
        "fully sampled": (artefacts.student_onnx, fastmri_file, [], "fully sampled: undersample it with --acc"),
        "undersampled": (artefacts.student_onnx, under, ["--acc", "4"], "already undersampled (16 of 32 lines"),
        "unreadable": (artefacts.student_onnx, tmp_path / "broken.h5", [], "not a readable HDF5 file"),
        "missing": (artefacts.student_onnx, tmp_path / "absent.h5", [], "input file not found"),
        "format": (artefacts.student_onnx, fastmri_file, ["--format", "png"], "unknown output format png"),
        "both masks": (artefacts.student_onnx, fastmri_file, ["--acc", "4", "--mask", "m.npy"], "not both"),
        "swapped": (fastmri_file, artefacts.student_onnx, [],
                    f"{fastmri_file} is a scan, not a model: usage: kdc reconstruct MODEL SCAN... --out DIR (here: "
                    f"kdc reconstruct {artefacts.student_onnx} {fastmri_file} ...)"),
        "checkpoint": (artefacts.student_pt, fastmri_file, [],
                       f"{artefacts.student_pt}: a PyTorch file, which the runtime does not run: export the checkpoint "
                       f"(kdc export {artefacts.student_pt} --out student.onnx) and use the .onnx"),
        "acceleration": (artefacts.student_onnx, fastmri_file, ["--acc", "3"],
                         "unknown acceleration 3x: expected one of [4, 5, 8], or give its centre fraction "
                         "(--center-fraction"),
        "centre fraction alone": (artefacts.student_onnx, fastmri_file, ["--center-fraction", "0.1"],
                                  "--center-fraction shapes the mask of --acc: give --acc too"),
    }


@pytest.mark.parametrize("case", ["multi-coil", "size", "fully sampled", "undersampled", "unreadable", "missing",
                                  "format", "both masks", "swapped", "checkpoint", "acceleration",
                                  "centre fraction alone"])
def test_bad_input_is_one_line_and_leaves_nothing(tmp_path, artefacts, fastmri_file, case):
    model, source, options, message = bad_input(tmp_path, artefacts, fastmri_file)[case]
    out = tmp_path / "out"
    result = kdc_reconstruct(model, source, "--out", out, "--format", "nifti,dicom", *options)
    assert result.exit_code == 1
    assert result.output.startswith("error: ") and result.output.count("\n") == 1, result.output
    assert message in result.output
    assert not out.exists() and not leftovers(tmp_path)


def test_center_fraction_gives_any_acceleration_its_mask(tmp_path, artefacts, fastmri_file):
    """--acc 3 asks for its centre fraction: --center-fraction is an option of kdc reconstruct."""
    out = tmp_path / "out"
    result = kdc_reconstruct(artefacts.student_onnx, fastmri_file, "--out", out, "--acc", "3", "--center-fraction",
                             "0.1", "--mask-seed", "2", "--format", "h5")
    assert result.exit_code == 0, result.output
    with h5py.File(fastmri_file) as file:
        kspace = file["kspace"][()]
    mask = cartesian_mask("random", 3, SIZE, seed=2, center_fraction=0.1)
    expected = np.abs(rt.load(artefacts.student_onnx).reconstruct(rt.kspace_channels(kspace, centred=True), mask,
                                                                  normalise=True)[:, 0])
    with h5py.File(out / "file1000.h5") as file:
        np.testing.assert_allclose(file["reconstruction"][()], expected, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("options,warned", [(["--acc", "8"], True), (["--acc", "4"], False)])
def test_acc_other_than_the_trained_one_is_said_once(tmp_path, artefacts, fastmri_file, options, warned):
    result = kdc_reconstruct(artefacts.student_onnx, fastmri_file, "--out", tmp_path / "out", *options)
    assert result.exit_code == 0, result.output
    line = "warning: student.onnx was trained at 4x, --acc 8 samples at 8x: expect a worse image than a model " \
           "trained at 8x gives\n"
    assert result.output.count("trained at 4x") == warned and (line in result.output) == warned


def test_acquired_mask_far_from_the_trained_acceleration_gets_a_note(tmp_path, artefacts, fastmri_file):
    with h5py.File(fastmri_file) as file:
        kspace = file["kspace"][()]
    for name, step in (("eight.h5", 8), ("three.h5", 3)):  # 8x: noted; 3.2x: within the slack of a 4x model
        with h5py.File(tmp_path / name, "w") as file:
            file["kspace"], file["mask"] = kspace, (np.arange(SIZE[1]) % step == 0).astype(np.float32)
    result = kdc_reconstruct(artefacts.student_onnx, tmp_path / "eight.h5", tmp_path / "three.h5", "--out",
                             tmp_path / "out")
    assert result.exit_code == 0, result.output
    assert "note: eight: student.onnx was trained at 4x, the acquired mask samples at 8x" in result.output
    assert result.output.count("trained at 4x") == 1


def test_existing_output_is_refused_unless_overwrite(tmp_path, artefacts, fastmri_file):
    out = tmp_path / "out"
    result = kdc_reconstruct(artefacts.student_onnx, fastmri_file, "--out", out, "--acc", "4", "-f", "h5")
    assert result.exit_code == 0, result.output
    result = kdc_reconstruct(artefacts.student_onnx, fastmri_file, "--out", out, "--acc", "4")
    assert result.exit_code == 1 and "exists: choose another --out or pass --overwrite" in result.output
    result = kdc_reconstruct(artefacts.student_onnx, fastmri_file, "--out", out, "--acc", "4", "--overwrite")
    assert result.exit_code == 0, result.output
    assert sorted(p.name for p in out.iterdir()) == [".kdc-output", "file1000.nii.gz", "metrics.json"]
    assert (out / ".kdc-output").read_text().startswith("written by: ")  # in process: pytest's command line
    assert not leftovers(tmp_path)


def test_overwrite_never_deletes_an_input_or_what_kdc_did_not_write(tmp_path, artefacts, fastmri_file):
    """``--out scans --overwrite`` where scans holds the input and the model, ``--out`` a foreign directory or a
    file: one line each, and every file stays."""
    import shutil

    scans = tmp_path / "scans"
    scans.mkdir()
    model, scan = shutil.copy(artefacts.student_onnx, scans / "m.onnx"), shutil.copy(fastmri_file, scans / "a.h5")
    (scans / "notes.txt").write_text("mine")
    (tmp_path / "kept").mkdir()
    (tmp_path / "kept" / "result.nii.gz").write_bytes(b"by hand")
    cases = {scans: "which this command reads", scans / "notes.txt": "a file kdc did not write",
             tmp_path / "kept": "a directory kdc did not write (no .kdc-output in it)"}
    for out, message in cases.items():
        result = kdc_reconstruct(model, scan, "--out", out, "--acc", "4", "--overwrite")
        assert result.exit_code == 1 and result.output.count("\n") == 1 and message in result.output, result.output
    assert sorted(p.relative_to(tmp_path).as_posix() for p in tmp_path.rglob("*")) == [
        "kept", "kept/result.nii.gz", "scans", "scans/a.h5", "scans/m.onnx", "scans/notes.txt"]


def test_a_killed_reconstruct_leaves_nothing_once_another_runs_beside_it(tmp_path, artefacts):
    """kill -9 of a real ``kdc reconstruct`` while it writes; a later run to another --out in the same directory
    removes what it left."""
    from kdc.data.demo import validation_images

    big = tmp_path / "big.h5"
    with h5py.File(big, "w") as file:
        file["kspace"] = fft2c(np.tile(validation_images(SIZE, 4), (100, 1, 1))).astype(np.complex64)
    code = "import sys\nfrom kdc.cli import app\nsys.argv[0] = 'kdc'\napp()\n"
    process = subprocess.Popen([sys.executable, "-c", code, "reconstruct", str(artefacts.student_onnx), str(big),
                                "--out", str(tmp_path / "first"), "--acc", "4", "-f", "nifti,dicom,h5"],
                               stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    while process.poll() is None and not leftovers(tmp_path):
        time.sleep(0.001)
    process.kill()
    assert process.wait() == -signal.SIGKILL, process.stderr.read()
    assert leftovers(tmp_path) == [f".first.pid{process.pid}.tmp"]
    result = kdc_reconstruct(artefacts.student_onnx, big, "--out", tmp_path / "second", "--acc", "4", "-f", "h5")
    assert result.exit_code == 0, result.output
    assert sorted(p.name for p in tmp_path.iterdir()) == ["big.h5", "second"]


def test_a_header_with_an_impossible_field_of_view_writes_nothing(tmp_path, artefacts, fastmri_file):
    from kdc.data.build import FASTMRI_HEADER

    header = FASTMRI_HEADER.format(height=SIZE[0], width=SIZE[1], last_line=SIZE[1] - 1, centre_line=SIZE[1] // 2)
    broken = tmp_path / "fov0.h5"
    with h5py.File(fastmri_file) as source, h5py.File(broken, "w") as file:
        file["kspace"] = source["kspace"][()]
        file["ismrmrd_header"] = header.replace(f"<x>{SIZE[0]}</x><y>{SIZE[1]}</y><z>1</z></fieldOfView_mm>",
                                                "<x>0</x><y>0</y><z>1</z></fieldOfView_mm>", 1)
    result = kdc_reconstruct(artefacts.student_onnx, broken, "--out", tmp_path / "out", "--acc", "4", "-f", "dicom")
    assert result.exit_code == 1 and result.output.count("\n") == 1, result.output
    assert "fov0.h5" in result.output and re.search("PixelSpacing|field ?of ?view", result.output, re.IGNORECASE)
    assert not (tmp_path / "out").exists() and not leftovers(tmp_path)


def test_an_input_name_of_250_characters_gives_outputs_that_fit(tmp_path, artefacts, fastmri_file):
    import shutil

    long = shutil.copy(fastmri_file, tmp_path / ("n" * 250 + ".h5"))
    out = tmp_path / "out"
    result = kdc_reconstruct(artefacts.student_onnx, long, "--out", out, "--acc", "4", "-f", "nifti,dicom,h5")
    assert result.exit_code == 0, result.output
    names = sorted(p.name for p in out.iterdir() if p.name not in (".kdc-output", "metrics.json"))
    assert len(names) == 3 and all(len(name) <= 255 and name.startswith("n" * 200) for name in names)


def test_a_file_name_that_is_not_utf8_is_written_in_every_format(tmp_path, artefacts, fastmri_file):
    import shutil

    name = os.fsdecode(b"scan\xff")
    source = shutil.copy(fastmri_file, tmp_path / f"{name}.h5")
    out = tmp_path / "out"
    result = subprocess.run([sys.executable, "-m", "kdc", "reconstruct", artefacts.student_onnx, source, "--out", out,
                             "--acc", "4", "-f", "h5,dicom,nifti"], capture_output=True, timeout=120)
    assert result.returncode == 0, result.stderr
    with h5py.File(out / f"{name}.h5") as file:
        assert file.attrs["source"].endswith("scan\\xff.h5")  # kdc._io.printable
    assert os.fsencode(source) in (out / ".kdc-output").read_bytes()


@contextlib.contextmanager
def tiny_filesystem(path, size="48k"):
    """A tmpfs of ``size`` at ``path``: a full disk for real; skip where mounting is not allowed."""
    path.mkdir()
    if os.geteuid() != 0:
        pytest.skip("a full disk is simulated with a small tmpfs, which needs root to mount")
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)], capture_output=True)
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a small tmpfs here: {mounted.stderr.decode().strip()}")
    try:
        yield path
    finally:
        subprocess.run(["umount", str(path)], check=True)


def test_full_disk_is_one_line_and_leaves_nothing(tmp_path, artefacts, fastmri_file):
    with tiny_filesystem(tmp_path / "disk") as disk:
        result = kdc_reconstruct(artefacts.student_onnx, fastmri_file, "--out", disk / "out", "--acc", "4",
                                 "--format", "nifti,dicom,h5", "--dicom-bits", "16")
        assert result.exit_code == 1 and result.output.count("\n") == 1, result.output
        assert result.output.startswith(f"error: no space left on the device of {disk / 'out'}")
        assert list(disk.iterdir()) == []


def test_command_runs_where_importing_torch_fails(tmp_path, artefacts, fastmri_file):
    code = BLOCK_TORCH + "import sys\nfrom kdc.cli import app\nsys.argv[0] = 'kdc'\napp()\n"
    out = tmp_path / "out"
    result = subprocess.run([sys.executable, "-c", code, "reconstruct", str(artefacts.student_onnx), str(fastmri_file),
                             "--out", str(out), "--acc", "8", "--mask-kind", "equispaced", "-f", "dicom,h5,nifti"],
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert "wrote 1 volume(s)" in result.stdout and "equispaced seed 0" in result.stderr
