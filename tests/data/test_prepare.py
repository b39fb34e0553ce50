"""``kdc data prepare``: raw multi-coil files -> one virtual coil per volume, training on the same items."""

import json
import resource
import subprocess
import sys
from pathlib import Path

import h5py
import numpy as np
from typer.testing import CliRunner

from kdc.data.cli import data_app
from kdc.data.formats import read_slices
from kdc.data.slices import open_split
from tests import ismrmrd_files
from tests.data.test_slices import multicoil_volume

REPO = Path(__file__).resolve().parents[2]  # the children import tests.peak_memory


def test_prepared_split_gives_the_items_of_the_raw_split(tmp_path, write_fastmri_multicoil):
    for index, (split, name) in enumerate((("train", "a"), ("train", "b"), ("val", "c"))):
        write_fastmri_multicoil(tmp_path / "raw" / split / f"{name}.h5",
                                multicoil_volume(slices=2 + index, coils=6) * (index + 1))
    result = CliRunner().invoke(data_app, ["prepare", str(tmp_path / "raw/train"), str(tmp_path / "raw/val"),
                                           "--out", str(tmp_path / "prepared")])
    assert result.exit_code == 0, result.output
    assert "train a.h5: 2 slices, 6 coil(s) -> 1" in result.output and "(5 train, 4 val slices)" in result.output
    with h5py.File(tmp_path / "prepared/train/a.h5") as file:
        assert file["kspace"].shape == (2, 48, 40) and file["kspace"].dtype == np.complex64
        assert "ismrmrd_header" in file and file.attrs["coils"] == 6
    raw = open_split(tmp_path / "raw", "train", 4, image="complex")
    prepared = open_split(tmp_path / "prepared", "train", 4, image="complex")
    assert len(raw) == len(prepared) == 5
    np.testing.assert_array_equal(raw.mask, prepared.mask)
    for index in range(len(raw)):
        for key in ("kspace", "target"):
            np.testing.assert_allclose(prepared[index][key], raw[index][key], atol=2e-6)


def test_ismrmrd_scans_prepare_and_undersampled_ones_are_refused(tmp_path):
    (tmp_path / "raw").mkdir()
    for name in ("a", "b"):
        ismrmrd_files.generate(tmp_path / "raw" / f"{name}.h5", "-m", "32", "-c", "4", "-O", "2", "-a", "1")
    result = CliRunner().invoke(data_app, ["prepare", str(tmp_path / "raw"), "--out", str(tmp_path / "prepared")])
    assert result.exit_code == 0, result.output
    with h5py.File(tmp_path / "prepared/val/b.h5") as file:
        assert file["kspace"].shape == (1, 32, 32) and file.attrs["kdc_source_format"] == "ismrmrd"
    ismrmrd_files.generate(tmp_path / "raw" / "c.h5", "-m", "32", "-c", "4", "-a", "4", "-w", "8")
    result = CliRunner().invoke(data_app, ["prepare", str(tmp_path / "raw"), "--out", str(tmp_path / "again")])
    error, = result.output.splitlines()  # alone: the reader's notice (repetition 0 of 4) is not said
    assert result.exit_code == 1 and "Traceback" not in result.output
    assert error.startswith("error: ") and "c.h5: undersampled k-space (ismrmrd)" in error
    assert not (tmp_path / "again").exists()  # nothing half-written


def test_image_datasets_and_single_files_are_refused_in_one_line(tmp_path, write_kdmri, phantom):
    write_kdmri(tmp_path / "a.h5", phantom(2, 16, 16))
    write_kdmri(tmp_path / "b.h5", phantom(2, 16, 16))
    result = CliRunner().invoke(data_app, ["prepare", str(tmp_path / "a.h5"), str(tmp_path / "b.h5"), "--out",
                                           str(tmp_path / "p")])
    assert result.exit_code == 1 and "a.h5: holds images (kd-mri), not raw k-space" in result.output
    result = CliRunner().invoke(data_app, ["prepare", str(tmp_path / "a.h5"), "--out", str(tmp_path / "p")])
    assert result.exit_code == 1 and "--val-volumes 1: expected 1 to 0 of the 1 file(s)" in result.output


PEAK_RSS = """
import json, sys
from typer.testing import CliRunner
from kdc.data.cli import data_app
from tests.peak_memory import peak_mb
result = CliRunner().invoke(data_app, ["prepare", *sys.argv[1:]])
print(json.dumps({"code": result.exit_code, "output": result.output, "peak_mb": peak_mb()}))
"""


def test_memory_of_prepare_is_flat_in_the_slice_count(tmp_path):
    """Two 128-slice ISMRMRD scans (7 MB each) prepare in ~95 MB peak RSS: the acquisition headers are read once per
    file, in blocks of whole records. Before, every slice re-read them, leaking about the file's size each time
    (2.85 GB and a MemoryError after 112 s; 7.67 GB for a 41 MB file). The bound is 3x the measured peak (kdc,
    numpy and h5py take ~60 MB of it); the child's address space is capped so that a leak fails fast."""
    for name in ("a", "b"):
        ismrmrd_files.generate(tmp_path / f"{name}.h5", "-m", "32", "-c", "2", "-O", "2", "-r", "128", "-a", "1")
        ismrmrd_files.slices_from_repetitions(tmp_path / f"{name}.h5")

    def cap_address_space() -> None:
        resource.setrlimit(resource.RLIMIT_AS, (2 * 2**30, 2 * 2**30))

    child = subprocess.run([sys.executable, "-c", PEAK_RSS, str(tmp_path / "a.h5"), str(tmp_path / "b.h5"), "--out",
                            str(tmp_path / "prepared")], capture_output=True, text=True, preexec_fn=cap_address_space,
                           cwd=REPO, timeout=600)
    assert child.returncode == 0, child.stderr[-2000:]
    report = json.loads(child.stdout.splitlines()[-1])
    assert report["code"] == 0 and "(128 train, 128 val slices)" in report["output"], report
    assert report["peak_mb"] < 300, report
    with h5py.File(tmp_path / "prepared/train/a.h5") as file:
        assert file["kspace"].shape == (128, 32, 32)


def test_phase_partial_fourier_scans_prepare_with_pocs_targets(tmp_path):
    """A 5/8 partial Fourier scan (refused as undersampled before) prepares: its missing lines hold the POCS
    estimate of the virtual coil, closer to the full scan's image than zero-filling."""
    from kdc.data.metrics import psnr
    from kdc.mri.coils import apply_compression, coil_covariance, compression_matrix
    from kdc.mri.fft import ifft2c

    full = ismrmrd_files.generate(tmp_path / "full.h5", "-m", "64", "-c", "4", "-O", "2")  # noise level 0.05
    (tmp_path / "raw").mkdir()
    for name in ("a", "b"):
        path = tmp_path / "raw" / f"{name}.h5"
        path.write_bytes(full.read_bytes())
        ismrmrd_files.phase_partial_fourier(path, 24)
    result = CliRunner().invoke(data_app, ["prepare", str(tmp_path / "raw"), "--out", str(tmp_path / "prepared")])
    assert result.exit_code == 0, result.output
    assert "a.h5: phase partial Fourier 40 of 64 (0.625), samples 24..63 completed by POCS" in result.output
    with h5py.File(tmp_path / "prepared/train/a.h5") as file:
        prepared = file["kspace"][0]
        assert file.attrs["partial_fourier"] == "phase partial Fourier 40 of 64 (0.625), samples 24..63"
    assert json.loads((tmp_path / "prepared/dataset.json").read_text())["volumes"][0]["partial_fourier"]
    coils = read_slices(tmp_path / "raw/a.h5").kspace[0]
    matrix = compression_matrix(coil_covariance(coils, np.ones(coils.shape[-2:], bool)))
    zero_filled = apply_compression(coils, matrix)[0]
    truth = np.abs(ifft2c(apply_compression(read_slices(full).kspace[0], matrix)[0]))
    np.testing.assert_allclose(prepared[24:], zero_filled[24:], atol=1e-5 * np.abs(zero_filled).max())
    gain = psnr(truth, np.abs(ifft2c(prepared))) - psnr(truth, np.abs(ifft2c(zero_filled)))
    print(f"prepared 5/8 partial Fourier: POCS {gain:.1f} dB above zero-filling against the full scan")
    assert gain > 5


def test_undersampled_partial_fourier_scans_are_still_refused(tmp_path):
    (tmp_path / "raw").mkdir()
    for name in ("a", "b"):
        path = ismrmrd_files.generate(tmp_path / "raw" / f"{name}.h5", "-m", "64", "-c", "4", "-a", "2", "-w", "16")
        ismrmrd_files.phase_partial_fourier(path, 24)
    result = CliRunner().invoke(data_app, ["prepare", str(tmp_path / "raw"), "--out", str(tmp_path / "prepared")])
    assert result.exit_code == 1 and "a.h5: undersampled k-space (ismrmrd)" in result.output


def fastmri_partial_fourier(path: Path, first_column: int, zero: bool = True) -> None:
    """Make a fastMRI file a partial Fourier scan as fastMRI states one: ``ismrmrd_header``'s limits number the
    acquired phase encodes (columns ``first_column``..W-1) from 0, centre at W/2 - first_column (its
    ``padding_left``); the k-space columns before them are zero (``zero=False``: left as they are)."""
    with h5py.File(path, "r+") as file:
        width = file["kspace"].shape[-1]
        if zero:
            kspace = file["kspace"][()]
            kspace[..., :first_column] = 0
            file["kspace"][...] = kspace
        header = file["ismrmrd_header"][()].decode()
        limits = f"<maximum>{width - 1}</maximum><center>{width // 2}</center>"
        assert limits in header
        del file["ismrmrd_header"]
        file["ismrmrd_header"] = header.replace(limits, f"<maximum>{width - 1 - first_column}</maximum><center>"
                                                        f"{width // 2 - first_column}</center>")


def test_fastmri_partial_fourier_from_its_encoding_limits(tmp_path, write_fastmri_multicoil, capsys):
    """fastMRI's padding_left/right: columns outside the limits are zero; prepare completes them by POCS."""
    from kdc.data.formats import detect, open_h5
    from kdc.data.metrics import psnr
    from kdc.mri.coils import apply_compression, coil_covariance, compression_matrix
    from kdc.mri.fft import fft2c, ifft2c

    coil_images = multicoil_volume(slices=2, coils=4, shape=(48, 64))
    for name in ("a", "b"):
        write_fastmri_multicoil(tmp_path / "raw" / f"{name}.h5", coil_images)
        fastmri_partial_fourier(tmp_path / "raw" / f"{name}.h5", 24)  # 40 of 64 columns: 5/8
    with open_h5(tmp_path / "raw/a.h5") as file:
        bands = detect(file).partial_fourier(file)
    assert (bands.phase_axis, bands.columns.start, bands.columns.stop) == (-1, 24, 64) and not bands.rows.asymmetric
    result = CliRunner().invoke(data_app, ["prepare", str(tmp_path / "raw"), "--out", str(tmp_path / "prepared")])
    assert result.exit_code == 0, result.output
    assert "a.h5: phase partial Fourier 40 of 64 (0.625), samples 24..63 completed by POCS" in result.output
    with h5py.File(tmp_path / "prepared/train/a.h5") as file:
        prepared = file["kspace"][()]
    with open_h5(tmp_path / "prepared/train/a.h5") as file:
        assert detect(file).partial_fourier(file) is None  # prepared: complete
    coils = read_slices(tmp_path / "raw/a.h5").kspace
    matrix = compression_matrix(coil_covariance(coils, np.ones(coils.shape[-2:], bool)))
    truth = np.abs(ifft2c(apply_compression(fft2c(coil_images), matrix)[:, 0]))
    zero_filled = np.abs(ifft2c(apply_compression(coils, matrix)[:, 0]))
    gain = psnr(truth, np.abs(ifft2c(prepared))) - psnr(truth, zero_filled)
    assert gain > 10, gain
    full = tmp_path / "full.h5"  # limits saying partial Fourier over k-space that is not: read as stored, said
    write_fastmri_multicoil(full, coil_images)
    fastmri_partial_fourier(full, 24, zero=False)
    capsys.readouterr()
    with open_h5(full) as file:
        assert detect(file).partial_fourier(file) is None
    assert "'kspace' holds samples outside them: read as stored" in capsys.readouterr().err
    print(f"fastMRI 5/8 partial Fourier: POCS {gain:.1f} dB above zero-filling against the full k-space")


def test_noise_readouts_echo_and_partial_fourier_together(tmp_path):
    """A scan with all three: the coils are whitened, the echo completed coil by coil, the phase band on the virtual
    coil; the prepared k-space keeps the band's measured (whitened) lines."""
    from kdc.mri.coils import apply_compression, coil_covariance, compression_matrix

    (tmp_path / "raw").mkdir()
    for name in ("a", "b"):
        path = ismrmrd_files.generate(tmp_path / "raw" / f"{name}.h5", "-m", "64", "-c", "4", "-O", "2", "-n", "0",
                                      "-C")
        ismrmrd_files.add_coil_noise(path, 0.02 * np.array([[1, 0, 0, 0], [0.5, 1, 0, 0], [0, 0, 3, 0],
                                                            [0, 0, 0.5, 2]]), noise_readouts=8)
        ismrmrd_files.phase_partial_fourier(path, 24)
        ismrmrd_files.asymmetric_echo(path, 24)
    result = CliRunner().invoke(data_app, ["prepare", str(tmp_path / "raw"), "--out", str(tmp_path / "prepared")])
    assert result.exit_code == 0, result.output
    for said in ("a.h5: coils prewhitened with the noise covariance of 8 noise readout(s)",
                 "a.h5: asymmetric echo, readout 104 of 128 (0.812), samples 24..127: completed by POCS",
                 "a.h5: phase partial Fourier 40 of 64 (0.625), samples 24..63 completed by POCS"):
        assert said in result.output
    coils = read_slices(tmp_path / "raw/a.h5").kspace  # whitened, echo completed, band lines only
    assert not np.abs(coils[..., :24, :]).any()
    matrix = compression_matrix(coil_covariance(coils, np.ones(coils.shape[-2:], bool)))
    measured = apply_compression(coils, matrix)[0, 0]
    with h5py.File(tmp_path / "prepared/train/a.h5") as file:
        prepared = file["kspace"][0]
    np.testing.assert_allclose(prepared[24:], measured[24:], atol=1e-5 * np.abs(measured).max())
    assert np.abs(prepared[:24]).max() > 0.01 * np.abs(prepared).max()  # the POCS estimate fills the rest
