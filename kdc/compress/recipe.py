"""The KD-MRI recipe: teacher, plain student, attention-transfer pre-training, then KD with imitation.

Stages and the files they leave in the run directory (see docs/conventions.md):
``teacher.pt`` (L1 to the target), ``student.pt`` (the same student trained alone, the baseline),
``student_at.pt`` (feature-loss pre-training, teacher conv 3 <-> student conv 2 in every cascade) and
``kd_student.pt`` (initialised from ``student_at``, L1 to the target + weighted imitation of the teacher).
The task (``recon``: DC-CNN, ``sr``: VDSR super-resolution, ``multicoil``: a user's network such as fastMRI's VarNet)
says how to call the models; their architecture (:mod:`kdc.compress.architectures`) which layers are paired.
Teacher and student are kdc's presets of the task, or users' classes (``--teacher/--student MODULE:CLASS`` with
``--teacher-init/--student-init`` and ``--teacher-weights``, :mod:`kdc.models.user`).
Ablations: ``pretrain_epochs=0`` skips the pre-training (the KD student starts from random weights),
``imitation_weight=0`` drops imitation, ``feature_weight > 0`` adds the feature loss to the KD stage.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import sys
import shutil
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import default_collate

from kdc._io import remove_stale_temps, write_json
from kdc.compress import distributed
from kdc.compress.evaluate import evaluate
from kdc.compress.architectures import architecture_of, tap_paths
from kdc.compress.losses import KD_LOSSES, Outputs, RelationalLoss, build_kd_loss, check_batch_size
from kdc.compress.precision import prepare_model, resolve_precision
from kdc.compress.tasks import Task, feature_loss, task_for
from kdc.compress.teachers import get_teacher_mode
from kdc.compress.teacher_cache import TeacherTargets, teacher_targets
from kdc.compress.trainer import LR_SCHEDULES, Stage, TrainSettings, train_stage
from kdc.data.augment import Augmenter, augmenter_of
from kdc.errors import KdcError
from kdc.models.checkpoint import build_model, load_checkpoint, model_config, save_checkpoint
from kdc.models.user import is_user_model, is_user_spec, load_user_model, parse_init

log = logging.getLogger("kdc")
#: Models of a finished run, in the order of the paper's table.
TABLE_ROLES = ("teacher", "student", "kd_student")
#: Settings that do not change the results (beyond float error); ``--resume`` may change them.
RUNTIME_SETTINGS = ("out", "device", "teacher_cache", "workers", "val_slices")


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
    task: str = "recon"
    scale: int = 2
    teacher_cache: bool = True
    feature_weight: float = 0.0
    student: str | None = None
    lr_schedule: str = "cosine"
    center_fraction: float | None = None
    crop: bool = False
    #: ``magnitude`` (real images, KD-MRI) or ``complex`` (real and imaginary channels); picks the task with ``task``.
    image: str = "magnitude"
    teacher_mode: str = "plain"
    #: DataLoader worker processes reading training slices (0: the training process reads them).
    workers: int = 0
    #: Comma-separated names of :data:`kdc.data.augment.AUGMENTATIONS` applied to training slices ("": none).
    augment: str = ""
    #: ``bf16``, ``fp32`` or ``auto`` (:mod:`kdc.compress.precision`); run.json records what ``auto`` resolved to.
    precision: str = "auto"
    #: A new mask per training slice and epoch (``--random-masks``, fastMRI's way); validation keeps the fixed mask.
    random_masks: bool = False
    #: Validation slices scored after every epoch to keep the best one (evenly spaced; 0: all). The final table
    #: (``metrics.json``) always scores every validation slice.
    val_slices: int = 64
    #: Constructor arguments (JSON object) of ``teacher``/``student`` when they name a user's ``MODULE:CLASS``.
    teacher_init: str = ""
    student_init: str = ""
    #: State dict of a user's trained teacher (``--teacher-weights``); without it the teacher stage trains it.
    teacher_weights: str | None = None
    #: ``TEACHER_PATH=STUDENT_PATH,...`` module paths of users' models to distil (``--taps``; "": the defaults).
    taps: str = ""

    def user_class(self, role: str) -> str | None:
        """The ``MODULE:CLASS`` the ``role`` (teacher, or a student) is an instance of, None for kdc's presets."""
        source = self.teacher if role == "teacher" else self.student
        return source if source and is_user_spec(source) else None

    def check_user_models(self) -> None:
        """Refuse options that belong to a user's class when the role is not one, in one line."""
        for role, option, value in (("teacher", "--teacher-init", self.teacher_init),
                                    ("teacher", "--teacher-weights", self.teacher_weights),
                                    ("student", "--student-init", self.student_init)):
            if value and not self.user_class(role):
                raise KdcError(f"{option} builds a user's class: pass --{role} MODULE:CLASS with it")
        for role, init in (("teacher", self.teacher_init), ("student", self.student_init)):
            if self.user_class(role):
                parse_init(init)


def augmenter(config: RunConfig) -> Augmenter | None:
    """The training-set augmentation of ``--augment`` and ``--random-masks`` (seeded with the run's seed), or None."""
    return augmenter_of(config.augment, config.seed, config.random_masks)


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


def open_run(run: Path, data: str | None, split: str, overrides: dict | None = None,
             augment: Augmenter | None = None, trusted: Sequence[str] = ()) -> tuple[dict, Task, Sequence[dict], dict]:
    """The run's settings (``overrides`` replacing some, e.g. the mask's ``seed``), task, the split it is scored on
    (``augment`` transforming its slices) and its trained models (``role -> model``; users' classes only those
    ``trusted`` names, :mod:`kdc.models.checkpoint`)."""
    settings_path = run / "run.json"
    if not settings_path.is_file():
        raise KdcError(f"{run}: not a run directory (no run.json)")
    try:
        settings = {"task": RunConfig.task, "scale": RunConfig.scale, "image": RunConfig.image,
                    **json.loads(settings_path.read_text()), **(overrides or {})}
        task = task_for(settings)
        dataset = task.open_split(data or settings["data"], split, settings, augment)
    except (json.JSONDecodeError, KeyError, TypeError) as err:
        raise KdcError(f"{settings_path}: not a kdc run.json ({err})") from None
    models = {}
    for role in TABLE_ROLES:
        if (run / f"{role}.pt").exists():
            models[role], meta = load_checkpoint(run / f"{role}.pt", trusted)
            check_role(run / f"{role}.pt", models[role], task, role, same_config=False,
                       student=settings.get("student"))
            trained = meta.get("image_size")
            shape = getattr(dataset, "image_shape", None)
            if trained and shape and list(shape) != list(trained):
                log.warning("warning: %s was trained on %s images; scoring it on %s images of %s", role,
                            "x".join(map(str, trained)), "x".join(map(str, shape)), data or settings["data"])
    if not models:
        raise KdcError(f"{run}: holds no trained model ({', '.join(f'{r}.pt' for r in TABLE_ROLES)})")
    return settings, task, dataset, models


def check_role(path: Path, model: nn.Module, task: Task, role: str, *, same_config: bool,
               student: str | None = None) -> None:
    """Refuse a model that cannot be the ``role`` (teacher, or a student) of ``task``: another architecture, or
    with ``same_config`` another configuration than the task's preset (distilled layers are paired by position);
    ``student`` is the run's ``--student`` (a preset it names is the students' preset, :meth:`Task.preset`).
    Users' models and tasks without presets are not checked here (their taps are checked by name)."""
    preset = task.preset(role, student)
    if preset is None or is_user_model(model):
        return
    expected = build_model(preset)
    if type(model) is not type(expected):
        raise KdcError(f"{path}: a {type(model).__name__} cannot be the {role} of task {task.name!r} "
                       f"(expected a {type(expected).__name__})")
    if same_config and model_config(model) != model_config(expected):
        raise KdcError(f"{path}: a {model_config(model)} cannot be the {role} (expected the preset "
                       f"{model_config(expected)}: the distilled layers are paired by position)")


def reusable_checkpoint(task: Task, role: str, source: str | Path, teacher_mode: str = "plain") -> Path:
    """The checkpoint ``--teacher``/``--student`` names, checked to fit the task's ``role`` (a teacher, also the
    run's ``--teacher-mode``: no record counts as plain)."""
    path = resolve_checkpoint(source, role)
    model, meta = load_checkpoint(path)
    check_role(path, model, task, role, same_config=True)
    if role == "teacher" and meta.get("teacher_mode", "plain") != teacher_mode:
        raise KdcError(f"{path}: a teacher trained with --teacher-mode {meta.get('teacher_mode', 'plain')}, "
                       f"but this run asks for --teacher-mode {teacher_mode}")
    return path


class Run:
    """A run directory with its data, mask, log and settings; trains stages into it."""

    def __init__(self, config: RunConfig, resume: bool = False) -> None:
        self.config = config
        self.device = resolve_device(config.device)
        config.precision = resolve_precision(config.precision, self.device)
        if config.lr_schedule not in LR_SCHEDULES:
            raise KdcError(f"--lr-schedule {config.lr_schedule!r}: expected one of {sorted(LR_SCHEDULES)}")
        settings = dataclasses.asdict(config)
        self.task = task_for(settings)
        config.check_user_models()
        #: Users' classes the run's checkpoints may be rebuilt from: those named on the command line.
        self.trusted = [spec for spec in map(config.user_class, ("teacher", "student")) if spec]
        #: Tap module paths of users' models by role (``teacher``, ``student``), set by :meth:`check_feature_loss`.
        self.taps: dict[str, list[str]] = {"teacher": [], "student": []}
        #: The two roles' outputs on two training slices (what a sized feature loss is sized for).
        self.probe: dict[str, Outputs] = {}
        self.train_set = self.task.open_split(config.data, "train", settings, augment=augmenter(config))
        self.val_set = self.task.open_split(config.data, "val", settings)
        if self.train_set.image_shape != self.val_set.image_shape:
            raise KdcError(
                f"{config.data}: train images {self.train_set.image_shape} differ from val {self.val_set.image_shape}"
            )
        self.dir = Path(config.out)
        self._check_settings(resume)
        self._handlers: list[logging.Handler] = []  # ranks other than 0 neither write nor log
        self.meta = {
            **self.task.meta(settings),
            "image_size": list(self.train_set.image_shape),
            "data": str(config.data),
        }

    def _check_settings(self, resume: bool) -> None:
        """Refuse to overwrite a run, or to resume it with other settings."""
        settings_path = self.dir / "run.json"
        current = dataclasses.asdict(self.config)
        if not settings_path.exists():
            return
        if not resume:
            raise KdcError(f"{self.dir}: already holds a run; pass --resume to continue it or choose another --out")
        # Settings added since the run was written count as their defaults, except the learning-rate schedule and
        # the precision: runs from before --lr-schedule trained with a constant lr, from before --precision in fp32.
        defaults = {f.name: f.default for f in dataclasses.fields(RunConfig)} | {"lr_schedule": "constant",
                                                                                 "precision": "fp32"}
        saved = {**defaults, **json.loads(settings_path.read_text())}
        changed = sorted(k for k in current if k not in RUNTIME_SETTINGS and saved.get(k) != current[k])
        if changed:
            raise KdcError(f"{settings_path}: --resume with different settings ({', '.join(changed)})")

    def __enter__(self) -> Run:
        """Create (or reopen) the run directory: nothing is written before, so a refused command leaves nothing."""
        distributed.barrier()  # every rank has read run.json before rank 0 writes it
        if distributed.is_main():
            if not (self.dir / "run.json").exists():
                write_json(self.dir / "run.json", dataclasses.asdict(self.config))
            (self.dir / "state").mkdir(parents=True, exist_ok=True)
            for directory in (self.dir, self.dir / "state", self.dir / "cache"):
                remove_stale_temps(directory)  # left by a killed run
            self.task.write_run_files(self.dir, self.train_set)
            self._handlers = [logging.FileHandler(self.dir / "train.log"), logging.StreamHandler(sys.stderr)]
            self._handlers[0].setFormatter(logging.Formatter("%(asctime)s %(message)s"))
        for handler in self._handlers:  # the console gets the epoch and validation lines too
            log.addHandler(handler)
        log.setLevel(logging.INFO)
        log.info("precision %s on %s%s", self.config.precision, self.device,
                 " (bfloat16 convolutions, channels_last; data consistency and losses in float32)"
                 if self.config.precision == "bf16" else "")
        return self

    def __exit__(self, *exc: object) -> None:
        for handler in self._handlers:
            log.removeHandler(handler)
            handler.close()

    def train(
        self,
        role: str,
        model: nn.Module,
        step_loss: Callable[[dict], torch.Tensor],
        epochs: int | None = None,
        extra: Sequence[nn.Module] = (),
        keep_best: bool = True,
        train_set: Sequence[dict] | None = None,
        meta: dict | None = None,
    ) -> dict:
        """Train ``model`` as ``role`` (resuming if state exists); its best weights land in ``<role>.pt``.

        ``train_set`` replaces the run's training set (e.g. with cached teacher outputs); ``meta`` adds to what the
        checkpoint records.
        """
        torch.manual_seed(self.config.seed)
        settings = TrainSettings(
            epochs if epochs is not None else self.config.epochs,
            self.config.batch_size,
            self.config.lr,
            self.device,
            self.config.seed,
            self.config.lr_schedule,
            self.config.workers,
            self.config.precision,
            self.config.val_slices,
        )
        stage = Stage(role, model, step_loss, {**self.meta, "role": role, **(meta or {})}, extra, keep_best, self.task)
        return train_stage(stage, train_set or self.train_set, self.val_set, settings, self.dir)

    def new_model(self, role: str) -> nn.Module:
        """An untrained ``role`` (``teacher``, or a student): the user's class built with its ``--*-init``, else the
        task's preset (for a student, the one ``--student NAME`` picks)."""
        spec = self.config.user_class(role)
        preset = self.task.preset(role, self.config.student)
        if spec is None and preset is None:
            raise KdcError(f"task {self.task.name!r} has no kdc {role}: name your class with --{role} MODULE:CLASS")
        model = build_model(preset) if spec is None else load_user_model(
            spec, self.config.teacher_init if role == "teacher" else self.config.student_init).train()
        family = architecture_of(model).task
        if family is not None and family != self.config.task:
            raise KdcError(f"--{role} {spec or preset}: a {type(model).__name__} takes the inputs "
                           f"of --task {family}, not --task {self.config.task}")
        return model

    def trained_user_teacher(self) -> nn.Module:
        """The user's class loaded from ``--teacher-weights`` (checked before anything is written)."""
        return load_user_model(self.config.user_class("teacher"), self.config.teacher_init,
                               Path(self.config.teacher_weights))

    def adopt_teacher(self, teacher: nn.Module) -> None:
        """Write the user's trained teacher (:meth:`trained_user_teacher`) as ``RUN/teacher.pt``."""
        if distributed.is_main():
            save_checkpoint(self.dir / "teacher.pt", teacher, {**self.meta, "role": "teacher", "teacher_mode": "plain",
                                                               "weights": self.config.teacher_weights})
        distributed.barrier()

    def train_supervised(self, role: str, meta: dict | None = None) -> dict:
        """Train a fresh ``role`` (teacher or student, :meth:`new_model`) with L1 to the target."""
        torch.manual_seed(self.config.seed)
        model = self.new_model(role)
        return self.train(role, model, lambda b: F.l1_loss(self.task.predict(model, b), b["target"]), meta=meta)

    def outputs(self, role: str) -> Callable[[nn.Module, dict], Outputs]:
        """``outputs(model, batch)`` of the ``role`` (teacher, or a student): the image and the role's taps."""
        taps = self.taps["teacher" if role == "teacher" else "student"]
        return lambda model, batch: self.task.outputs(model, batch, taps)

    def teacher_targets(
        self, teacher: nn.Module, loss: nn.Module, method: str, cached: bool = True, image_only: bool = False
    ) -> TeacherTargets:
        """The teacher outputs ``loss`` needs: cached under ``RUN/cache`` (``--teacher-cache``) or live; with
        ``image_only`` the teacher's image without its feature maps."""
        cache_dir = self.dir / "cache" if cached and self.config.teacher_cache else None
        extract = self.task.image_outputs if image_only else self.outputs("teacher")
        return teacher_targets(teacher, loss, method, self.train_set, extract, cache_dir, self.device)

    def check_feature_loss(self, method: str) -> None:
        """Pick the taps (:func:`kdc.compress.architectures.tap_paths`) and run ``method`` once on untrained models
        and two training slices, so that a loss or a tap that does not fit fails now rather than after the teacher
        and student have trained; the outputs size FitNet's regressors."""
        batch = default_collate([self.train_set[i] for i in range(min(2, len(self.train_set)))])
        models = {role: self.new_model(role) for role in ("teacher", "student")}
        self.taps["teacher"], self.taps["student"] = tap_paths(models["teacher"], models["student"], self.config.taps)
        with torch.no_grad():
            self.probe = {role: self.outputs(role)(model, batch) for role, model in models.items()}
            try:
                feature_loss(method, self.probe["student"], self.probe["teacher"])(self.probe["student"],
                                                                                   self.probe["teacher"])
            except (ValueError, RuntimeError, IndexError) as err:
                raise KdcError(f"--method {method} does not fit the taps ({' '.join(str(err).split())})") from None

    def reuse(self, role: str, path: Path) -> None:
        """Copy a trained ``role`` checkpoint checked by :func:`reusable_checkpoint` into the run."""
        if distributed.is_main():
            shutil.copyfile(path, self.dir / f"{role}.pt")
        distributed.barrier()

    def load(self, role: str) -> nn.Module:
        return load_checkpoint(self.dir / f"{role}.pt", self.trusted)[0].to(self.device)

    def evaluate(self, roles: Sequence[str]) -> dict[str, dict]:
        """Validation table of the task's baseline (its input) and ``roles``; also written to ``metrics.json``.

        Empty on ranks other than 0."""
        if not distributed.is_main():
            return {}
        models: dict[str, nn.Module | None] = {self.task.baseline: None}
        models.update({role: self.load(role) for role in roles})
        table = evaluate(models, self.val_set, self.device, self.task)
        summary = self.task.meta(dataclasses.asdict(self.config))
        write_json(self.dir / "metrics.json", {"split": "val", **summary, "models": table})
        return table


def train(config: RunConfig, role: str, resume: bool = False) -> dict[str, dict]:
    """``kdc train``: one model (the task's ``teacher`` or ``student`` preset) with L1 to the target."""
    with Run(config, resume) as run:
        run.train_supervised(role)
        return run.evaluate([role])


def distill(config: RunConfig, resume: bool = False) -> dict[str, dict]:
    """``kdc distill``: every KD-MRI stage (finished ones are skipped on resume), then the validation table."""
    build_kd_loss(config.method)  # an unknown method fails before any training
    train_teacher = get_teacher_mode(config.teacher_mode)
    check_batch_size(config.method, config.batch_size)
    uses_feature_loss = config.pretrain_epochs != 0 or config.feature_weight
    if uses_feature_loss and distributed.world()[1] > 1 and issubclass(KD_LOSSES[config.method], RelationalLoss):
        raise KdcError(f"--method {config.method} compares the samples of a batch, which --distributed splits "
                       "across processes: train it in one process, or pick a per-sample method (at, fitnet, fsp)")
    run = Run(config, resume)
    if uses_feature_loss:
        run.check_feature_loss(config.method)
    elif config.taps:
        raise KdcError("--taps: this run distils no features (--pretrain-epochs 0 and --feature-weight 0)")
    else:
        for role in ("teacher", "student"):
            run.new_model(role)  # a class that does not fit the task fails before anything is written
    reused = {role: reusable_checkpoint(run.task, role, source, config.teacher_mode)
              for role, source in (("teacher", config.teacher), ("student", config.student))
              if source and not config.user_class(role) and not (role == "student" and source in run.task.students)}
    adopted = run.trained_user_teacher() if config.teacher_weights and not (run.dir / "teacher.pt").exists() else None
    with run:
        for role in ("teacher", "student"):
            if role in reused:
                run.reuse(role, reused[role])
            elif role == "teacher" and config.teacher_weights:
                if adopted is not None:
                    run.adopt_teacher(adopted)
            elif role == "teacher":
                train_teacher(run)
            else:
                run.train_supervised(role)
        distilled = {"teacher_mode": config.teacher_mode}  # what the distilled students' checkpoints record
        # In the layout its precision runs fastest in: a bf16 NCHW teacher ran 4.5x slower than channels_last here.
        teacher = prepare_model(run.load("teacher").eval().requires_grad_(False), config.precision)

        torch.manual_seed(config.seed)
        pretrained = run.new_model("student")
        # After the seed: regressors resume alike.
        distilled_features = feature_loss(config.method, run.probe.get("student"), run.probe.get("teacher"))
        distilled_features = distilled_features.to(run.device)
        outputs = run.outputs("student")

        if config.pretrain_epochs == 0:
            kd_student = pretrained.to(run.device)
        else:
            feature_teacher = run.teacher_targets(teacher, distilled_features, config.method)

            def feature_step(batch: dict) -> torch.Tensor:
                return distilled_features(outputs(pretrained, batch), feature_teacher.outputs(batch))

            run.train(
                "student_at", pretrained, feature_step, config.pretrain_epochs, [distilled_features], keep_best=False,
                train_set=feature_teacher.train_set, meta=distilled,
            )
            kd_student = run.load("student_at")
        imitation = build_kd_loss("imitation")
        # With the feature loss in the KD stage too, the teacher runs live (the cache holds one loss's summary).
        kd_teacher = run.teacher_targets(teacher, imitation, "imitation", cached=not config.feature_weight,
                                         image_only=not config.feature_weight)
        kd_outputs = outputs if config.feature_weight else run.task.image_outputs  # imitation + L1 read the image

        def kd_step(batch: dict) -> torch.Tensor:
            produced = kd_outputs(kd_student, batch)
            reference = kd_teacher.outputs(batch)
            loss = F.l1_loss(produced.image, batch["target"]) + config.imitation_weight * imitation(produced, reference)
            if config.feature_weight:
                loss = loss + config.feature_weight * distilled_features(produced, reference)
            return loss

        run.train("kd_student", kd_student, kd_step, extra=[distilled_features] if config.feature_weight else [],
                  train_set=kd_teacher.train_set, meta=distilled)
        return run.evaluate(TABLE_ROLES)
