"""What the recipe needs to know about a task: its data, how to call its models, the baseline row, the taps.

The training side of the tasks of :mod:`kdc.tasks`, registered against the same names. ``recon`` is KD-MRI's
reconstruction (DC-CNN on undersampled k-space + mask, baseline: the zero-filled image); ``recon_complex`` the same
with complex images (``--image complex``: real and imaginary channels, exact complex DC); ``sr`` its
super-resolution experiment (VDSR on the k-space-truncated low-resolution image, baseline: that image);
``recon_multicoil`` a network on every coil's k-space in fastMRI's layout (``--task multicoil``: kdc's SENSE
VarNet-style teacher and student, or a user's class such as fastMRI's VarNet; baseline: the zero-filled root sum of
squares); ``recon_image`` a user's image-to-image network on the zero-filled magnitude (``--task image``: fastMRI's
U-Net; baseline: that image). Which layers are distilled is the models' architecture's
business (:mod:`kdc.compress.architectures`). Settings are the ``run.json`` dict of a run
(:class:`kdc.compress.recipe.RunConfig` as a dict).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch
from torch import nn

from kdc._io import atomic_path
from kdc.compress.architectures import FeatureTaps, architecture_of, called
from kdc.compress.losses import KD_LOSSES, Outputs, build_kd_loss
from kdc.data.augment import Augmenter
from kdc.data.lowres import open_lowres_split
from kdc.data.slices import FASTMRI_CROP, open_split
from kdc.errors import KdcError
from kdc.models.dc import DataConsistency, as_complex
from kdc.mri.layout import centre_crop
from kdc.tasks import (
    COMPLEX_RECON, IMAGE_RECON, MULTICOIL_RECON, RECON as RECON_SPEC, SUPER_RESOLUTION, TaskSpec, find_task,
)

Batch = dict[str, Any]


def feature_loss(method: str, student: Outputs | None = None, teacher: Outputs | None = None) -> nn.Module:
    """The ``method`` KD loss; one with trainable parts per tap (FitNet's regressors) is sized for the features of
    ``student`` and ``teacher`` (outputs of the two models on any batch), else for KD-MRI's presets."""
    if not getattr(KD_LOSSES.get(method), "sized_by_taps", False) or student is None or teacher is None:
        return build_kd_loss(method)
    return build_kd_loss(method, cascades=len(student.features),
                         student_channels=[f.shape[1] for f in student.features],
                         teacher_channels=[f.shape[1] for f in teacher.features])


class Task:
    """Base of the tasks; ``presets`` maps the roles ``teacher`` and ``student`` to kdc's model presets (a task
    without them trains users' models only)."""

    #: What compress, export and runtime share about the task.
    spec: ClassVar[TaskSpec]
    #: Table row that scores the network's input without a network.
    baseline: ClassVar[str]
    presets: ClassVar[dict[str, str]]
    #: kdc's presets ``kdc distill --student NAME`` may pick instead of ``presets["student"]``.
    students: ClassVar[tuple[str, ...]] = ()

    @property
    def name(self) -> str:
        return self.spec.name

    def preset(self, role: str, student: str | None = None) -> str | None:
        """kdc's preset of ``role`` (``teacher``, or a student): the ``--student`` ``student`` when it names one of
        :attr:`students`, else :attr:`presets`' (None: the task has none)."""
        if role != "teacher" and student in self.students:
            return student
        return self.presets.get("teacher" if role == "teacher" else "student")

    def open_split(self, data: str | Path, split: str, settings: Mapping[str, Any],
                   augment: Augmenter | None = None) -> Sequence[dict]:
        """The task's items of ``data``'s ``split``; ``augment`` transforms them (training only)."""
        raise NotImplementedError

    def meta(self, settings: Mapping[str, Any]) -> dict[str, Any]:
        """What checkpoints and ``metrics.json`` record about the task's inputs."""
        raise NotImplementedError

    def label(self, settings: Mapping[str, Any]) -> str:
        """Short description for table titles, e.g. ``4x`` or ``SR 2x``."""
        raise NotImplementedError

    def predict(self, model: nn.Module, batch: Batch) -> torch.Tensor:
        """The model's image for a batch already on the device."""
        raise NotImplementedError

    def baseline_image(self, batch: Batch) -> torch.Tensor:
        raise NotImplementedError

    def outputs(self, model: nn.Module, batch: Batch, taps: Sequence[str] = ()) -> Outputs:
        """The image and the distilled feature maps, float32: the outputs of the model's submodules at ``taps``, or
        without taps kdc's models' own (teacher and student taps are paired by position)."""
        own_features = architecture_of(model).features
        if own_features is not None and not taps:
            image, features, hidden = own_features(model, batch)
        else:
            with FeatureTaps(model, taps) as tapped:
                image = self.predict(model, batch)
            features, hidden = tapped.features, ()
        return Outputs(_as_target(image, batch), features, hidden).float()

    def image_outputs(self, model: nn.Module, batch: Batch) -> Outputs:
        """The image alone, float32: all a loss on the reconstruction (imitation, L1) reads. The same image as
        :meth:`outputs` without keeping (and converting) every feature map: at 256x256 bf16 a student step with its
        feature maps ran about twice as long as one without."""
        return Outputs(_as_target(self.predict(model, batch), batch), []).float()

    def check_images(self, dataset: Sequence[dict], source: str) -> Sequence[dict]:
        """``dataset`` if its targets have the task's image channels (``(1, H, W)`` magnitude, ``(2, H, W)`` real and
        imaginary parts), else a one-line error naming ``source`` and the ``--image`` that fits the data."""
        channels = np.shape(dataset[0]["target"])[0] if len(dataset) else self.spec.image_channels
        if channels != self.spec.image_channels:
            kinds = {1: "magnitude images (1, H, W)", 2: "complex images (2, H, W): real and imaginary parts"}
            hint = "--image complex" if channels == 2 else "--image magnitude, or complex data (kdc data build --complex)"
            raise KdcError(f"{source}: 'target' holds {kinds.get(channels, f'{channels} channels')}, but a "
                           f"{self.spec.image} model needs {kinds[self.spec.image_channels]}; use {hint}")
        return dataset

    def write_run_files(self, run_dir: Path, train_set: Sequence[dict]) -> None:
        """Files a run directory needs besides checkpoints (none by default)."""


class Reconstruction(Task):
    """DC-CNN from undersampled k-space; taps: conv 3 of 5 (teacher) <-> conv 2 of 3 (student) in every cascade."""

    spec = RECON_SPEC
    baseline = "zero-filled"
    presets = {"teacher": "teacher", "student": "student"}

    def open_split(self, data: str | Path, split: str, settings: Mapping[str, Any],
                   augment: Augmenter | None = None) -> Sequence[dict]:
        dataset = open_split(data, split, settings["acceleration"], settings["mask_kind"], settings["seed"],
                             settings.get("center_fraction"), self.spec.image,
                             FASTMRI_CROP if settings.get("crop") else None, augment)
        return self.check_images(dataset, f"{data} ({split})")

    def meta(self, settings: Mapping[str, Any]) -> dict[str, Any]:
        return {"acceleration": settings["acceleration"], "mask_kind": settings["mask_kind"],
                "mask_seed": settings["seed"], "center_fraction": settings.get("center_fraction"),
                "crop": bool(settings.get("crop"))}

    def label(self, settings: Mapping[str, Any]) -> str:
        return f"{settings['acceleration']}x"

    def predict(self, model: nn.Module, batch: Batch) -> torch.Tensor:
        return _as_target(model(batch["kspace"], batch["mask"]), batch)

    def baseline_image(self, batch: Batch) -> torch.Tensor:
        return _as_target(DataConsistency(self.spec.image_channels).zero_filled(batch["kspace"]), batch)

    def write_run_files(self, run_dir: Path, train_set: Sequence[dict]) -> None:
        with atomic_path(run_dir / "mask.npy") as tmp, open(tmp, "wb") as f:
            np.save(f, train_set.mask)


def _as_target(image: torch.Tensor, batch: Batch) -> torch.Tensor:
    """``image`` cropped to the batch's targets (``--crop`` scores fastMRI's central 320x320); unchanged when the
    targets have its size or the batch has none."""
    return centre_crop(image, tuple(batch["target"].shape[-2:])) if "target" in batch else image


class ComplexReconstruction(Reconstruction):
    """Complex DC-CNN (real and imaginary channels) from undersampled k-space of complex images; taps as ``recon``."""

    spec = COMPLEX_RECON
    presets = {"teacher": "complex_teacher", "student": "complex_student"}

    def meta(self, settings: Mapping[str, Any]) -> dict[str, Any]:
        return {"task": self.name, **super().meta(settings)}

    def label(self, settings: Mapping[str, Any]) -> str:
        return f"{settings['acceleration']}x complex"


class SuperResolution(Task):
    """VDSR from the low-resolution image; taps: conv 6 of 11 (teacher) <-> conv 4 of 7 (student)."""

    spec = SUPER_RESOLUTION
    baseline = "low-res"
    presets = {"teacher": "sr_teacher", "student": "sr_student"}

    def open_split(self, data: str | Path, split: str, settings: Mapping[str, Any],
                   augment: Augmenter | None = None) -> Sequence[dict]:
        if augment is not None:
            option = f"--augment {','.join(augment.names)}" if augment.names else "--random-masks"
            raise KdcError(f"{option}: the sr task has no augmentation or masks; use --task recon")
        return open_lowres_split(data, split, settings["scale"])

    def meta(self, settings: Mapping[str, Any]) -> dict[str, Any]:
        return {"task": "sr", "scale": settings["scale"]}

    def label(self, settings: Mapping[str, Any]) -> str:
        return f"SR {settings['scale']}x"

    def predict(self, model: nn.Module, batch: Batch) -> torch.Tensor:
        return model(batch["image"])

    def baseline_image(self, batch: Batch) -> torch.Tensor:
        return batch["image"]


class MultiCoilReconstruction(Reconstruction):
    """A network on every coil's undersampled k-space, fastMRI's call: ``model(kspace (N, C, H, W, 2) centred,
    mask (N, 1, 1, W, 1) bool) -> (N, H, W)`` or ``(N, 1, H, W)``, the root sum of squares image. kdc's presets are
    the SENSE VarNet-style teacher and student (:mod:`kdc.models.sense_varnet`); users' classes (fastMRI's VarNet)
    come with ``--teacher/--student MODULE:CLASS``."""

    spec = MULTICOIL_RECON
    presets = {"teacher": "multicoil_teacher", "student": "multicoil_student"}
    students = ("multicoil_student", "multicoil_dccnn")

    def open_split(self, data: str | Path, split: str, settings: Mapping[str, Any],
                   augment: Augmenter | None = None) -> Sequence[dict]:
        return open_split(data, split, settings["acceleration"], settings["mask_kind"], settings["seed"],
                          settings.get("center_fraction"), crop=FASTMRI_CROP if settings.get("crop") else None,
                          augment=augment, coils=True)

    def meta(self, settings: Mapping[str, Any]) -> dict[str, Any]:
        return {"task": self.name, **super().meta(settings)}

    def label(self, settings: Mapping[str, Any]) -> str:
        return f"{settings['acceleration']}x multi-coil"

    def predict(self, model: nn.Module, batch: Batch) -> torch.Tensor:
        image = model(batch["kspace"], batch["mask"].bool())
        return _as_target(image.unsqueeze(1) if image.dim() == 3 else image, batch)

    def baseline_image(self, batch: Batch) -> torch.Tensor:
        """The root sum of squares of the zero-filled coil images."""
        kspace = torch.view_as_complex(batch["kspace"].contiguous())
        coils = torch.fft.fftshift(torch.fft.ifft2(torch.fft.ifftshift(kspace, dim=(-2, -1)), norm="ortho"),
                                   dim=(-2, -1))
        return _as_target(coils.abs().pow(2).sum(dim=1, keepdim=True).sqrt(), batch)


class ImageReconstruction(Reconstruction):
    """A user's image-to-image network on the zero-filled magnitude ``|ifft2(undersampled k-space)|`` ``(N, 1, H, W)``
    (cropped like the targets), returning the image at the input's scale (fastMRI's U-Net, through its family's
    pipeline: :func:`kdc.compress.architectures.called`). The items are ``recon``'s; no kdc preset takes the input.
    """

    spec = IMAGE_RECON
    baseline = "zero-filled"
    presets = {}

    def meta(self, settings: Mapping[str, Any]) -> dict[str, Any]:
        return {"task": self.name, **super().meta(settings)}

    def label(self, settings: Mapping[str, Any]) -> str:
        return f"{settings['acceleration']}x image"

    def predict(self, model: nn.Module, batch: Batch) -> torch.Tensor:
        return called(model)(self.baseline_image(batch))

    def baseline_image(self, batch: Batch) -> torch.Tensor:
        """The zero-filled magnitude, the network's input."""
        return _as_target(torch.fft.ifft2(as_complex(batch["kspace"]), norm="ortho").abs(), batch)


#: The training side of every task of :mod:`kdc.tasks`, by name.
TASKS: dict[str, Task] = {task.name: task for task in (Reconstruction(), ComplexReconstruction(), SuperResolution(),
                                                       MultiCoilReconstruction(), ImageReconstruction())}
RECON = TASKS["recon"]


def get_task(name: str) -> Task:
    if name not in TASKS:
        raise KdcError(f"unknown task {name!r}: expected one of {sorted(TASKS)}")
    return TASKS[name]


def task_for(settings: Mapping[str, Any]) -> Task:
    """The task of a run's settings: ``task`` (``--task``) and ``image`` (``--image``, default magnitude)."""
    return get_task(find_task(settings.get("task", "recon"), settings.get("image", "magnitude")).name)
