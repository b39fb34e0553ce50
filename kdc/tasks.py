"""The tasks kdc trains, exports and serves, each described once and without torch.

A :class:`TaskSpec` says what the three stages must agree on: the name written into checkpoints, runs and export
contracts, the ``--task``/``--image`` options that pick it, the architecture of its models, the channels of its
images, the graph inputs, and what its output is. ``kdc.compress.tasks`` (training side) registers its half against
these names, and every family of models names its task in its entries (:mod:`kdc.compress.architectures`,
:mod:`kdc.export.architectures`); ``kdc.runtime`` reads the contract's ``task`` here. Adding a task is one
:func:`register` call here plus its training half, the families that take it, and their tests.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from kdc.errors import KdcError

KSPACE_INPUTS = ("kspace", "mask")
#: ``arch`` of a user's model (``kdc.models.user``): its task is the one its run or checkpoint records.
USER_ARCH = "user"
#: Graph input of a super-resolution artefact.
LOWRES_INPUT = "image_lowres"
IMAGE_KINDS = ("magnitude", "complex")


@dataclass(frozen=True)
class TaskSpec:
    """What compress, export and runtime share about a task (see the module docstring)."""

    #: Written as ``task`` into checkpoint meta, ``run.json`` and the export contract.
    name: str
    #: ``kdc train/distill --task``.
    family: str
    #: ``kdc train/distill --image``: ``magnitude`` (a real image) or ``complex`` (real and imaginary channels).
    image: str
    #: Architecture of the task's models (``arch`` of their config).
    arch: str
    #: ``C`` of the network's images ``(N, C, H, W)``: 1 real, 2 real and imaginary parts.
    image_channels: int
    #: Graph inputs in order, batched input first (``mask`` is optional: absent when baked into the graph).
    inputs: tuple[str, ...]
    #: Contract ``output_kind``.
    output_kind: str
    #: Contract description of the ``image`` output.
    output_description: str
    #: False for a task only exported (a user's architecture, :mod:`kdc.export.architectures`), not trained by kdc.
    trainable: bool = True
    #: How k-space reaches the model: a ``kspace`` input ``channels`` ``(N, 2, H, W)`` uncentred (kdc's), or
    #: ``coils_last`` ``(N, C, H, W, 2)`` centred (fastMRI's multi-coil layout); ``zero_filled``: the model takes the
    #: zero-filled magnitude image, which ``kdc reconstruct`` makes from the k-space (fastMRI's U-Net).
    kspace_layout: str = "channels"
    #: False when the output is ``(N, H, W)`` (no channel axis, fastMRI's VarNet).
    output_channels: bool = True
    #: kdc's own architectures whose models also take this task's inputs (``arch`` of their config).
    kdc_archs: tuple[str, ...] = ()

    @property
    def takes_kspace(self) -> bool:
        """True when the model reconstructs from undersampled k-space (+ mask) and has data consistency."""
        return self.inputs[0] == "kspace"

    @property
    def is_complex(self) -> bool:
        return self.image == "complex"

    def magnitude(self, images: np.ndarray) -> np.ndarray:
        """``(..., C, H, W)`` images -> ``(..., 1, H, W)`` magnitude: the real image itself (KD-MRI's real part)
        for one channel, ``hypot(real, imaginary)`` for two."""
        if self.image_channels == 1:
            return images
        return np.hypot(images[..., 0:1, :, :], images[..., 1:2, :, :])

    def complex_image(self, images: np.ndarray) -> np.ndarray:
        """``(..., 2, H, W)`` real/imaginary channels -> complex64 ``(..., 1, H, W)``."""
        if not self.is_complex:
            raise KdcError(f"a {self.name!r} model reconstructs real images ({self.output_kind}): it has no phase "
                           "to return; train one with --image complex")
        return (images[..., 0:1, :, :] + 1j * images[..., 1:2, :, :]).astype(np.complex64)


TASKS: dict[str, TaskSpec] = {}


def register(spec: TaskSpec) -> TaskSpec:
    TASKS[spec.name] = spec
    return spec


RECON = register(TaskSpec(
    "recon", "recon", "magnitude", "dccnn", 1, KSPACE_INPUTS, "real part",
    "reconstructed image, real part, same scale as input",
))
COMPLEX_RECON = register(TaskSpec(
    "recon_complex", "recon", "complex", "dccnn", 2, KSPACE_INPUTS, "complex",
    "reconstructed complex image: channel 0 real part, channel 1 imaginary part, same scale as input",
))
#: A user's network (``arch`` "user", e.g. fastMRI's VarNet) on every coil's centred k-space ``(N, C, H, W, 2)`` and
#: the column mask ``(N, 1, 1, W, 1)``, fastMRI's layout; output: the root sum of squares image ``(N, H, W)``.
#: Distilled with ``kdc distill --task multicoil --teacher MODULE:CLASS`` (docs/your-model.md) and exported
#: with ``kdc export MODULE:CLASS`` (docs/your-model.md).
MULTICOIL_RECON = register(TaskSpec(
    "recon_multicoil", "multicoil", "magnitude", USER_ARCH, 1, KSPACE_INPUTS, "magnitude",
    "root-sum-of-squares magnitude image (N, H, W), same scale as the k-space",
    kspace_layout="coils_last", output_channels=False, kdc_archs=("sense_varnet", "sense_dccnn"),
))
SUPER_RESOLUTION = register(TaskSpec(
    "sr", "sr", "magnitude", "vdsr", 1, (LOWRES_INPUT,), "image (input + predicted detail)",
    "super-resolved image, same scale as the input",
))


#: Graph input of an image-to-image reconstruction (a U-Net on the zero-filled image).
ZERO_FILLED_INPUT = "image_zero_filled"
#: A user's image-to-image network (``arch`` "user", e.g. fastMRI's U-Net) on the zero-filled magnitude image
#: ``(N, 1, H, W)``; output: the reconstructed magnitude at the input's scale. Distilled with ``kdc distill --task
#: image --teacher MODULE:CLASS`` and exported with ``kdc export MODULE:CLASS`` (docs/your-model.md).
IMAGE_RECON = register(TaskSpec(
    "recon_image", "image", "magnitude", USER_ARCH, 1, (ZERO_FILLED_INPUT,), "magnitude",
    "reconstructed magnitude image, same scale as the zero-filled input", kspace_layout="zero_filled",
))


def get_task(name: str) -> TaskSpec:
    """The task named ``name`` (a contract's, checkpoint's or run's ``task``)."""
    if name not in TASKS:
        raise KdcError(f"unknown task {name!r}: expected one of {sorted(TASKS)}")
    return TASKS[name]


def find_task(family: str, image: str = "magnitude") -> TaskSpec:
    """The trainable task of ``--task family --image image``."""
    trainable = [spec for spec in TASKS.values() if spec.trainable]
    for spec in trainable:
        if (spec.family, spec.image) == (family, image):
            return spec
    families = sorted({spec.family for spec in trainable})
    if family not in families:
        raise KdcError(f"unknown task {family!r} (--task): expected one of {families}")
    images = sorted(spec.image for spec in trainable if spec.family == family)
    raise KdcError(f"--image {image!r}: task {family!r} has {' or '.join(images)} images only")


def task_of_config(config: dict, recorded: str | None = None) -> TaskSpec:
    """The task of a model with this architecture config (``arch``, ``image_channels``, default 1). kdc's models
    have one task per config; a user's class (``arch`` "user") takes any task's inputs, so its task is the one its
    run or checkpoint records (``recorded``: the ``task`` of its meta; a run that records none is ``recon``, as
    ``run.json`` has it)."""
    if config.get("arch") == USER_ARCH:
        return get_task(recorded or RECON.name)
    key = (config.get("arch"), config.get("image_channels", 1))
    for spec in TASKS.values():
        if (spec.arch, spec.image_channels) == key or (key[0] in spec.kdc_archs and key[1] == spec.image_channels):
            return spec
    raise KdcError(f"no task has models with arch {key[0]!r} and {key[1]} image channels")
