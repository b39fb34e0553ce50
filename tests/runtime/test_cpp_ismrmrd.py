"""examples/cpp/kdc_reconstruct_ismrmrd: an ISMRMRD file written by Debian's ismrmrd-tools, reconstructed in C++
(libismrmrd + OpenVINO), gives the images `kdc reconstruct --format h5` writes."""

import os
import subprocess
from pathlib import Path

import h5py
import numpy as np
import pytest

from tests.ismrmrd_files import edit_header, generate

from .helpers import export_complex_model
from .test_reconstruct import kdc_reconstruct

MATRIX = 64
RELATIVE_TOLERANCE = 1e-4


@pytest.fixture(scope="module")
def program(cpp_build) -> Path:
    path = cpp_build / "kdc_reconstruct_ismrmrd"
    if not path.exists():
        pytest.skip("examples/cpp/kdc_reconstruct_ismrmrd was not built: libismrmrd not found (Debian "
                    "libismrmrd-dev; `make deps` installs it)")
    return path


@pytest.fixture(scope="module")
def model_file(tmp_path_factory) -> Path:
    return export_complex_model(tmp_path_factory.mktemp("complex64"), MATRIX)


def scan(path: Path, coils: int) -> Path:
    return generate(path, "-c", str(coils), "-a", "4", "-w", "16", "-O", "2", "-m", str(MATRIX))


def add_slice(path: Path, counter: int, factor: float) -> None:
    """Append a copy of every readout as slice ``counter`` with its samples times ``factor``, and a repeat of the
    first readout (an average, which both readers must average with the original)."""
    with h5py.File(path, "r+") as file:
        data = file["dataset/data"]
        rows = data[()]
        copies = rows.copy()
        copies["head"]["idx"]["slice"] = counter
        for index in range(copies.size):
            copies["data"][index] = copies["data"][index] * np.float32(factor)
        repeat = rows[:1].copy()
        repeat["data"][0] = repeat["data"][0] * np.float32(3)
        data.resize((rows.size + copies.size + 1,))
        data[rows.size:] = np.concatenate([copies, repeat])


def run_program(program: Path, model: Path, source: Path, image: Path) -> subprocess.CompletedProcess:
    return subprocess.run([str(program), str(model), str(source), str(image), "1"], capture_output=True, text=True,
                          timeout=120, env={**os.environ, "OMP_NUM_THREADS": "1"})


@pytest.mark.parametrize(("coils", "slices"), [(4, 1), (4, 2), (1, 1)])
def test_cpp_reconstruction_equals_kdc_reconstruct(program, model_file, tmp_path, coils, slices):
    source = scan(tmp_path / "scan.h5", coils)
    if slices == 2:
        add_slice(source, 5, 0.5)
    result = run_program(program, model_file, source, tmp_path / "image.f32")
    assert result.returncode == 0, result.stderr
    assert f"{slices} slice(s) {MATRIX}x{MATRIX}, {coils} coil(s)" in result.stderr
    image = np.fromfile(tmp_path / "image.f32", dtype=np.float32).reshape(slices, MATRIX, MATRIX)
    cli = kdc_reconstruct(model_file, source, "--out", tmp_path / "out", "-f", "h5", "--threads", "1")
    assert cli.exit_code == 0, cli.output
    with h5py.File(tmp_path / "out" / "scan.h5") as file:
        expected = file["reconstruction"][()]
    error = float(np.abs(image - expected).max() / expected.max())
    print(f"kdc_reconstruct_ismrmrd vs kdc reconstruct ({coils} coils, {slices} slices): max error {error:.2e} of "
          f"the peak {expected.max():.3g}")
    assert error <= RELATIVE_TOLERANCE
    if slices == 2:  # the second slice is the first at half the signal: not a copy of it
        assert np.abs(image[1] - image[0]).max() > 0.1 * image[0].max()


def not_ismrmrd(path: Path) -> None:
    path.unlink()
    with h5py.File(path, "w") as file:
        file["kspace"] = np.zeros((1, 4, 4), np.complex64)


def radial(path: Path) -> None:
    edit_header(path, "<trajectory>cartesian", "<trajectory>radial")


def three_d(path: Path) -> None:
    edit_header(path, "<z>1</z>", "<z>16</z>")


@pytest.mark.parametrize(("edit", "message"), [
    (None, "missing.h5: cannot read the file"),
    (not_ismrmrd, "scan.h5: not an ISMRMRD file: expected 'dataset/xml' and 'dataset/data'"),
    (radial, "scan.h5: 'dataset/xml' encoding trajectory is not cartesian"),
    (three_d, "scan.h5: 'dataset/xml' encodedSpace matrixSize z=16: a 3-D encoding, expected 2-D (z=1)"),
])
def test_cpp_bad_scans_are_one_line(program, model_file, tmp_path, edit, message):
    source = tmp_path / "missing.h5"
    if edit is not None:
        source = scan(tmp_path / "scan.h5", 4)
        edit(source)
    result = run_program(program, model_file, source, tmp_path / "image.f32")
    lines = result.stderr.strip().splitlines()
    assert result.returncode == 1 and lines[-1].startswith("error: ") and message in lines[-1], result.stderr
    assert sum("error" in line.lower() for line in lines) == 1, result.stderr  # no HDF5 or libismrmrd trace
    assert not list(tmp_path.glob("image.f32*"))
    if edit is not_ismrmrd:  # libismrmrd would have added a 'dataset' group to it
        with h5py.File(source) as file:
            assert list(file) == ["kspace"]
