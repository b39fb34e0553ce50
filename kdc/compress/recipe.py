"""The KD-MRI recipe: teacher, plain student, attention-transfer pre-training, then KD with imitation.

Stages and the files they leave in the run directory (see docs/conventions.md):
``teacher.pt`` (L1 to the target), ``student.pt`` (the same student trained alone, the baseline),
``student_at.pt`` (feature-loss pre-training, teacher conv 3 <-> student conv 2 in every cascade) and
``kd_student.pt`` (initialised from ``student_at``, L1 to the target + weighted imitation of the teacher).
"""

from __future__ import annotations

import dataclasses
import json
import logging
import shutil
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from kdc._io import atomic_path, write_json
from kdc.compress.evaluate import evaluate
from kdc.compress.losses import Outputs, build_kd_loss
from kdc.compress.trainer import LR_SCHEDULES, Stage, TrainSettings, train_stage
from kdc.data.slices import open_split
from kdc.errors import KdcError
from kdc.models.checkpoint import build_model, load_checkpoint
from kdc.models.dccnn import DCCNN

log = logging.getLogger("kdc")
#: Models of a finished run, in the order of the paper's table.
TABLE_ROLES = ("teacher", "student", "kd_student")


@dataclass
class RunConfig:
    """Settings of ``kdc train`` / ``kdc distill``; saved as ``run.json`` and checked again on ``--resume``."""

    data: str
    out: str
    acceleration: int = 4
    epochs: int = 10
    pretrain_epochs: int | None = None
    batch_size: int = 4
    lr: float = 1e-3
    device: str = "cpu"
    teacher: str | None = None
    method: str = "at"
    imitation_weight: float = 0.5
    mask_kind: str = "random"
    seed: int = 0
    lr_schedule: str = "cosine"


def resolve_device(device: str) -> str:
    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise KdcError(f"--device {device}: CUDA is not available on this machine (use cpu)")
    if device not in ("cpu",) and not device.startswith("cuda"):
        raise KdcError(f"--device {device}: expected cpu, cuda, cuda:N or auto")
    return device


def resolve_checkpoint(source: str | Path, role: str) -> Path:
    """A checkpoint path, or ``source/<role>.pt`` when ``source`` is a run directory."""
    path = Path(source)
    if path.is_dir():
        path = path / f"{role}.pt"
    if not path.is_file():
        raise KdcError(f"{path}: checkpoint not found")
    return path


def tap_layer(model: DCCNN) -> int:
    """The hidden conv whose features are distilled: conv 3 of 5 (teacher), conv 2 of 3 (student)."""
    return len(model.cascades[0].convs) // 2


def outputs(model: DCCNN, batch: dict[str, torch.Tensor]) -> Outputs:
    """Reconstruction and the distilled feature map of every cascade."""
    image, features = model.forward_features(batch["kspace"], batch["mask"])
    layer = tap_layer(model)
    return Outputs(image, [taps[layer] for taps in features])


class Run:
    """A run directory with its data, mask, log and settings; trains stages into it."""

    def __init__(self, config: RunConfig, resume: bool = False) -> None:
        self.config = config
        self.device = resolve_device(config.device)
        if config.lr_schedule not in LR_SCHEDULES:
            raise KdcError(f"--lr-schedule {config.lr_schedule!r}: expected one of {sorted(LR_SCHEDULES)}")
        self.train_set = open_split(config.data, "train", config.acceleration, config.mask_kind, config.seed)
        self.val_set = open_split(config.data, "val", config.acceleration, config.mask_kind, config.seed)
        if self.train_set.image_shape != self.val_set.image_shape:
            raise KdcError(
                f"{config.data}: train images {self.train_set.image_shape} differ from val {self.val_set.image_shape}"
            )
        self.dir = Path(config.out)
        self._check_settings(resume)
        (self.dir / "state").mkdir(parents=True, exist_ok=True)
        with atomic_path(self.dir / "mask.npy") as tmp, open(tmp, "wb") as f:
            np.save(f, self.train_set.mask)
        self._handler = logging.FileHandler(self.dir / "train.log")
        self._handler.setFormatter(logging.Formatter("%(asctime)s %(message)s"))
        log.addHandler(self._handler)
        log.setLevel(logging.INFO)
        self.meta = {
            "acceleration": config.acceleration,
            "image_size": list(self.train_set.image_shape),
            "mask_kind": config.mask_kind,
            "mask_seed": config.seed,
            "data": str(config.data),
        }

    def _check_settings(self, resume: bool) -> None:
        settings_path = self.dir / "run.json"
        current = dataclasses.asdict(self.config)
        if not settings_path.exists():
            write_json(settings_path, current)
            return
        if not resume:
            raise KdcError(f"{self.dir}: already holds a run; pass --resume to continue it or choose another --out")
        saved = json.loads(settings_path.read_text())
        saved.setdefault("lr_schedule", "constant")  # runs from before --lr-schedule trained with a constant lr
        changed = sorted(k for k in current if k != "device" and saved.get(k) != current[k])
        if changed:
            raise KdcError(f"{settings_path}: --resume with different settings ({', '.join(changed)})")

    def __enter__(self) -> Run:
        return self

    def __exit__(self, *exc: object) -> None:
        log.removeHandler(self._handler)
        self._handler.close()

    def train(
        self,
        role: str,
        model: nn.Module,
        step_loss: Callable[[dict], torch.Tensor],
        epochs: int | None = None,
        extra: Sequence[nn.Module] = (),
        keep_best: bool = True,
    ) -> dict:
        """Train ``model`` as ``role`` (resuming if state exists); its best weights land in ``<role>.pt``."""
        torch.manual_seed(self.config.seed)
        settings = TrainSettings(
            epochs if epochs is not None else self.config.epochs,
            self.config.batch_size,
            self.config.lr,
            self.device,
            self.config.seed,
            self.config.lr_schedule,
        )
        stage = Stage(role, model, step_loss, {**self.meta, "role": role}, extra, keep_best)
        return train_stage(stage, self.train_set, self.val_set, settings, self.dir)

    def train_supervised(self, role: str, preset: str) -> dict:
        """Train a fresh ``preset`` model with L1 to the target."""
        torch.manual_seed(self.config.seed)
        model = build_model(preset)
        return self.train(role, model, lambda b: F.l1_loss(model(b["kspace"], b["mask"]), b["target"]))

    def load(self, role: str) -> nn.Module:
        return load_checkpoint(self.dir / f"{role}.pt")[0].to(self.device)

    def evaluate(self, roles: Sequence[str]) -> dict[str, dict]:
        """Validation table of the zero-filled input and ``roles``; also written to ``metrics.json``."""
        models: dict[str, nn.Module | None] = {"zero-filled": None}
        models.update({role: self.load(role) for role in roles})
        table = evaluate(models, self.val_set, self.device)
        write_json(self.dir / "metrics.json", {"split": "val", "acceleration": self.config.acceleration, "models": table})
        return table


def train(config: RunConfig, preset: str, resume: bool = False) -> dict[str, dict]:
    """``kdc train``: one model (``teacher`` or ``student`` preset) with L1 to the target."""
    with Run(config, resume) as run:
        run.train_supervised(preset, preset)
        return run.evaluate([preset])


def distill(config: RunConfig, resume: bool = False) -> dict[str, dict]:
    """``kdc distill``: every KD-MRI stage (finished ones are skipped on resume), then the validation table."""
    build_kd_loss(config.method)  # an unknown method fails before any training
    with Run(config, resume) as run:
        if config.teacher:
            source = resolve_checkpoint(config.teacher, "teacher")
            load_checkpoint(source)  # refuse a foreign file before copying it
            shutil.copyfile(source, run.dir / "teacher.pt")
        else:
            run.train_supervised("teacher", "teacher")
        teacher = run.load("teacher").eval().requires_grad_(False)

        run.train_supervised("student", "student")

        feature_loss = build_kd_loss(config.method).to(run.device)
        torch.manual_seed(config.seed)
        pretrained = build_model("student")

        def feature_step(batch: dict) -> torch.Tensor:
            with torch.no_grad():
                reference = outputs(teacher, batch)
            return feature_loss(outputs(pretrained, batch), reference)

        run.train("student_at", pretrained, feature_step, config.pretrain_epochs, [feature_loss], keep_best=False)

        kd_student = run.load("student_at")
        imitation = build_kd_loss("imitation")

        def kd_step(batch: dict) -> torch.Tensor:
            with torch.no_grad():
                reference = outputs(teacher, batch)
            produced = outputs(kd_student, batch)
            return F.l1_loss(produced.image, batch["target"]) + config.imitation_weight * imitation(produced, reference)

        run.train("kd_student", kd_student, kd_step)
        return run.evaluate(TABLE_ROLES)
