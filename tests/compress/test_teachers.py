"""Teacher-training modes: SFT-KD-Recon's student-friendly teacher trains, resumes, is recorded and is distilled."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from kdc.compress.recipe import Run, RunConfig, distill
from kdc.compress.teachers import TEACHER_MODES, get_teacher_mode
from kdc.compress.teachers.sft import StudentFriendlyLoss
from kdc.errors import KdcError
from kdc.models import build_model, load_checkpoint, save_checkpoint
from tests.conftest import make_phantom, write_mask_without_dc

SHAPE = (16, 16)


@pytest.fixture
def data(tmp_path, write_kdmri) -> Path:
    root = tmp_path / "data"
    for split, name, seed in (("train", "a", 0), ("train", "b", 1), ("val", "c", 2)):
        write_kdmri(root / split / f"{name}.h5", make_phantom(4, *SHAPE, seed=seed))
    write_mask_without_dc(root, SHAPE)  # every weight gets a real gradient: runs compare weight by weight
    return root


def batch(seed: int = 0) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    torch.manual_seed(seed)
    target = torch.rand(2, 1, *SHAPE)
    mask = (torch.rand(1, 1, 1, SHAPE[1]) < 0.4).float()
    kspace = torch.fft.fft2(target.to(torch.complex64), norm="ortho") * mask
    return torch.cat([kspace.real, kspace.imag], dim=1), mask, target


def test_modes_are_registered():
    assert set(TEACHER_MODES) >= {"plain", "sft"}
    with pytest.raises(KdcError, match="--teacher-mode 'fancy'"):
        get_teacher_mode("fancy")


def test_sft_loss_example_and_where_its_gradients_go():
    teacher, student = build_model("teacher"), build_model("student")
    sft_loss = StudentFriendlyLoss(student)
    kspace, mask, target = batch()
    loss = sft_loss(teacher, kspace, mask, target)
    loss.backward()
    # Branches: the student's cascades 2..5 only.
    assert len(sft_loss.cascades) == 4 and all(p.grad is not None for p in sft_loss.parameters())
    assert sum(p.numel() for p in sft_loss.parameters()) == 4 * sum(p.numel() for p in student.cascades[0].parameters())
    # The branch terms are what the loss adds to the plain L1, and they reach the teacher's first cascade.
    first = list(teacher.cascades[0].parameters())
    plain = torch.autograd.grad(F.l1_loss(teacher(kspace, mask), target), first)
    assert loss.item() > F.l1_loss(teacher(kspace, mask), target).item()
    assert any(not torch.allclose(p.grad, g) for p, g in zip(first, plain))
    # Without branch weights the loss is the plain one.
    assert torch.allclose(StudentFriendlyLoss(student, 0.0, 0.0)(teacher, kspace, mask, target),
                          F.l1_loss(teacher(kspace, mask), target))


def test_sft_teacher_resumes_to_the_same_weights(data, tmp_path, monkeypatch):
    def config(out: str) -> RunConfig:
        return RunConfig(str(data), str(tmp_path / out), epochs=2, teacher_mode="sft")

    with Run(config("whole")) as run:
        get_teacher_mode("sft")(run)
    calls = {"n": 0}
    forward = StudentFriendlyLoss.forward

    def crash_in_epoch_2(self, *args):
        calls["n"] += 1
        if calls["n"] == 3:  # 8 slices, batch 4: the first step of epoch 2
            raise KeyboardInterrupt
        return forward(self, *args)

    monkeypatch.setattr(StudentFriendlyLoss, "forward", crash_in_epoch_2)
    with Run(config("cut")) as run, pytest.raises(KeyboardInterrupt):
        get_teacher_mode("sft")(run)
    monkeypatch.setattr(StudentFriendlyLoss, "forward", forward)
    with Run(config("cut"), resume=True) as run:
        get_teacher_mode("sft")(run)
    assert "teacher: resuming after epoch 1" in (tmp_path / "cut" / "train.log").read_text()

    whole, meta = load_checkpoint(tmp_path / "whole" / "teacher.pt")
    cut, _ = load_checkpoint(tmp_path / "cut" / "teacher.pt")
    assert meta["teacher_mode"] == "sft" and meta["role"] == "teacher"
    for a, b in zip(whole.state_dict().values(), cut.state_dict().values()):
        assert torch.allclose(a, b, atol=1e-6)
    branches = torch.load(tmp_path / "cut" / "state" / "teacher.pt", weights_only=True)["extra"][0]
    assert set(branches) and all(key.startswith(("cascades.", "dc.")) for key in branches)


def test_distill_with_sft_teacher_records_it_and_refuses_a_plain_one(data, tmp_path):
    out = tmp_path / "run"
    table = distill(RunConfig(str(data), str(out), epochs=1, pretrain_epochs=1, teacher_mode="sft"))
    assert set(table) == {"zero-filled", "teacher", "student", "kd_student"}
    for role, mode in (("teacher", "sft"), ("student_at", "sft"), ("kd_student", "sft")):
        assert load_checkpoint(out / f"{role}.pt")[1]["teacher_mode"] == mode
    assert "teacher_mode" not in load_checkpoint(out / "student.pt")[1]  # the student trained alone
    assert json.loads((out / "run.json").read_text())["teacher_mode"] == "sft"
    # A reused teacher must have been trained the way the run says.
    plain = tmp_path / "plain.pt"
    save_checkpoint(plain, build_model("teacher"), {"role": "teacher"})
    with pytest.raises(KdcError, match="trained with --teacher-mode plain, but this run asks for --teacher-mode sft"):
        distill(RunConfig(str(data), str(tmp_path / "other"), epochs=1, teacher=str(plain), teacher_mode="sft"))
    with pytest.raises(KdcError, match="different settings \\(teacher_mode\\)"):
        distill(RunConfig(str(data), str(out), epochs=1, pretrain_epochs=1), resume=True)


def test_sft_refuses_models_without_cascades(tmp_path, write_kdmri):
    root = tmp_path / "sr"
    for split, seed in (("train", 0), ("val", 1)):
        write_kdmri(root / split / "a.h5", make_phantom(2, *SHAPE, seed=seed))
    with Run(RunConfig(str(root), str(tmp_path / "run"), task="sr", teacher_mode="sft")) as run:
        with pytest.raises(KdcError, match="needs cascaded DC-CNN models"):
            get_teacher_mode("sft")(run)
