"""Classical baselines: BART's CFL files, and ``bart pics`` on real demo slices in kdc's k-space convention."""

from __future__ import annotations

import numpy as np
import pytest

from kdc.compress.baselines import BASELINES, score_baseline, slice_inputs
from kdc.compress.baselines.bart import BartCompressedSensing, read_cfl, tune_lambda, write_cfl
from kdc.data.metrics import psnr
from kdc.data.slices import open_split
from kdc.errors import KdcError
from kdc.mri.fft import fft2, ifft2


def need_bart() -> None:
    reason = BartCompressedSensing.missing()
    if reason:
        pytest.skip(f"CS baseline not tested: {reason}")


def test_cfl_files_are_column_major_complex64(tmp_path):
    array = np.array([[1, 2 + 1j, 3], [4, 5, 6j]], np.complex64)
    write_cfl(tmp_path / "a", array)
    assert (tmp_path / "a.hdr").read_text().splitlines()[1].split() == ["2", "3"] + ["1"] * 14
    assert np.array_equal(np.fromfile(tmp_path / "a.cfl", np.complex64), [1, 4, 2 + 1j, 5, 3, 6j])
    assert np.array_equal(read_cfl(tmp_path / "a"), array)
    (tmp_path / "a.hdr").write_text("# Dimensions\n4 3\n")
    with pytest.raises(KdcError, match="6 values, header says"):
        read_cfl(tmp_path / "a")


def test_cs_is_registered_and_checks_its_settings():
    assert BASELINES["cs"] is BartCompressedSensing
    with pytest.raises(KdcError, match="λ >= 0"):
        BartCompressedSensing(-1.0)


def test_fully_sampled_slice_comes_back_unchanged():
    """Centring and scaling: kdc's uncentred orthonormal k-space of a real brain slice, every line sampled."""
    need_bart()
    image = open_split("demo", "val", 4)[20]["target"][0]
    out = BartCompressedSensing(lam=0.0, iterations=30).reconstruct(fft2(image.astype(np.complex64)),
                                                                   np.ones(image.shape))
    assert np.abs(out - image).max() < 1e-5 * image.max()
    shifted = np.roll(image, (image.shape[0] // 2, image.shape[1] // 2), (0, 1))
    assert np.abs(out - shifted).max() > 0.1 * image.max()  # the check would see an image rolled by half


def test_cs_beats_zero_filled_on_a_training_slice():
    need_bart()
    item = open_split("demo", "train", 4)[50]
    kspace, mask = slice_inputs(item)
    target = item["target"][0]
    cs = BartCompressedSensing(lam=1e-3, iterations=50).reconstruct(kspace, mask)
    assert psnr(target, cs) > psnr(target, ifft2(kspace).real) + 1.0


def test_lambda_is_tuned_on_the_given_slices_and_recorded():
    need_bart()
    train = open_split("demo", "train", 4)
    baseline = tune_lambda(train, slices=1, iterations=10, grid=(1e-3, 10.0))
    assert baseline.lam == 1e-3  # λ = 10 wipes out the image
    settings = baseline.settings()
    assert settings["lambda_tuning"]["slices"] == [0] and settings["iterations"] == 10
    assert set(settings["lambda_tuning"]["psnr_by_lambda"]) == {"0.001", "10"}
    row = score_baseline(baseline, open_split("demo", "val", 4), indices=[10, 20])
    assert row["psnr"]["n"] == 2 and row["seconds_per_slice"] > 0 and row["settings"]["lambda"] == 1e-3
