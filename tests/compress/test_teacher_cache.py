from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader

from kdc.compress.losses import KD_LOSSES, Outputs, build_kd_loss
from kdc.compress.tasks import RECON
from kdc.compress.teacher_cache import cache_key, teacher_targets
from kdc.compress.trainer import Stage, TrainSettings, train_stage
from kdc.data.augment import Augmenter
from kdc.data.slices import open_split
from kdc.models import DCCNN, build_model
from tests.conftest import make_phantom, write_mask_without_dc

outputs = RECON.outputs  # the reconstruction task's (image, distilled features, hidden maps)

SHAPE = (16, 16)
SUMMARISED = sorted(name for name, cls in KD_LOSSES.items() if hasattr(cls, "teacher_summary"))


@pytest.fixture
def data_root(tmp_path, write_kdmri) -> Path:
    root = tmp_path / "data"
    write_mask_without_dc(root, SHAPE)
    write_kdmri(root / "train" / "a.h5", make_phantom(4, *SHAPE, seed=0))
    write_kdmri(root / "train" / "b.h5", make_phantom(3, *SHAPE, seed=1))
    return root


def tiny(convs: int, seed: int) -> DCCNN:
    torch.manual_seed(seed)
    return DCCNN(cascades=2, convs=convs, channels=4)


def targets(root: Path, teacher: nn.Module, method: str, cache: Path | None, acc: int = 4):
    train_set = open_split(root, "train", acc)
    return teacher_targets(teacher, build_kd_loss(method), method, train_set, outputs, cache, "cpu")


@pytest.mark.parametrize("name", SUMMARISED)
def test_teacher_summary_gives_the_loss_of_the_full_outputs(name):
    """The contract of ``teacher_summary`` on the real teacher/student pair of the recipe: same loss, fewer numbers."""
    torch.manual_seed(0)
    batch = {"kspace": torch.randn(2, 2, *SHAPE), "mask": torch.ones(1, 1, 1, SHAPE[1])}
    with torch.no_grad():
        teacher = outputs(build_model("teacher"), batch)
    student = outputs(build_model("student"), batch)
    loss = build_kd_loss(name)
    summary = loss.teacher_summary(teacher)
    torch.testing.assert_close(loss(student, summary), loss(student, teacher), rtol=1e-5, atol=1e-7)
    size = sum(t.numel() for t in (summary.image, *summary.features))
    assert size < sum(t.numel() for t in (teacher.image, *teacher.features))


@pytest.mark.parametrize("method", ["at", "imitation"])
def test_cached_teacher_gives_the_losses_and_weights_of_the_live_teacher(data_root, tmp_path, method):
    teacher = tiny(5, 0).eval().requires_grad_(False)
    live = targets(data_root, teacher, method, None)
    cached = targets(data_root, teacher, method, tmp_path / "cache")
    assert live.cache is None and cached.cache is not None and cached.cache.is_file()
    loss = build_kd_loss(method)
    student = tiny(3, 1)
    for plain, carried in zip(DataLoader(live.train_set, batch_size=4), DataLoader(cached.train_set, batch_size=4)):
        torch.testing.assert_close(carried["target"], plain["target"], rtol=0, atol=0)
        produced = outputs(student, plain)
        torch.testing.assert_close(loss(produced, cached.outputs(carried)), loss(produced, live.outputs(plain)))

    trained = []
    for source, run in ((live, "live"), (cached, "cached")):
        model = tiny(3, 1)

        def step(batch: dict, model: DCCNN = model, source=source) -> torch.Tensor:
            produced = outputs(model, batch)
            return F.l1_loss(produced.image, batch["target"]) + loss(produced, source.outputs(batch))

        settings = TrainSettings(epochs=1, batch_size=3, lr=1e-2)
        train_stage(Stage("kd", model, step), source.train_set, live.train_set, settings, tmp_path / run)
        trained.append(model.state_dict())
    for a, b in zip(*trained):
        torch.testing.assert_close(trained[0][a], trained[1][b], rtol=1e-4, atol=1e-6, msg=a)


def test_cache_is_reused_until_teacher_data_mask_or_method_change(data_root, tmp_path, write_kdmri):
    cache = tmp_path / "cache"
    teacher = tiny(5, 0)
    first = targets(data_root, teacher, "at", cache).cache
    built = first.stat().st_mtime_ns
    assert targets(data_root, teacher, "at", cache).cache == first and first.stat().st_mtime_ns == built

    other_method = targets(data_root, teacher, "imitation", cache).cache
    assert other_method != first and first.exists()  # each method keeps its own file
    assert np.load(other_method, mmap_mode="r").dtype.names == ("image",)

    with torch.no_grad():
        teacher.cascades[0].convs[0].bias.add_(1e-3)
    retrained = targets(data_root, teacher, "at", cache).cache
    assert retrained != first and not first.exists()  # the stale cache is removed

    key = cache_key(teacher, open_split(data_root, "train", 4), "at")
    assert cache_key(teacher, open_split(data_root, "train", 8), "at") != key  # another mask
    write_kdmri(data_root / "train" / "b.h5", make_phantom(3, *SHAPE, seed=5))
    assert cache_key(teacher, open_split(data_root, "train", 4), "at") != key  # other data


class FeatureL1(nn.Module):
    """A loss that does not say what it needs of the teacher."""

    def forward(self, student: Outputs, teacher: Outputs) -> torch.Tensor:
        return F.l1_loss(student.features[0], teacher.features[0])


def test_live_teacher_when_the_cache_cannot_serve(data_root, tmp_path):
    teacher = tiny(5, 0)
    train_set = open_split(data_root, "train", 4)
    no_summary = teacher_targets(teacher, FeatureL1(), "l1", train_set, outputs, tmp_path / "cache", "cpu")
    not_a_slice_dataset = teacher_targets(
        teacher, build_kd_loss("at"), "at", list(train_set), outputs, tmp_path / "cache", "cpu"
    )
    augmented = teacher_targets(teacher, build_kd_loss("at"), "at",
                                open_split(data_root, "train", 4, augment=Augmenter(["flip"])), outputs,
                                tmp_path / "cache", "cpu")
    random_masks = teacher_targets(teacher, build_kd_loss("at"), "at",
                                   open_split(data_root, "train", 4, augment=Augmenter([], random_masks=True)),
                                   outputs, tmp_path / "cache", "cpu")
    for source in (no_summary, not_a_slice_dataset, augmented, random_masks):
        assert source.cache is None
        batch = next(iter(DataLoader(source.train_set, batch_size=2)))
        assert "teacher" not in batch
        torch.testing.assert_close(source.outputs(batch).image, teacher(batch["kspace"], batch["mask"]))
    assert not (tmp_path / "cache").exists()
