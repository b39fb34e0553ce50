"""``kdc reconstruct`` on ISMRMRD files written by Debian's ismrmrd-tools: images placed where the header says,
DICOM checked by dciodvfy, and one-line refusals of what a model cannot take."""

import h5py
import numpy as np
import pytest

import kdc.runtime as rt
from kdc.data.formats import detect, open_h5
from kdc.mri.masks import sampled_lines
from tests.ismrmrd_files import edit_header, generate, orient

from .helpers import export_complex_model
from .test_reconstruct import kdc_reconstruct, leftovers
from .test_writers import dciodvfy

MATRIX = 32
POSITION, READ_DIR, PHASE_DIR = (10.0, -20.0, 30.0), (0.0, 1.0, 0.0), (0.0, 0.0, -1.0)  # a sagittal slice


@pytest.fixture(scope="module")
def complex_model_file(tmp_path_factory):
    """A tiny random-weight complex DC-CNN exported at MATRIX x MATRIX (mask input, columns)."""
    return export_complex_model(tmp_path_factory.mktemp("complex"), MATRIX)


@pytest.fixture(scope="module")
def square_model(artefacts, tmp_path_factory):
    from kdc.export import export_model

    path = tmp_path_factory.mktemp("square") / "student.onnx"
    export_model(artefacts.student_pt, path, image_size=(MATRIX, MATRIX))
    return path


def scan(path, coils, *options):
    generate(path, "-m", str(MATRIX), "-c", str(coils), "-a", "4", "-w", "8", "-O", "2", *options)
    orient(path, POSITION, READ_DIR, PHASE_DIR)
    return path


def test_single_coil_scan_to_dicom_and_nifti_with_its_geometry(tmp_path, square_model):
    import nibabel as nib
    import pydicom

    source = scan(tmp_path / "scan.h5", 1)
    out = tmp_path / "out"
    result = kdc_reconstruct(square_model, source, "--out", out, "-f", "dicom,nifti,h5", "--threads", "1")
    assert result.exit_code == 0, result.output
    assert "acquired" in result.output and "-> dicom, nifti, h5" in result.output
    # The model samples columns, the scan rows: the k-space is transposed for the model and the image back.
    with open_h5(source) as file:
        reader = detect(file)
        kspace, mask = reader.read(file, slice(None)).kspace[:, 0], reader.acquired_mask(file)
    assert sampled_lines(mask)[0] == -2
    model = rt.load(square_model)
    with pytest.warns(UserWarning, match="imaginary"):  # a scan has phase, which a magnitude model drops
        expected = model.reconstruct(rt.kspace_channels(kspace.swapaxes(-1, -2), centred=True), mask.T,
                                     normalise=True)
    expected = np.abs(expected[:, 0]).swapaxes(-1, -2)
    with h5py.File(out / "scan.h5") as file:
        np.testing.assert_allclose(file["reconstruction"][()], expected, rtol=1e-4, atol=1e-5 * expected.max())
    pixel = 300 / MATRIX
    origin = np.add(POSITION, -(MATRIX // 2) * pixel * (np.add(READ_DIR, PHASE_DIR)))
    (dicom,) = sorted((out / "scan").glob("IM_*.dcm"))
    report = dciodvfy(dicom)
    assert "Error" not in report, report
    ds = pydicom.dcmread(dicom)
    assert [float(v) for v in ds.ImageOrientationPatient] == [*READ_DIR, *PHASE_DIR]
    np.testing.assert_allclose([float(v) for v in ds.ImagePositionPatient], origin, atol=1e-4)
    np.testing.assert_allclose([float(v) for v in ds.PixelSpacing], [pixel, pixel])
    assert float(ds.SliceThickness) == 6.0 and (ds.Rows, ds.Columns) == (MATRIX, MATRIX)
    image = nib.load(out / "scan.nii.gz")
    lps_to_ras = np.diag([-1, -1, 1])
    np.testing.assert_allclose(image.affine[:3, 3], lps_to_ras @ origin, atol=1e-4)
    np.testing.assert_allclose(image.affine[:3, 0], lps_to_ras @ np.multiply(READ_DIR, pixel), atol=1e-6)
    np.testing.assert_allclose(image.affine[:3, 1], lps_to_ras @ np.multiply(PHASE_DIR, pixel), atol=1e-6)
    assert not leftovers(tmp_path)


def radial(path):
    edit_header(path, "<trajectory>cartesian", "<trajectory>radial")


def three_d(path):
    edit_header(path, "<z>1</z>", "<z>16</z>")


@pytest.mark.parametrize(("coils", "matrix", "edit", "message"), [
    (8, MATRIX, None, "multi-coil k-space (8 coils) needs a complex model (contract output_kind 'complex'); "
                      "student.onnx reconstructs magnitude images"),
    (1, MATRIX, radial, "'dataset/xml' encoding trajectory is 'radial', expected 'cartesian'"),
    (1, MATRIX, three_d, "encodedSpace matrixSize z=16: a 3-D encoding"),
    (1, 48, None, "k-space matrix 48x48 (rows and columns swapped so that its sampled lines run as the model's) does not "
                  "fit student.onnx, exported for 32x32; export the model for this size: kdc export RUN --model "
                  "student --size 48 48 --out student_48x48.onnx"),
])
def test_what_the_model_cannot_take_is_one_line(tmp_path, square_model, coils, matrix, edit, message):
    source = tmp_path / "scan.h5"
    generate(source, "-m", str(matrix), "-c", str(coils), "-a", "4", "-w", "8")
    if edit is not None:
        edit(source)
    result = kdc_reconstruct(square_model, source, "--out", tmp_path / "out", "-f", "dicom,nifti")
    errors = [line for line in result.output.splitlines() if not line.startswith("kdc: ")]  # notices of the reader
    assert result.exit_code == 1 and len(errors) == 1 and errors[0].startswith("error: "), result.output
    assert message in errors[0], result.output
    assert not (tmp_path / "out").exists() and not leftovers(tmp_path)


def test_multi_coil_scan_through_a_complex_model(tmp_path, complex_model_file):
    import nibabel as nib

    from kdc.mri.coils import compress_coils

    source = scan(tmp_path / "scan8.h5", 8)
    out = tmp_path / "out"
    result = kdc_reconstruct(complex_model_file, source, "--out", out, "-f", "dicom,nifti,h5", "--threads", "1")
    assert result.exit_code == 0, result.output
    assert "imaginary" not in result.output  # a complex model keeps the phase: no warning
    with open_h5(source) as file:
        reader = detect(file)
        kspace, mask = reader.read(file, slice(None)).kspace, reader.acquired_mask(file)
    virtual = compress_coils(kspace, mask, centred=True)[:, 0]
    model = rt.load(complex_model_file)
    expected = model.reconstruct(rt.kspace_channels(virtual.swapaxes(-1, -2), centred=True), mask.T, normalise=True,
                                 output="magnitude")[:, 0].swapaxes(-1, -2)
    with h5py.File(out / "scan8.h5") as file:
        np.testing.assert_allclose(file["reconstruction"][()], expected, rtol=1e-4, atol=1e-5 * expected.max())
    report = dciodvfy(out / "scan8" / "IM_0001.dcm")
    assert "Error" not in report, report
    assert nib.load(out / "scan8.nii.gz").shape == (MATRIX, MATRIX, 1)


def test_partial_fourier_scan_keeps_its_missing_lines_unacquired(tmp_path, complex_model_file):
    """A 5/8 phase partial Fourier scan, otherwise fully sampled, takes --acc (refused before as undersampled): the
    drawn mask stays inside the acquired band, the model gets the missing lines as unacquired, and the scores are
    against the scan's POCS image."""
    import json

    from kdc.data.metrics import psnr
    from kdc.mri.coils import compress_coils
    from kdc.mri.fft import centred_to_uncentred, ifft2
    from kdc.mri.masks import cartesian_mask
    from tests.ismrmrd_files import phase_partial_fourier

    source = generate(tmp_path / "pf.h5", "-m", str(MATRIX), "-c", "4", "-O", "2")
    phase_partial_fourier(source, 12)  # lines 12..31 of 32
    out = tmp_path / "out"
    result = kdc_reconstruct(complex_model_file, source, "--out", out, "-f", "h5", "--acc", "4", "--threads", "1")
    assert result.exit_code == 0, result.output
    assert "random seed 0 within the partial Fourier band" in result.output
    with open_h5(source) as file:
        reader = detect(file)
        kspace, acquired, bands = (reader.read(file, slice(None)).kspace, reader.acquired_mask(file),
                                   reader.partial_fourier(file))
    virtual = centred_to_uncentred(compress_coils(kspace, acquired, centred=True)[:, 0]).swapaxes(-1, -2)
    mask = cartesian_mask("random", 4, (MATRIX, MATRIX), seed=0, axis=-1) * acquired.T  # the model samples columns
    assert not mask[:, np.fft.ifftshift(np.arange(MATRIX) < 12)].any()
    model = rt.load(complex_model_file)
    expected = np.abs(model.reconstruct(rt.kspace_channels(virtual) * mask, mask, normalise=True,
                                        output="magnitude")[:, 0]).swapaxes(-1, -2)
    with h5py.File(out / "pf.h5") as file:
        image = file["reconstruction"][()]
    np.testing.assert_allclose(image, expected, rtol=1e-4, atol=1e-5 * expected.max())
    reference = np.abs(ifft2(bands.transposed().complete(virtual))).swapaxes(-1, -2)
    metrics = json.loads((out / "metrics.json").read_text())["volumes"]["pf"]
    assert metrics["psnr"] == pytest.approx(psnr(reference, image), abs=0.05)
