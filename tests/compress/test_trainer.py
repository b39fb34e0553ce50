import json

import numpy as np
import torch
import torch.nn.functional as F

from kdc.compress.trainer import (LR_SCHEDULES, Stage, TrainSettings, read_history, stage_seconds, train_stage,
                                  validation_subset)
from kdc.mri.masks import cartesian_mask
from kdc.models import DCCNN, load_checkpoint


def tiny_split(n: int, seed: int, shape=(16, 16)) -> list[dict]:
    rng = np.random.default_rng(seed)
    mask = cartesian_mask("random", 4, shape)
    items = []
    for i in range(n):
        target = rng.random(shape).astype(np.float32)
        kspace = np.fft.fft2(target, norm="ortho") * mask
        items.append({
            "kspace": np.stack([kspace.real, kspace.imag]).astype(np.float32),
            "mask": mask[:1][None].astype(np.float32),
            "target": target[None],
            "volume": f"vol{i % 2}",
            "slice": i,
        })
    return items


def l1_stage(model: DCCNN) -> Stage:
    return Stage("student", model, lambda b: F.l1_loss(model(b["kspace"], b["mask"]), b["target"]), {"role": "student"})


def fresh_model() -> DCCNN:
    torch.manual_seed(0)
    return DCCNN(cascades=2, convs=3, channels=4)


def test_training_lowers_loss_and_writes_best_checkpoint(tmp_path):
    train, val = tiny_split(8, 0), tiny_split(4, 1)
    model = fresh_model()
    best = train_stage(l1_stage(model), train, val, TrainSettings(epochs=3, batch_size=4, lr=1e-2), tmp_path)
    loaded, meta = load_checkpoint(tmp_path / "student.pt")
    assert meta["role"] == "student" and meta["metrics"] == best
    assert 1 <= meta["epochs"] <= 3
    assert best["psnr"]["n"] == 4 and np.isfinite(best["psnr"]["mean"])


def test_resume_after_an_epoch_reproduces_the_uninterrupted_run(tmp_path):
    """A run stopped after epoch 1 and resumed ends with the same weights as one that never stopped."""
    train, val = tiny_split(8, 0), tiny_split(4, 1)
    straight = fresh_model()
    train_stage(l1_stage(straight), train, val, TrainSettings(epochs=2, lr=1e-2), tmp_path / "a")

    interrupted = fresh_model()
    train_stage(l1_stage(interrupted), train, val, TrainSettings(epochs=1, lr=1e-2), tmp_path / "b")
    resumed = fresh_model()  # a new process starts from fresh weights and reads the state
    train_stage(l1_stage(resumed), train, val, TrainSettings(epochs=2, lr=1e-2), tmp_path / "b")

    for a, b in zip(straight.state_dict().values(), resumed.state_dict().values()):
        torch.testing.assert_close(a, b, rtol=0, atol=0)
    state = torch.load(tmp_path / "b" / "state" / "student.pt", weights_only=True)
    assert state["epoch"] == 2 and json.loads(state["best"])["psnr"]["n"] == 4


def test_finished_stage_is_not_trained_again(tmp_path):
    train, val = tiny_split(4, 0), tiny_split(2, 1)
    model = fresh_model()
    first = train_stage(l1_stage(model), train, val, TrainSettings(epochs=1), tmp_path)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    again = train_stage(l1_stage(model), train, val, TrainSettings(epochs=1), tmp_path)
    assert again == first
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())


def test_cosine_schedule_decays_the_learning_rate_to_zero_over_the_stage(tmp_path):
    assert LR_SCHEDULES["cosine"](0.0) == 1.0 and abs(LR_SCHEDULES["cosine"](1.0)) < 1e-12
    train, val = tiny_split(8, 0), tiny_split(2, 1)
    settings = TrainSettings(epochs=2, batch_size=4, lr=1e-2, lr_schedule="cosine")
    train_stage(l1_stage(fresh_model()), train, val, settings, tmp_path)
    state = torch.load(tmp_path / "state" / "student.pt", weights_only=True)
    last_lr = state["optimizer"]["param_groups"][0]["lr"]  # lr of the stage's last step, step 4 of 4
    assert last_lr == 1e-2 * LR_SCHEDULES["cosine"](3 / 4) and last_lr < 2e-3


def test_cosine_run_killed_mid_epoch_resumes_to_the_same_weights(tmp_path):
    """With a schedule the lr depends on the step, so the resumed run must land on the same lr and weights."""
    train, val = tiny_split(8, 0), tiny_split(4, 1)
    settings = TrainSettings(epochs=3, batch_size=4, lr=1e-2, lr_schedule="cosine")
    straight = fresh_model()
    train_stage(l1_stage(straight), train, val, settings, tmp_path / "a")

    crashing = fresh_model()
    calls = []

    def crash_in_epoch_two(batch):
        calls.append(1)
        if len(calls) == 3:  # first step of epoch 2 (2 steps per epoch)
            raise RuntimeError("killed")
        return F.l1_loss(crashing(batch["kspace"], batch["mask"]), batch["target"])

    stage = Stage("student", crashing, crash_in_epoch_two, {"role": "student"})
    try:
        train_stage(stage, train, val, settings, tmp_path / "b")
    except RuntimeError:
        pass
    resumed = fresh_model()
    train_stage(l1_stage(resumed), train, val, settings, tmp_path / "b")
    for a, b in zip(straight.state_dict().values(), resumed.state_dict().values()):
        torch.testing.assert_close(a, b, rtol=0, atol=0)


def test_dataloader_workers_train_the_same_weights(tmp_path):
    """``--workers``: slices read by worker processes give the weights of slices read in the training process."""
    train, val = tiny_split(8, 0), tiny_split(4, 1)
    trained = {}
    for workers in (0, 2):
        model = fresh_model()
        train_stage(l1_stage(model), train, val, TrainSettings(epochs=1, lr=1e-2, workers=workers),
                    tmp_path / str(workers))
        trained[workers] = model.state_dict()
    for a, b in zip(trained[0].values(), trained[2].values()):
        torch.testing.assert_close(a, b, rtol=0, atol=0)


def test_per_epoch_validation_scores_the_evenly_spaced_subset_it_is_given(tmp_path):
    train, val = tiny_split(8, 0), tiny_split(7, 1)
    assert [item["slice"] for item in validation_subset(val, 3)] == [0, 3, 6]
    assert validation_subset(val, 0) is val and validation_subset(val, 7) is val
    best = train_stage(l1_stage(fresh_model()), train, val, TrainSettings(epochs=1, val_slices=3), tmp_path)
    assert best["psnr"]["n"] == 3
    assert [epoch["val_slices"] for epoch in read_history(tmp_path)] == [3]


def test_stage_seconds_reads_epoch_lines_from_before_and_since_precision(tmp_path):
    (tmp_path / "train.log").write_text(
        "2026-12-01 10:00:00,000 teacher epoch 1/2: train loss 0.1, val PSNR 30.00 dB, SSIM 0.9000, 81.2 s\n"
        "2026-12-06 09:00:00,000 precision bf16 on cpu (bfloat16 convolutions, channels_last; ...)\n"
        "2026-12-06 09:37:32,706 teacher epoch 2/2 (bf16): train loss 0.01, val PSNR 33.16 dB, SSIM 0.9160, 38.5 s "
        "(steps 26.7 s, data 2.3 s, validation 9.5 s)\n"
        "2026-12-06 09:40:00,000 student epoch 1/1 (fp32): train loss 0.2, val PSNR 28.00 dB, SSIM 0.8000, 10.0 s\n")
    assert stage_seconds(tmp_path) == {"teacher": 119.7, "student": 10.0}
