"""ISMRMRD files written by Debian's ismrmrd-tools (not by kdc), checked against the tools' own reconstruction."""

import subprocess

import h5py
import numpy as np
import pytest

from kdc.data import DataError
from kdc.data.formats import inspect_volume, open_h5, detect, read_slices
from kdc.data.formats.ismrmrd import read_layout
from kdc.data.metrics import psnr
from kdc.mri.coils import compress_coils
from kdc.mri.fft import ifft2c
from kdc.mri.noise import noise_covariance, prewhiten
from tests import ismrmrd_files
from tests.ismrmrd_files import RECON, edit_header, orient


def generate(path, *options):
    return ismrmrd_files.generate(path, "-m", "64", "-c", "8", "-O", "2", *options, tools=(ismrmrd_files.GENERATE, RECON))


def rss(raw):
    kspace = raw if isinstance(raw, np.ndarray) else raw.kspace
    return np.sqrt((np.abs(ifft2c(kspace)) ** 2).sum(axis=1))


def test_fully_sampled_coil_images_match_the_reference_reconstruction(tmp_path):
    path = generate(tmp_path / "full.h5", "-a", "1")
    subprocess.run([RECON, str(path)], check=True, capture_output=True)
    with h5py.File(path, "r") as file:
        reference = file["dataset/cpp/data"][0, 0, 0]  # (y, x) root sum of squares, written by the C++ tool
    info = inspect_volume(path)
    assert (info.format, info.slices, info.image_shape, info.coils) == ("ismrmrd", 1, (64, 64), 8)
    image = rss(read_slices(path))[0]
    scale = np.sqrt(64 * 128)  # the tool's FFT is not normalised (encoded matrix 128 x 64)
    error = np.linalg.norm(scale * image - reference) / np.linalg.norm(reference)
    print(f"ISMRMRD reader vs {RECON}: relative error {error:.2e}")
    assert error < 1e-5
    with open_h5(path) as file:
        reader = detect(file)
        assert reader.acquired_mask(file) is None
        geometry = reader.geometry(file)
    assert geometry.spacing == (300 / 64, 300 / 64, 6.0) and "no orientation" in geometry.note


def test_geometry_comes_from_the_acquisition_headers(tmp_path):
    path = generate(tmp_path / "oriented.h5", "-a", "1")
    orient(path, (10.0, -20.0, 30.0), (0.0, 1.0, 0.0), (0.0, 0.0, -1.0))  # a sagittal slice
    with open_h5(path) as file:
        geometry = detect(file).geometry(file)
    pixel = 300 / 64
    assert geometry.note is None and geometry.spacing == (pixel, pixel, 6.0)
    assert geometry.row_direction == (0.0, 1.0, 0.0) and geometry.column_direction == (0.0, 0.0, -1.0)
    # the centre pixel (32, 32) of a centred FFT sits at the slice position
    np.testing.assert_allclose(geometry.origin, (10.0, -20.0 - 32 * pixel, 30.0 + 32 * pixel))


def test_undersampled_file_gives_its_rows_as_the_mask_with_calibration_lines(tmp_path, capsys):
    path = generate(tmp_path / "us.h5", "-a", "4", "-w", "24")
    raw = read_slices(path)
    with open_h5(path) as file:
        mask = detect(file).acquired_mask(file)
    rows = np.flatnonzero(np.fft.fftshift(mask)[:, 0])
    expected = sorted(set(range(0, 64, 4)) | set(range(20, 44)))  # every 4th line + 24 calibration lines
    assert rows.tolist() == expected
    assert (mask == mask[:, :1]).all()  # whole rows: phase encodes along H
    acquired = np.abs(raw.kspace).sum(axis=(0, 1, 3)) > 0
    assert np.flatnonzero(acquired).tolist() == expected
    assert "repetition 0 only, of 4" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (lambda p: edit_header(p, "<trajectory>cartesian", "<trajectory>radial"),
         "'dataset/xml' encoding trajectory is 'radial', expected 'cartesian'"),
        (lambda p: edit_header(p, "<z>1</z>", "<z>16</z>"), "encodedSpace matrixSize z=16: a 3-D encoding"),
        (lambda p: h5py.File(p, "r+").__delitem__("dataset/xml"), "missing 'dataset/xml'"),
        (lambda p: edit_header(p, "<x>128</x>", "<x>64</x>"), r"number_of_samples is \[128\].*inconsistent matrix"),
        (lambda p: edit_header(p, "<maximum>63</maximum>", "<maximum>20</maximum>"),
         "'dataset/xml' encodingLimits kspace_encoding_step_1 minimum 0, maximum 20, center 32: expected minimum <= "
         "center <= maximum"),
        (lambda p: edit_header(p, "<kspace_encoding_step_1>\n\t\t\t\t<minimum>0", "<kspace_encoding_step_1>\n"
                                  "\t\t\t\t<minimum>24"),
         r"kspace_encode_step_1 0 is outside the header's encodingLimits 24..63 \(24 readout\(s\) in all\)"),
    ],
)
def test_bad_files_name_the_file_and_field(tmp_path, edit, message):
    path = generate(tmp_path / "bad.h5", "-a", "1")
    edit(path)
    with pytest.raises(DataError, match=message) as err:
        inspect_volume(path)
    assert str(path) in str(err.value) and "\n" not in str(err.value)


def test_zero_coils_is_refused(tmp_path):
    path = generate(tmp_path / "nocoils.h5", "-a", "1")
    with h5py.File(path, "r+") as file:
        data = file["dataset/data"][()]
        data["head"]["active_channels"] = 0
        file["dataset/data"][...] = data
    with pytest.raises(DataError, match=r"active_channels is \[0\]: expected one coil count above 0"):
        inspect_volume(path)


def small_scan(path, *options):
    """A 4-coil 64x64 phantom with twice oversampled readouts (128 samples), no noise unless ``options`` say."""
    return ismrmrd_files.generate(path, "-m", "64", "-c", "4", "-O", "2", "-n", "0", *options)


def test_noise_readouts_that_give_no_whitening_are_one_line(tmp_path):
    path = small_scan(tmp_path / "dead.h5", "-C")
    ismrmrd_files.add_coil_noise(path, 0.02 * np.eye(4), noise_readouts=4)

    def duplicate_first_channel(row):  # a noise scan with two identical channels: a singular covariance
        if ismrmrd_files.is_noise(row):
            values = ismrmrd_files.samples(row).copy()
            values[1] = values[0]
            ismrmrd_files.set_samples(row, values)
        return row

    ismrmrd_files.rewrite_readouts(path, duplicate_first_channel)
    with pytest.raises(DataError, match="'dataset/data' noise readouts: noise covariance is not positive definite"):
        inspect_volume(path)


def test_phase_partial_fourier_is_read_from_the_encoding_limits(tmp_path):
    path = small_scan(tmp_path / "pf.h5")
    ismrmrd_files.phase_partial_fourier(path, 24)  # lines 24..63 of 64 around 32: 5/8
    with open_h5(path) as file:
        reader = detect(file)
        mask, bands = reader.acquired_mask(file), reader.partial_fourier(file)
        kspace = reader.read(file, slice(None)).kspace
    assert (bands.rows.start, bands.rows.stop, bands.phase_axis) == (24, 64, -2) and not bands.readout.asymmetric
    assert np.flatnonzero(np.fft.fftshift(mask)[:, 0]).tolist() == list(range(24, 64)) and bands.covers(mask)
    assert not np.abs(kspace[..., :24, :]).any()  # read leaves the band's missing lines zero: the mask says so


def test_limits_beyond_the_matrix_are_clipped_to_it(tmp_path):
    path = small_scan(tmp_path / "wide.h5")
    edit_header(path, "<maximum>63</maximum>", "<maximum>64</maximum>")  # one line past the matrix: read as full
    with open_h5(path) as file:
        reader = detect(file)
        assert reader.partial_fourier(file) is None and reader.acquired_mask(file) is None


def test_partial_fourier_without_a_centre_to_estimate_the_phase_from_is_one_line(tmp_path):
    path = small_scan(tmp_path / "pf.h5")
    ismrmrd_files.phase_partial_fourier(path, 30)  # lines 30..63 around 32: 2 before the centre
    with pytest.raises(DataError, match="partial Fourier acquires 34 of 64 .* kspace_encode_step_1 lines: 2 on one "
                                        "side of the centre, expected at least 4"):
        inspect_volume(path)


@pytest.mark.parametrize(("options", "floor", "margin"), [
    (("-n", "0"), 45, 15),  # fully sampled: 2-D POCS; measured 24.8 -> 54.6 dB
    (("-a", "4", "-w", "16"), 30, 4),  # undersampled, noise 0.05: 1-D along the aliased rows; 27.9 -> 34.2 dB
])
def test_asymmetric_echo_is_completed_along_the_readout(tmp_path, capsys, options, floor, margin):
    full = ismrmrd_files.generate(tmp_path / "full.h5", "-m", "64", "-c", "4", "-O", "2", *options)
    echo, zero = tmp_path / "echo.h5", tmp_path / "zero.h5"
    for copy in (echo, zero):
        copy.write_bytes(full.read_bytes())
    ismrmrd_files.asymmetric_echo(echo, 40)  # 88 of 128 samples, centre_sample 24

    def zero_first(row):  # what reading the echo file gave before: its first 40 samples zero
        values = ismrmrd_files.samples(row).copy()
        values[:, :40] = 0
        ismrmrd_files.set_samples(row, values)
        return row

    ismrmrd_files.rewrite_readouts(zero, zero_first)
    truth = rss(read_slices(full))
    completed, zero_filled = psnr(truth, rss(read_slices(echo))), psnr(truth, rss(read_slices(zero)))
    assert "asymmetric echo, readout 88 of 128 (0.688), samples 40..127: completed by POCS" in capsys.readouterr().err
    print(f"asymmetric echo 88/128 {options}: zero-filled {zero_filled:.1f} dB, POCS {completed:.1f} dB")
    assert completed > floor and completed > zero_filled + margin
    with open_h5(echo) as file:
        assert detect(file).partial_fourier(file) is None  # nothing left for later stages


def test_noise_readouts_prewhiten_the_coils(tmp_path, capsys):
    """Correlated noise of unequal levels (one coil 6x another): the reader whitens it with the noise readouts'
    covariance (Gadgetron's rule); the combined images gain SNR."""
    clean = small_scan(tmp_path / "clean.h5", "-C")
    noisy, unwhitened = tmp_path / "noisy.h5", tmp_path / "unwhitened.h5"
    noisy.write_bytes(clean.read_bytes())
    mixing = 0.02 * np.array([[1, 0, 0, 0], [0.6, 0.8, 0, 0], [0, 0, 3, 0], [0.3, 0, 0.5j, 6]])
    ismrmrd_files.add_coil_noise(noisy, mixing, noise_readouts=32)
    unwhitened.write_bytes(noisy.read_bytes())
    for path in (clean, unwhitened):  # read as before: noise readouts skipped, nothing whitened
        ismrmrd_files.drop_noise_readouts(path)
    with open_h5(noisy) as file:
        whitening = read_layout(file).whitening
        whitened = detect(file).read(file, slice(None)).kspace
    assert "coils prewhitened with the noise covariance of 32 noise readout(s) (4096 samples per coil)" in \
        capsys.readouterr().err
    signal = prewhiten(read_slices(clean).kspace, whitening)
    noise = (whitened - signal)[0].reshape(4, -1)
    scale = 0.793  # equal dwell times, the default receiver noise bandwidth
    np.testing.assert_allclose(noise_covariance(noise) / (2 * scale), np.eye(4), atol=0.1)
    raw = read_slices(unwhitened).kspace

    def snr(image, truth):
        inside = truth > 0.2 * truth.max()
        return 20 * np.log10(np.linalg.norm(truth[inside]) / np.linalg.norm((image - truth)[inside]))

    def virtual_coil(kspace):
        return np.abs(ifft2c(compress_coils(kspace, centred=True)[:, 0]))

    for combine in (rss, virtual_coil):
        before = snr(combine(raw), combine(read_slices(clean).kspace))
        after = snr(combine(whitened), combine(signal))
        print(f"SNR unwhitened {before:.1f} dB, prewhitened {after:.1f} dB")
        assert after > before + 8
