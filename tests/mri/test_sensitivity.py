"""ESPIRiT coil sensitivities against known birdcage maps and against ``bart ecalib -m 1``; the SENSE operators."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from kdc.compress.baselines.bart import read_cfl, run_bart, write_cfl
from kdc.data.formats import read_slices
from kdc.data.slices import open_split
from kdc.mri.coils import CoilError, root_sum_of_squares
from kdc.mri.fft import fft2, uncentred_to_centred
from kdc.mri.masks import cartesian_mask
from kdc.mri.sensitivity import (
    combine, direct_maps, espirit_calibrates, espirit_maps, expand, sense_adjoint, sense_forward,
)
from kdc.mri.simulate import birdcage_maps, complex_coil_images
from tests import ismrmrd_files


def brain_coils(coils: int = 8) -> tuple[np.ndarray, np.ndarray]:
    """A real demo brain slice (128x128) with smooth phase and birdcage coils: ``(magnitude, coil images)``."""
    image = open_split("demo", "val", 4)[20]["target"][0]
    return image, complex_coil_images(image[None], coils, seed=0)[0]


def correlation(maps: np.ndarray, other: np.ndarray) -> np.ndarray:
    """``|<s, s'>|`` per pixel: 1 where two unit-norm maps agree up to a phase."""
    return np.abs(np.sum(maps.conj() * other, axis=0))


def bart_ecalib(kspace: np.ndarray, folder: Path) -> tuple[np.ndarray, np.ndarray]:
    """``bart ecalib -m 1`` on uncentred ``(C, H, W)`` k-space: ``(maps (C, H, W), eigenvalues (H, W))``."""
    if shutil.which("bart") is None:
        pytest.skip("bart not installed (Debian: apt-get install bart): ESPIRiT not compared with bart ecalib")
    write_cfl(folder / "kspace", np.moveaxis(uncentred_to_centred(kspace), 0, -1)[:, :, None])
    run_bart(folder, "ecalib", 1, "ecalib", "-m", "1", "kspace", "sens", "values")
    maps = np.moveaxis(read_cfl(folder / "sens").reshape(*kspace.shape[1:], kspace.shape[0]), -1, 0)
    return maps, read_cfl(folder / "values").real.reshape(kspace.shape[1:])


def test_espirit_recovers_the_birdcage_maps_of_a_brain_slice_from_its_calibration_lines():
    image, coils = brain_coils()
    mask = cartesian_mask("random", 4, image.shape, seed=0)
    maps, values = espirit_maps(fft2(coils) * mask, mask, eigenvalues=True)
    assert maps.shape == coils.shape and maps.dtype == np.complex64
    inside = image > 0.1 * image.max()
    support = values >= 0.8
    assert support[inside].mean() > 0.99 and np.all(maps[:, ~support] == 0)
    assert correlation(maps, birdcage_maps(8, image.shape))[inside & support].mean() > 0.99
    np.testing.assert_allclose(root_sum_of_squares(maps)[support], 1, atol=1e-5)
    # The phase follows the virtual coil: the SENSE image is the object's (smooth) phase, not a per-pixel jumble.
    combined = combine(coils, maps)
    error = np.abs(np.abs(combined) - image)[inside] / image[inside]
    assert np.median(error) < 0.005 and np.quantile(error, 0.99) < 0.05


@pytest.mark.parametrize("source", ["brain", "ismrmrd"])
def test_espirit_matches_bart_ecalib(source, tmp_path):
    if source == "brain":
        kspace = fft2(brain_coils()[1])
    else:
        path = ismrmrd_files.generate(tmp_path / "phantom.h5", "-m", "64", "-c", "8")
        kspace = read_slices(path, slice(0, 1)).uncentred()[0]
    bart_maps, bart_values = bart_ecalib(kspace, tmp_path)
    maps, values = espirit_maps(kspace, eigenvalues=True)
    support, bart_support = values >= 0.8, bart_values >= 0.8
    assert (support == bart_support).mean() > 0.98
    both = support & bart_support
    assert correlation(maps, bart_maps)[both].mean() > 0.99
    computed = values > 0  # elsewhere the bound ||W||_F < 0.8 rules the pixel out without an eigen-decomposition
    assert np.all(bart_values[~computed] < 0.8)
    difference = np.abs(values - bart_values)[computed]  # the same eigenvalue maps, but for a few pixels
    assert np.median(difference) < 1e-4 and np.quantile(difference, 0.99) < 0.01


def test_sense_operators_are_adjoint_and_combine_undoes_expand_inside_the_support():
    rng = np.random.default_rng(1)
    image, coils = brain_coils(4)
    maps = espirit_maps(fft2(coils))
    mask = cartesian_mask("random", 4, image.shape, seed=3)
    x = rng.standard_normal(image.shape) + 1j * rng.standard_normal(image.shape)
    y = rng.standard_normal(coils.shape) + 1j * rng.standard_normal(coils.shape)
    np.testing.assert_allclose(np.vdot(sense_forward(x, maps, mask), y), np.vdot(x, sense_adjoint(y, maps, mask)),
                               rtol=1e-5)
    support = root_sum_of_squares(maps) > 0
    round_trip = combine(expand(x, maps), maps)
    np.testing.assert_allclose(round_trip[support], x[support], rtol=1e-5)
    assert np.all(round_trip[~support] == 0)
    np.testing.assert_allclose(sense_adjoint(sense_forward(x, maps), maps), round_trip, atol=1e-4)


def test_espirit_refuses_calibration_it_cannot_use():
    _, coils = brain_coils(4)
    kspace = fft2(coils)
    mask = np.zeros(kspace.shape[-2:])
    mask[[0, 1, -2, -1]] = 1  # four rows around DC
    with pytest.raises(CoilError, match="calibration region 4x24 is smaller than the 6x6 kernel"):
        espirit_maps(kspace, mask)
    with pytest.raises(CoilError, match="no signal"):
        espirit_maps(np.zeros_like(kspace))
    with pytest.raises(CoilError, match=r"expected \(coils, H, W\)"):
        espirit_maps(kspace[0])


def test_sensitivities_need_numpy_only():
    code = "import sys, kdc.mri.sensitivity; print(sorted({'torch', 'scipy', 'h5py', 'kdc.data'} & set(sys.modules)))"
    assert subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout == "[]\n"


def test_direct_maps_calibrate_from_the_four_centre_lines_of_8x_on_128_columns():
    """Fewer centre lines than ESPIRiT's kernel: the coils' low-resolution images over their root sum of squares
    still follow the birdcage coils inside the object, with unit norm; no centre line at all is one line."""
    image, coils = brain_coils()
    mask = cartesian_mask("random", 8, image.shape, seed=0)
    kspace = fft2(coils) * mask
    assert not espirit_calibrates(kspace, mask) and espirit_calibrates(kspace)
    with pytest.raises(CoilError, match="smaller than the 6x6 kernel"):
        espirit_maps(kspace, mask)
    maps = direct_maps(kspace, mask)
    inside = image > 0.1 * image.max()
    support = root_sum_of_squares(maps) > 0
    assert maps.shape == coils.shape and maps.dtype == np.complex64 and support[inside].all()
    np.testing.assert_allclose(root_sum_of_squares(maps)[support], 1, atol=1e-5)
    assert correlation(maps, birdcage_maps(8, image.shape))[inside].mean() > 0.95
    off_centre = np.zeros_like(mask)
    off_centre[:, 40:48] = 1
    with pytest.raises(CoilError, match="^coil sensitivities: the mask samples no lines around DC"):
        direct_maps(kspace * off_centre, off_centre)
