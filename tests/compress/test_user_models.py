"""A user's network distilled by ``kdc distill --teacher MODULE:CLASS``: fastMRI's own VarNet on multi-coil k-space,
feature taps by module path, and the multi-coil items (``--task multicoil``)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn
from torch.utils.data import default_collate
from typer.testing import CliRunner

import kdc.runtime as rt
from kdc.cli import app
from kdc.compress.architectures import FeatureTaps, architecture_of, tap_paths
from kdc.compress.losses import Outputs
from kdc.compress.tasks import feature_loss, get_task
from kdc.compress.trainer import read_history
from kdc.data.errors import DataError
from kdc.data.slices import open_split
from kdc.errors import KdcError
from kdc.models import build_model, load_checkpoint
from kdc.models.checkpoint import CheckpointError, model_config
from kdc.models.fastmri import NormalisedUnet
from kdc.models.user import load_user_model
from kdc.mri.simulate import complex_coil_images
from kdc.tasks import IMAGE_RECON, task_of_config
from tests.conftest import make_phantom

fastmri = pytest.importorskip("fastmri")
from fastmri.models import VarNet  # noqa: E402

VARNET = "fastmri.models:VarNet"
#: The issue's VarNet(12, 18, 8) -> VarNet(4, 8, 4), scaled down to run in seconds on 32x32 x 4 coils.
TEACHER_INIT = {"num_cascades": 6, "chans": 4, "sens_chans": 2, "pools": 2, "sens_pools": 2}
STUDENT_INIT = {"num_cascades": 4, "chans": 2, "sens_chans": 2, "pools": 2, "sens_pools": 2}


@pytest.fixture
def coil_data(tmp_path, write_fastmri_multicoil) -> Path:
    """fastMRI multi-coil files, 32x32, 4 coils: two train volumes of 4 slices, one val volume of 2."""
    for split, name, slices, seed in (("train", "a", 4, 0), ("train", "b", 4, 1), ("val", "c", 2, 2)):
        coil_images = complex_coil_images(make_phantom(slices, 32, 32, seed=seed), coils=4, seed=seed)
        write_fastmri_multicoil(tmp_path / "data" / split / f"{name}.h5", coil_images)
    return tmp_path / "data"


def distill(data: Path, out: Path, *options: str, teacher_init: dict = TEACHER_INIT):
    args = ["distill", "--task", "multicoil", "--data", str(data), "--out", str(out), "--batch-size", "2",
            "--precision", "fp32", "--teacher", VARNET, "--teacher-init", json.dumps(teacher_init),
            "--student", VARNET, "--student-init", json.dumps(STUDENT_INIT), *options]
    return CliRunner().invoke(app, args)


def test_multicoil_items_are_fastmris_layout_and_the_baseline_is_fastmris_rss(coil_data):
    dataset = open_split(coil_data, "train", 4, coils=True)
    item = dataset[1]
    assert item["kspace"].shape == (4, 32, 32, 2) and item["mask"].shape == (1, 1, 32, 1)
    columns = item["mask"][0, 0, :, 0].astype(bool)
    assert columns[16] and not columns.all()  # centred: the DC column is sampled
    kspace = torch.from_numpy(item["kspace"])[None]
    assert torch.count_nonzero(kspace[..., ~torch.from_numpy(columns), :]) == 0
    zero_filled = fastmri.rss(fastmri.complex_abs(fastmri.ifft2c(kspace)), dim=1)
    baseline = get_task("recon_multicoil").baseline_image({"kspace": kspace})
    torch.testing.assert_close(baseline[:, 0], zero_filled, rtol=1e-5, atol=1e-6)
    assert item["target"].shape == (1, 32, 32) and 0.9 < item["target"].max() < 1.5
    cropped = open_split(coil_data, "train", 4, crop=(16, 20), coils=True)[1]  # --crop: fastMRI's central 320x320
    assert cropped["target"].shape == (1, 16, 20) and cropped["kspace"].shape == (4, 32, 32, 2)
    np.testing.assert_array_equal(cropped["target"][0], item["target"][0, 8:24, 6:26])
    batch = {"kspace": kspace, "target": torch.from_numpy(cropped["target"])[None]}
    assert get_task("recon_multicoil").baseline_image(batch).shape == (1, 1, 16, 20)


def test_single_coil_data_is_refused_for_the_multicoil_task(tmp_path, write_kdmri):
    write_kdmri(tmp_path / "data" / "train" / "a.h5", make_phantom(2, 16, 16))
    with pytest.raises(DataError, match="--task multicoil needs multi-coil k-space"):
        open_split(tmp_path / "data", "train", 4, coils=True)


def test_a_tap_is_cloned_before_an_inplace_activation_overwrites_it():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(1, 3, 3, padding=1), nn.LeakyReLU(0.2, inplace=True))
    x = torch.randn(2, 1, 8, 8)
    with FeatureTaps(model, ["0"]) as taps:
        model(x)
    torch.testing.assert_close(taps.features[0], model[0](x))
    assert (taps.features[0] < 0).any()


def test_varnet_default_taps_pair_12_cascades_with_4():
    teacher = load_user_model(VARNET, {"num_cascades": 12, "chans": 2, "sens_chans": 1})
    student = load_user_model(VARNET, {"num_cascades": 4, "chans": 2, "sens_chans": 1})
    layer = "model.unet.down_sample_layers.0"
    assert tap_paths(teacher, student) == ([f"cascades.{c}.{layer}" for c in (2, 5, 8, 11)],
                                           [f"cascades.{c}.{layer}" for c in range(4)])
    assert tap_paths(teacher, student, "sens_net.norm_unet.unet.down_sample_layers.0=cascades.0.model.unet") == (
        ["sens_net.norm_unet.unet.down_sample_layers.0"], ["cascades.0.model.unet"])
    with pytest.raises(KdcError, match="tap 'cascades.12.model': a VarNet has no such submodule"):
        tap_paths(teacher, student, "cascades.12.model=cascades.0.model")
    with pytest.raises(KdcError, match="expected TEACHER_PATH=STUDENT_PATH"):
        tap_paths(teacher, student, "cascades.0.model")
    assert tap_paths(build_model("teacher"), build_model("student")) == ([], [])  # they tap themselves
    assert tap_paths(teacher, build_model("student"), "cascades.11.model=cascades.4.convs.1") == (
        ["cascades.11.model"], ["cascades.4.convs.1"])
    with pytest.raises(KdcError, match="no default taps from a VarNet to a DCCNN: name the layers"):
        tap_paths(teacher, build_model("student"))


def test_fitnet_regressors_map_the_student_width_to_the_teachers():
    student = Outputs(torch.zeros(1, 1, 4, 4), [torch.randn(2, 8, 4, 4), torch.randn(2, 8, 2, 2)])
    teacher = Outputs(torch.zeros(1, 1, 4, 4), [torch.randn(2, 18, 4, 4), torch.randn(2, 18, 2, 2)])
    loss = feature_loss("fitnet", student, teacher)
    assert [(r.in_channels, r.out_channels) for r in loss.regressors] == [(8, 18), (8, 18)]
    assert loss(student, teacher) > 0


def test_varnet_teacher_distils_into_a_smaller_varnet(coil_data, tmp_path):
    """A fastMRI VarNet teacher trained a few steps, distilled into a smaller VarNet: the feature (AT) and KD
    losses fall, and the checkpoints rebuild the user's class only when the user names it."""
    run = tmp_path / "run"
    result = distill(coil_data, run, "--epochs", "2", "--pretrain-epochs", "2", "--lr", "3e-3",
                     "--lr-schedule", "constant")
    assert result.exit_code == 0, result.output
    assert "| kd_student |" in result.output and "| zero-filled |" in result.output
    history = read_history(run)
    for stage in ("student_at", "kd_student"):
        losses = [record["train_loss"] for record in history if record["stage"] == stage]
        assert len(losses) == 2 and losses[-1] < losses[0], (stage, losses)
    assert list((run / "cache").glob("teacher-at-*.npy"))  # the teacher ran once per slice for AT

    with pytest.raises(CheckpointError, match=f"pass --user-class {VARNET} to allow that"):
        load_checkpoint(run / "kd_student.pt")
    student, meta = load_checkpoint(run / "kd_student.pt", [VARNET])
    assert isinstance(student, VarNet) and len(student.cascades) == 4
    assert student.kdc_config == {"arch": "user", "class": VARNET, "init": STUDENT_INIT}
    assert meta["task"] == "recon_multicoil"

    refused = CliRunner().invoke(app, ["evaluate", str(run)])
    assert refused.exit_code == 1 and f"--user-class {VARNET}" in refused.output
    scored = CliRunner().invoke(app, ["evaluate", str(run), "--user-class", VARNET])
    assert scored.exit_code == 0, scored.output
    assert "| kd_student |" in scored.output
    reported = CliRunner().invoke(app, ["report", str(run), "--user-class", VARNET])
    assert reported.exit_code == 0 and "| kd_student |" in reported.output, reported.output


def test_a_trained_teacher_is_taken_from_its_weights_file(coil_data, tmp_path):
    small = {**STUDENT_INIT, "num_cascades": 2}
    torch.manual_seed(5)
    trained = VarNet(**small)
    weights = tmp_path / "teacher.ckpt"  # as Lightning saves it: the network under 'model.'
    torch.save({"state_dict": {f"model.{k}": v for k, v in trained.state_dict().items()}}, weights)
    run = tmp_path / "run"
    result = distill(coil_data, run, "--teacher-weights", str(weights), "--epochs", "1", "--pretrain-epochs", "0",
                     teacher_init=small)
    assert result.exit_code == 0, result.output
    teacher, meta = load_checkpoint(run / "teacher.pt", [VARNET])
    assert all(torch.equal(a, b) for a, b in zip(teacher.state_dict().values(), trained.state_dict().values()))
    assert meta["weights"] == str(weights)
    assert not [r for r in read_history(run) if r["stage"] == "teacher"]  # not trained again


@pytest.mark.parametrize("options, message", [
    (["--teacher", "runs/x/teacher.pt", "--teacher-init", "{}"], "--teacher-init builds a user's class"),
    (["--task", "recon"], "takes the inputs of --task multicoil, not --task recon"),
    (["--taps", "cascades.0=cascades.0", "--pretrain-epochs", "0"], "--taps: this run distils no features"),
    (["--method", "fsp"], "--method fsp does not fit the taps"),
    (["--teacher-weights", "no/such/teacher.ckpt"], "no/such/teacher.ckpt: weights file not found"),
])
def test_bad_user_model_options_are_one_line_errors(coil_data, tmp_path, options, message):
    result = distill(coil_data, tmp_path / "run", "--epochs", "1", *options)
    assert result.exit_code == 1, result.output
    assert message in result.output and "Traceback" not in result.output
    assert not (tmp_path / "run").exists()


def test_a_users_teacher_teaches_kdcs_dccnn_student(tmp_path, write_kdmri):
    """--task recon with the teacher a user's class (here kdc's own DCCNN named as MODULE:CLASS, so it taps the
    layers DC-CNN taps) and the student kdc's preset; --taps hooks the layers named instead."""
    for split, name, seed in (("train", "a", 0), ("val", "c", 2)):
        write_kdmri(tmp_path / "data" / split / f"{name}.h5", make_phantom(2, 16, 16, seed=seed))
    teacher = ["--teacher", "kdc.models.dccnn:DCCNN", "--teacher-init", '{"cascades": 5, "convs": 4, "channels": 8}']
    common = ["distill", "--data", str(tmp_path / "data"), "--epochs", "1", "--precision", "fp32", *teacher]
    result = CliRunner().invoke(app, [*common, "--out", str(tmp_path / "run"), "--method", "fitnet"])
    assert result.exit_code == 0, result.output
    assert "| kd_student | 49,285 |" in result.output  # kdc's student preset
    state = torch.load(tmp_path / "run" / "state" / "student_at.pt", weights_only=True)
    assert state["extra"][0]["regressors.0.weight"].shape == (8, 32, 1, 1)  # student 32 -> teacher 8 channels
    hooked = CliRunner().invoke(app, [*common, "--out", str(tmp_path / "hooked"),
                                      "--taps", "cascades.4.convs.2=cascades.4.convs.1"])
    assert hooked.exit_code == 0, hooked.output
    cached = np.load(next((tmp_path / "hooked" / "cache").glob("teacher-at-*.npy")))
    assert cached.dtype.names == ("image", "f0")  # one tap pair instead of five


UNET = "fastmri.models:Unet"
UNET_TEACHER = {"in_chans": 1, "out_chans": 1, "chans": 8, "num_pool_layers": 2}
UNET_STUDENT = {"in_chans": 1, "out_chans": 1, "chans": 4, "num_pool_layers": 2}


def test_unet_default_taps_pair_the_down_sampling_blocks_at_the_same_resolution():
    teacher = load_user_model(UNET, {**UNET_TEACHER, "num_pool_layers": 4})
    student = load_user_model(UNET, UNET_STUDENT)
    assert tap_paths(teacher, student) == (["down_sample_layers.0", "down_sample_layers.1"],
                                           ["down_sample_layers.0", "down_sample_layers.1"])
    # Training and export know the family by one name.
    from kdc.export.architectures import architecture_of as export_family

    for model in (teacher, load_user_model(VARNET, {"num_cascades": 1, "chans": 2, "sens_chans": 1})):
        assert architecture_of(model).name == export_family(model).name


def test_a_unet_teacher_distils_on_the_zero_filled_image_and_the_student_exports(tmp_path, write_kdmri):
    """--task image: fastMRI's U-Net teacher and student on the zero-filled magnitude, called through fastMRI's
    normalisation as their export is; the checkpoint's recorded task picks the task; the student exports."""
    for split, name, seed in (("train", "a", 0), ("val", "c", 2)):
        write_kdmri(tmp_path / "data" / split / f"{name}.h5", make_phantom(2, 16, 16, seed=seed))
    run = tmp_path / "run"
    result = CliRunner().invoke(app, [
        "distill", "--task", "image", "--data", str(tmp_path / "data"), "--out", str(run), "--epochs", "1",
        "--pretrain-epochs", "1", "--batch-size", "2", "--precision", "fp32",
        "--teacher", UNET, "--teacher-init", json.dumps(UNET_TEACHER),
        "--student", UNET, "--student-init", json.dumps(UNET_STUDENT)])
    assert result.exit_code == 0, result.output
    assert "| zero-filled |" in result.output and "| kd_student | 7,305 |" in result.output
    assert list((run / "cache").glob("teacher-at-*.npy"))

    student, meta = load_checkpoint(run / "kd_student.pt", [UNET])
    assert meta["task"] == "recon_image"
    assert task_of_config(model_config(student), meta["task"]) is IMAGE_RECON
    batch = default_collate([open_split(tmp_path / "data", "val", 4)[0]])
    zero_filled = torch.fft.ifft2(torch.complex(batch["kspace"][:, :1], batch["kspace"][:, 1:]), norm="ortho").abs()
    with torch.no_grad():
        torch.testing.assert_close(get_task("recon_image").predict(student, batch), NormalisedUnet(student)(zero_filled))

    onnx = tmp_path / "student.onnx"
    exported = CliRunner().invoke(app, ["export", UNET, "--init", json.dumps(UNET_STUDENT), "--weights",
                                        str(run / "kd_student.pt"), "--size", "16", "16", "--out", str(onnx)])
    assert exported.exit_code == 0 and "parity relative L2 error" in exported.output, exported.output
    assert rt.load(onnx).task == "recon_image"
    # The run's checkpoint exports too, once the user names the class it may import (the size is the trained one).
    refused = CliRunner().invoke(app, ["export", str(run), "--out", str(tmp_path / "run.onnx")])
    assert refused.exit_code == 1 and f"pass --user-class {UNET}" in refused.output, refused.output
    from_run = CliRunner().invoke(app, ["export", str(run), "--user-class", UNET, "--out", str(tmp_path / "run.onnx")])
    assert from_run.exit_code == 0, from_run.output
    model = rt.load(tmp_path / "run.onnx").contract.model
    assert model.role == "kd_student" and model.config["chans"] == 4
