"""Classical baselines: BART's CFL files, and ``bart pics`` on real demo slices in kdc's k-space convention."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import h5py
import numpy as np
import pytest

from kdc.compress.baselines import BASELINES, multicoil_inputs, reconstruct_slices, score_baseline, slice_inputs
from kdc.compress.baselines.bart import (
    LAMBDA_GRID,
    SENSE_MAPS,
    BartCompressedSensing,
    BartSenseCompressedSensing,
    read_cfl,
    tune_lambda,
    write_cfl,
)
from kdc.compress.recipe import RunConfig
from kdc.data.metrics import psnr
from kdc.data.slices import open_split
from kdc.errors import KdcError
from kdc.models import build_model, save_checkpoint
from kdc.mri.coils import apply_compression, root_sum_of_squares
from kdc.mri.fft import fft2, ifft2, ifft2c
from kdc.mri.sensitivity import espirit_calibrates
from kdc.mri.simulate import complex_coil_images
from tests.conftest import make_phantom
from tests.test_cli import assert_user_error, kdc


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


def test_baseline_images_are_cropped_like_the_targets():
    """A run trained with --crop scores cropped targets; the baseline reconstructs the whole field of view."""
    need_bart()
    row = score_baseline(BartCompressedSensing(1e-3, 5), open_split("demo", "val", 4, crop=(96, 96)), indices=[20])
    assert row["psnr"]["n"] == 1 and row["psnr"]["mean"] > 15


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


@pytest.fixture
def run_dir(tmp_path, write_kdmri) -> Path:
    """A run directory with an untrained student, on phantoms of 32x32 (KD-MRI layout)."""
    data = tmp_path / "data"
    for split, seed in (("train", 0), ("val", 1)):
        write_kdmri(data / split / "a.h5", make_phantom(3, 32, 32, seed=seed))
    run = tmp_path / "run"
    run.mkdir()
    (run / "run.json").write_text(json.dumps(dataclasses.asdict(RunConfig(str(data), str(run)))))
    save_checkpoint(run / "student.pt", build_model("student"), {"role": "student"})
    return run


def test_evaluate_adds_the_cs_row_with_its_settings(run_dir, tmp_path):
    need_bart()
    result = kdc("evaluate", str(run_dir), "--cs", "--cs-iterations", "5", "--json", str(tmp_path / "e.json"))
    assert "| CS (BART pics l1-wavelet) | 0 |" in result.stdout
    assert "(tuned on the training split), 5 iterations," in result.stdout and " s per slice" in result.stdout
    row = json.loads((tmp_path / "e.json").read_text())["models"]["CS (BART pics l1-wavelet)"]
    assert row["psnr"]["n"] == 3 and row["settings"]["iterations"] == 5
    assert row["settings"]["lambda_tuning"]["split"] == "train"
    assert row["settings"]["lambda"] in LAMBDA_GRID
    fixed = kdc("evaluate", str(run_dir), "--cs", "--cs-lambda", "0.01", "--cs-iterations", "5").stdout
    assert "λ = 0.01," in fixed and "tuned" not in fixed
    assert_user_error(kdc("evaluate", str(run_dir), "--cs", "--cs-lambda", "much", check=False),
                      "--cs-lambda 'much'")


def test_evaluate_without_bart_notes_the_missing_row(run_dir, tmp_path):
    empty = tmp_path / "bin"
    empty.mkdir()
    result = kdc("evaluate", str(run_dir), "--cs", env={"PATH": str(empty)})
    assert "CS (BART" not in result.stdout.split("note:")[0]
    assert "note: no CS row: the bart command is not installed (Debian: apt-get install bart)" in result.stdout


@pytest.fixture
def multicoil_data(tmp_path, write_fastmri_multicoil) -> Path:
    """fastMRI multi-coil files of real demo brain slices (128x128) with smooth phase and 8 birdcage coils."""
    brains = np.stack([open_split("demo", "val", 4)[index]["target"][0] for index in (18, 22)])
    for split, seed in (("train", 0), ("val", 1)):
        write_fastmri_multicoil(tmp_path / "data" / split / "a.h5", complex_coil_images(brains, 8, seed=seed))
    return tmp_path / "data"


def test_multicoil_inputs_are_every_coil_on_the_items_scale(multicoil_data):
    val = open_split(multicoil_data, "val", 4)
    volume, target, kspace, mask = multicoil_inputs(val, 1)
    assert volume == "a" and kspace.shape == (8, 128, 128) and np.all(kspace[:, mask == 0] == 0)
    with h5py.File(multicoil_data / "val" / "a.h5") as file:
        coils = ifft2c(file["kspace"][1])
    np.testing.assert_allclose(target, root_sum_of_squares(coils) / val.stats[0].scale, atol=1e-5)
    # The item's target is the virtual coil's magnitude on the same scale, never above the RSS.
    assert np.all(val[1]["target"][0] <= target + 1e-5)


def test_sense_cs_beats_cs_on_the_virtual_coil_of_a_multicoil_file(multicoil_data):
    """The parallel-imaging gain: every coil and their ESPIRiT maps against kdc's one virtual coil, both scored
    against the RSS of the fully sampled coils."""
    need_bart()
    assert BASELINES["sense-cs"] is BartSenseCompressedSensing and BartSenseCompressedSensing.multicoil
    val = open_split(multicoil_data, "val", 4)
    _, target, kspace, mask = multicoil_inputs(val, 0)
    virtual = apply_compression(kspace[None], val.stats[0].coil_matrix)[0, 0]
    single = BartCompressedSensing(1e-3, 30, real=False).reconstruct(virtual, mask)
    sense = BartSenseCompressedSensing(1e-3, 30).reconstruct(kspace, mask)
    assert psnr(target, sense) > psnr(target, single) + 3.0
    own_maps = BartSenseCompressedSensing(1e-3, 30, maps="kdc")
    assert abs(psnr(target, own_maps.reconstruct(kspace, mask)) - psnr(target, sense)) < 0.3  # kdc's ESPIRiT
    assert own_maps.settings()["sensitivity"] == "ESPIRiT (kdc)"
    assert psnr(target, single) > psnr(target, root_sum_of_squares(ifft2(kspace))) - 1.0
    [(volume, scored_target, image, seconds)] = reconstruct_slices(BartSenseCompressedSensing(1e-3, 30), val, [0])
    assert volume == "a" and np.array_equal(scored_target, target) and psnr(target, image) == psnr(target, sense)
    with pytest.raises(KdcError, match=r"SENSE-CS: expected \(coils, H, W\) k-space"):
        BartSenseCompressedSensing().reconstruct(virtual, mask)


def test_sense_cs_at_8x_on_128_columns_calibrates_from_its_four_centre_lines(multicoil_data):
    """fastMRI's 4 % centre at 8x leaves 4 lines around DC, fewer than ESPIRiT's 6x6 kernel (``bart ecalib`` fails
    on them): SENSE-CS takes direct maps from those lines and still beats the zero-filled root sum of squares."""
    need_bart()
    _, target, kspace, mask = multicoil_inputs(open_split(multicoil_data, "val", 8), 0)
    assert not espirit_calibrates(kspace, mask)
    zero_filled = psnr(target, root_sum_of_squares(ifft2(kspace)))
    for maps in SENSE_MAPS:
        image = BartSenseCompressedSensing(1e-3, 30, maps=maps).reconstruct(kspace, mask)
        assert psnr(target, image) > zero_filled + 1.0, maps


def test_evaluate_adds_the_sense_cs_row_on_multicoil_data(multicoil_data, tmp_path):
    need_bart()
    run = tmp_path / "run"
    run.mkdir()
    (run / "run.json").write_text(json.dumps(dataclasses.asdict(RunConfig(str(multicoil_data), str(run)))))
    save_checkpoint(run / "student.pt", build_model("student"), {"role": "student"})
    result = kdc("evaluate", str(run), "--cs", "--cs-lambda", "0.001", "--cs-iterations", "20",
                 "--json", str(tmp_path / "e.json"))
    rows = json.loads((tmp_path / "e.json").read_text())["models"]
    sense, single = rows[BartSenseCompressedSensing.row], rows[BartCompressedSensing.row]
    assert sense["psnr"]["n"] == single["psnr"]["n"] == 2 and sense["settings"]["lambda"] == 1e-3
    assert "target: RSS of the fully sampled coils" in result.stdout


def test_sense_cs_lambda_is_tuned_on_training_slices(multicoil_data):
    need_bart()
    baseline = tune_lambda(open_split(multicoil_data, "train", 4), slices=1, iterations=10, grid=(1e-3, 10.0),
                           baseline=BartSenseCompressedSensing)
    assert isinstance(baseline, BartSenseCompressedSensing) and baseline.lam == 1e-3
    assert baseline.settings()["lambda_tuning"]["split"] == "train"
