"""Slices of a dataset split with one fixed undersampling mask (KD-MRI style), or for training with augmentation
(:mod:`kdc.data.augment`) a mask drawn per slice and epoch (fastMRI style): a map-style dataset on numpy.

Items are dicts of float32 arrays, ready for ``torch.utils.data.DataLoader``'s default collation:
``kspace`` (2, H, W) undersampled uncentred single-coil k-space (real, imaginary), ``mask`` (1, 1, W) for a mask
of whole columns, (1, H, 1) for whole rows, (1, H, W) otherwise, ``target`` (1, h, w) magnitude in [0, 1] or, with
``image="complex"``, (2, h, w) real and imaginary parts (``h, w`` the ``crop`` when one is given); plus ``volume``
(file stem) and ``slice`` (index).

With ``coils=True`` (the ``multicoil`` task: fastMRI's VarNet and the like) items keep every coil in fastMRI's
layout instead: ``kspace`` (C, H, W, 2) undersampled **centred** k-space (real, imaginary last), ``mask`` (1, 1, W, 1)
the centred column mask, ``target`` (1, h, w) the root sum of squares of the fully sampled coil images (``h, w``
the ``crop`` when one is given: fastMRI scores the central 320x320); everything
divided by the volume's scale (the peak of its virtual-coil image, so the RSS peaks near 1).

Slices are read from the h5 files on demand, one at a time: nothing but per-volume statistics is kept, and every
process (DataLoader worker) opens its own h5 handles.
"""

from __future__ import annotations

import hashlib
import os
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import h5py
import numpy as np
from threadpoolctl import threadpool_limits

from kdc.data.augment import Augmenter
from kdc.data.demo import demo_root
from kdc.data.errors import DataError
from kdc.data.formats import VolumeInfo, detect, inspect_volume, notice_once, open_h5
from kdc.data.volumes import VolumeStats, cached_volume_stats, single_coil
from kdc.mri.fft import fft2, fft2c, ifft2, ifft2c
from kdc.mri.layout import centre_crop, centre_fit, to_channels
from kdc.mri.masks import MaskKind, cartesian_mask, center_fraction_for, load_mask, mask_like, sampled_lines

DEMO = "demo"
ImageKind = Literal["magnitude", "complex"]
IMAGE_KINDS: tuple[str, ...] = ("magnitude", "complex")
#: fastMRI's evaluation crop (``--crop``).
FASTMRI_CROP = (320, 320)
#: h5 handles a process keeps open at once.
OPEN_FILES = 32


@dataclass(frozen=True)
class SplitSettings:
    """How slices become items: the image kind, the common slice shape and the target crop."""

    image: ImageKind = "magnitude"
    shape: tuple[int, int] | None = None
    crop: tuple[int, int] | None = None
    #: Items with every coil (fastMRI's multi-coil layout, see the module docstring) instead of one virtual coil.
    coils: bool = False


def model_mask(mask: np.ndarray) -> np.ndarray:
    """The network's mask input of an ``(H, W)`` mask: ``(1, 1, W)`` for whole columns, ``(1, H, 1)`` for whole
    rows, ``(1, H, W)`` otherwise (float32)."""
    lines = sampled_lines(mask)
    mask_input = mask if lines is None else mask[:1] if lines[0] == -1 else mask[:, :1]
    return mask_input[None].astype(np.float32)


class SliceDataset:
    """Every slice of some volumes, undersampled with one mask (or with ``augment.random_masks`` a draw of
    ``mask_kind`` like it per slice and epoch) and read lazily from the h5 files."""

    def __init__(self, volumes: Sequence[VolumeInfo], acceleration: int, mask: np.ndarray,
                 stats: Sequence[VolumeStats], settings: SplitSettings = SplitSettings(),
                 stored_kspace: bool = False, augment: Augmenter | None = None, mask_kind: MaskKind = "random",
                 center_fraction: float | None = None) -> None:
        self.files: list[Path] = [info.path for info in volumes]
        self.acceleration = acceleration
        self.mask: np.ndarray = mask
        self.image_shape: tuple[int, int] = mask.shape
        self.settings = settings
        self.stats = list(stats)
        self.stored_kspace = stored_kspace
        self.augment = augment
        self.mask_kind: MaskKind = mask_kind
        self.center_fraction = center_fraction
        self._mask_input = model_mask(mask)
        self._index = [(volume, index) for volume, info in enumerate(volumes) for index in range(info.slices)]
        self._handles: OrderedDict[int, h5py.File] = OrderedDict()
        self._pid = os.getpid()

    def __len__(self) -> int:
        return len(self._index)

    @property
    def deterministic(self) -> bool:
        """Whether an item depends on its index alone (no augmentation, no per-slice masks)."""
        return self.augment is None

    def set_epoch(self, epoch: int) -> None:
        """Draw this epoch's augmentations and masks (the trainer calls it before every epoch)."""
        if self.augment is not None:
            self.augment.epoch = epoch

    def __getitem__(self, index: int) -> dict[str, Any]:
        volume_index, slice_index = self._index[index]
        file = self._file(volume_index)
        reader, stats = detect(file), self.stats[volume_index]
        # NaN and Inf are looked for in the one-coil image and k-space below, not in every coil of the file.
        raw = reader.read(file, slice(slice_index, slice_index + 1), self.acceleration, check_finite=False)
        scale = np.float32(stats.scale)
        if self.settings.coils:
            return self._coil_item(raw.kspace if raw.centred else fft2c(ifft2(raw.kspace)), scale, f"{file.filename}: slice {slice_index}") | {
                "volume": self.files[volume_index].stem, "slice": slice_index}
        # The file's uncentred (virtual-coil) k-space: the stored undersampling (unless augmentation re-simulates it
        # from the reference), or the fully sampled acquisition.
        stored = self.stored_kspace and self.augment is None
        measured = single_coil(raw, stats.coil_matrix)[0] / scale if stored or raw.reference is None else None
        image = raw.reference[0] / scale if raw.reference is not None else ifft2(measured)
        if not np.isfinite(image.sum() + (0 if measured is None else measured.sum())):
            raise DataError(f"{file.filename}: slice {slice_index} holds NaN or Inf ({reader.name} data)")
        if not self.stored_kspace and image.shape != self.image_shape:
            image, measured = centre_fit(image, self.image_shape), None
        if self.settings.image == "magnitude" and np.iscomplexobj(image):
            image, measured = np.abs(image), None
        if self.augment is not None:  # the transformed target and its (e.g. noisy) simulated k-space
            image, measured = self.augment(image, index)
        if measured is None:  # simulate k-space from the (padded or magnitude) target
            measured = fft2(image)
        target = centre_crop(image, self.settings.crop or self.image_shape)
        mask, mask_input = self._mask(index)
        return {
            "kspace": to_channels(measured * mask),
            "mask": mask_input,
            "target": to_channels(target) if self.settings.image == "complex" else target[None].astype(np.float32),
            "volume": self.files[volume_index].stem,
            "slice": slice_index,
        }

    def _coil_item(self, centred: np.ndarray, scale: np.float32, where: str) -> dict[str, np.ndarray]:
        """``kspace``, ``mask`` and ``target`` of one slice's ``(1, C, H, W)`` centred coil k-space."""
        kspace = centred[0] / scale
        if not np.isfinite(kspace.sum()):
            raise DataError(f"{where} holds NaN or Inf")
        target = centre_crop(np.sqrt((np.abs(ifft2c(kspace)) ** 2).sum(axis=0)), self.settings.crop or self.image_shape)
        columns = np.fft.fftshift(self.mask[0])
        masked = kspace * columns
        return {"kspace": np.stack([masked.real, masked.imag], axis=-1).astype(np.float32),
                "mask": columns[None, None, :, None].astype(np.float32),
                "target": target[None].astype(np.float32)}

    def _mask(self, index: int) -> tuple[np.ndarray, np.ndarray]:
        """Item ``index``'s mask and the network's mask input: the fixed mask, or this epoch's draw for it."""
        if self.augment is None or not self.augment.random_masks:
            return self.mask, self._mask_input.copy()
        mask = mask_like(self.mask, self.mask_kind, self.acceleration, self.augment.mask_seed(index),
                         self.center_fraction)
        return mask, model_mask(mask)

    def fingerprint(self) -> str:
        """SHA-256 of what the items depend on: the files (path, size, mtime), slice indices, acceleration, mask and
        settings."""
        digest = hashlib.sha256()
        for path in self.files:
            stat = path.stat()
            digest.update(f"{path.resolve()}|{stat.st_size}|{stat.st_mtime_ns}\n".encode())
        digest.update(f"{self._index}|{self.acceleration}|{self.mask.shape}|{self.settings}\n".encode())
        digest.update(np.ascontiguousarray(self.mask, dtype=np.float32).tobytes())
        return digest.hexdigest()

    def _file(self, index: int) -> h5py.File:
        """This process's open handle of volume ``index`` (a forked worker opens its own)."""
        if self._pid != os.getpid():
            self._handles, self._pid = OrderedDict(), os.getpid()
        if index not in self._handles:
            if len(self._handles) >= OPEN_FILES:
                self._handles.popitem(last=False)[1].close()
            self._handles[index] = open_h5(self.files[index])
        self._handles.move_to_end(index)
        return self._handles[index]

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "_handles": OrderedDict()}


def one_thread_per_worker(worker_id: int) -> None:
    """DataLoader ``worker_init_fn``: one BLAS thread per worker process. The workers are the parallelism; BLAS
    threads on top of them oversubscribe the cores (coil compression's matmul then runs at half the slices/s)."""
    threadpool_limits(1)


def dataset_root(data: str | Path) -> Path:
    """The dataset directory ``data`` names: a path, or ``"demo"`` for the set shipped in the package."""
    root = demo_root() if str(data) == DEMO else Path(data)
    if not root.is_dir():
        raise DataError(f"{root}: dataset directory not found (expected ROOT/train/*.h5 and ROOT/val/*.h5, or 'demo')")
    return root


def split_volumes(data: str | Path, split: str) -> list[VolumeInfo]:
    """Headers of the volumes ``ROOT/split/*.h5``, sorted."""
    directory = dataset_root(data) / split
    if not directory.is_dir():
        raise DataError(f"{directory}: split '{split}' not found (expected a directory of .h5 volumes)")
    volumes = [inspect_volume(path) for path in sorted(directory.glob("*.h5"))]
    if not volumes:
        raise DataError(f"{directory}: split '{split}' holds no .h5 volumes")
    return volumes


def common_shape(root: Path, volumes: Sequence[VolumeInfo]) -> tuple[int, int]:
    """The slice shape every split of ``root`` is brought to: the largest height and width of its volumes (smaller
    images are zero-padded, centred, in the image domain); said once when the volumes differ."""
    others = [info for split in ("train", "val") if (root / split).is_dir()
              for info in split_volumes(root, split)] if root.is_dir() else []
    shapes = sorted({info.image_shape for info in [*volumes, *others]})
    shape = (max(height for height, _ in shapes), max(width for _, width in shapes))
    if len(shapes) > 1:
        notice_once(f"shape:{root}", f"{root}: volumes have slice sizes {shapes}; each image is zero-padded "
                                     f"(centred) to {shape[0]}x{shape[1]}")
    return shape


def open_split(
    data: str | Path, split: str, acceleration: int, mask_kind: MaskKind = "random", mask_seed: int = 0,
    center_fraction: float | None = None, image: ImageKind = "magnitude", crop: tuple[int, int] | None = None,
    augment: Augmenter | None = None, coils: bool = False,
) -> SliceDataset:
    """Slices of ``ROOT/split/*.h5`` undersampled with the dataset's mask ``ROOT/masks/mask_{acc}x.npy``, else the
    mask the files' stored k-space was undersampled with (KD-MRI), else a generated one.

    ``image="complex"`` gives complex targets and measured k-space; ``"magnitude"`` simulates k-space from the
    magnitude target (the phase of measured k-space is dropped, said once). ``crop`` crops targets. ``coils`` gives
    multi-coil items (module docstring): fully sampled k-space of one coil count and size, a column mask.
    """
    if image not in IMAGE_KINDS:
        raise DataError(f"image kind {image!r}: expected one of {IMAGE_KINDS}")
    mask_file = dataset_root(data) / "masks" / f"mask_{acceleration}x.npy"
    if not mask_file.is_file() or (augment is not None and augment.random_masks):
        center_fraction_for(acceleration, center_fraction)  # a generated mask needs it: fail before reading
    root = dataset_root(data)
    volumes = split_volumes(root, split)
    shape = common_shape(root, volumes)
    stats, acquired = [], []
    for info in volumes:
        with open_h5(info.path) as file:
            reader = detect(file)
            acquired.append(reader.acquired_mask(file, acceleration))
            if acquired[-1] is not None and reader.read(file, slice(0, 1)).reference is None:
                raise DataError(f"{info.path}: undersampled k-space without a fully sampled reference: it can be "
                                "reconstructed, not trained or scored on")
            stats.append(cached_volume_stats(file, reader, info))
            measured = reader.read(file, slice(0, 1)).measured_phase
        if not measured and image == "complex":
            raise DataError(f"{info.path}: holds magnitude images ({reader.name}, no measured phase), but a complex "
                            "model needs complex k-space (fastMRI or ISMRMRD raw data; `kdc data build --complex` "
                            "simulates it); use --image magnitude")
        if measured and image == "magnitude" and not coils:
            notice_once(f"phase:{root}", f"{root}: k-space with measured phase ({reader.name}): magnitude models "
                                         "train on the magnitude of its image; k-space is simulated from that "
                                         "magnitude and the phase is dropped (use complex models to keep it)")
    stored = any(mask is not None for mask in acquired)
    if mask_file.is_file():
        mask = load_mask(mask_file, shape)
    elif stored:
        mask = _common_acquired_mask(volumes, acquired, acceleration)
    else:
        mask = cartesian_mask(mask_kind, acceleration, shape, mask_seed, center_fraction)
    if stored and any(info.image_shape != shape for info in volumes):
        raise DataError(f"{root}: volumes with stored undersampled k-space ('kspace_volus_{acceleration}') have "
                        "different slice sizes; they cannot be padded to a common size")
    if coils:
        _check_coil_split(root, volumes, stored or augment is not None or image != "magnitude", mask)
    settings = SplitSettings(image, shape, None if crop is None else (min(crop[0], shape[0]), min(crop[1], shape[1])),
                             coils)
    if augment is not None:
        augment.check_shape(shape)
    return SliceDataset(volumes, acceleration, mask, stats, settings, stored_kspace=stored, augment=augment,
                        mask_kind=mask_kind, center_fraction=center_fraction)


def _check_coil_split(root: Path, volumes: Sequence[VolumeInfo], other_options: bool, mask: np.ndarray) -> None:
    """Refuse what multi-coil items do not support, in one line naming the file or option."""
    if other_options:
        raise DataError(f"{root}: multi-coil items (--task multicoil) are magnitude RSS targets of fully sampled "
                        "k-space, without --augment, --random-masks, --image complex or stored undersampling")
    for info in volumes:
        if info.format not in ("fastmri-multicoil", "ismrmrd") or info.image_shape != volumes[0].image_shape:
            raise DataError(f"{info.path}: {info.format} {info.image_shape[0]}x{info.image_shape[1]} with "
                            f"{info.coils} coil(s); --task multicoil needs multi-coil k-space (fastMRI multi-coil or "
                            "ISMRMRD, e.g. kdc data build --coils 8) of one size")
        if info.coils != volumes[0].coils:
            raise DataError(f"{info.path}: {info.coils} coils, but {volumes[0].path.name} has {volumes[0].coils}; "
                            "every volume of a multi-coil split needs the same coil count")
    lines = sampled_lines(mask)
    if lines is None or lines[0] != -1:
        raise DataError(f"{root}: its mask does not sample whole columns (phase encodes along W); --task multicoil "
                        "takes fastMRI's column masks")


def _common_acquired_mask(volumes: Sequence[VolumeInfo], masks: Sequence[np.ndarray | None],
                          acceleration: int) -> np.ndarray:
    """The one mask every volume's stored k-space was undersampled with."""
    first = next(index for index, mask in enumerate(masks) if mask is not None)
    for info, mask in zip(volumes, masks):
        if mask is None or not np.array_equal(mask, masks[first]):
            raise DataError(
                f"{info.path}: its 'kspace_volus_{acceleration}' was not undersampled with the mask of "
                f"{volumes[first].path.name}; supply the training mask as ROOT/masks/mask_{acceleration}x.npy"
            )
    return masks[first]

