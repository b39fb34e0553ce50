"""``kdc reconstruct``: input files -> exported model -> image files (NIfTI, DICOM, fastMRI h5) and metrics.

Each input is read by its registered reader (:mod:`kdc.runtime.readers`) one volume at a time, coil-compressed to
one virtual coil when it has several (:mod:`kdc.mri.coils`), turned so that its sampled lines are the model's,
undersampled with the acquired mask (or ``--mask`` / ``--acc`` for fully sampled data), normalised as one volume,
run through the model in batches of slices and handed to every registered writer asked for (:mod:`kdc.runtime.writers`). The
whole output directory is built under a temporary name and renamed at the end. numpy and the runtimes only.
"""

from __future__ import annotations

import contextlib
import errno
import glob
import os
import time
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from kdc._io import atomic_directory, write_json
from kdc.data.formats import printable
from kdc.data.metrics import nmse, psnr, ssim
from kdc.mri.coils import root_sum_of_squares, virtual_coil, volume_compression
from kdc.mri.fft import ifft2, ifft2c, uncentred_to_centred
from kdc.mri.layout import from_channels
from kdc.mri.masks import MaskKind, cartesian_mask, center_fraction_for, load_mask, sampled_lines
from kdc.mri.normalise import zero_filled_peak
from kdc.mri.partial_fourier import PartialFourier
from kdc.runtime.readers import InputError, RawVolume, read_input
from kdc.runtime.session import Reconstructor
from kdc.runtime.tensors import kspace_channels
from kdc.runtime.writers import (OutputError, OutputVolume, Provenance, WriteOptions, Writer, file_stem,
                                 writers_for)

#: Relative difference between a measured mask's acceleration and the model's trained one above which a volume
#: gets a note: random masks vary with their seed (fastMRI's 4x: 3.3x to 4.9x over 200 seeds at width 368).
ACCELERATION_SLACK = 0.5
#: fastMRI's evaluation crop (``--crop``).
FASTMRI_CROP = (320, 320)
METRICS_FILE = "metrics.json"


@dataclass(frozen=True)
class Settings:
    """Options of ``kdc reconstruct`` beyond the model: formats, batching, undersampling and output."""

    formats: tuple[str, ...] = ("nifti",)
    batch: int = 8
    mask_file: Path | None = None
    acceleration: int | None = None
    mask_kind: MaskKind = "random"
    mask_seed: int = 0
    center_fraction: float | None = None
    crop: bool = False
    overwrite: bool = False
    write: WriteOptions = field(default_factory=WriteOptions)


@dataclass(frozen=True)
class Sampling:
    """The mask a volume is reconstructed with: uncentred ``(H, W)`` or the model's baked input, and its origin."""

    mask: np.ndarray
    origin: str

    @property
    def acceleration(self) -> float:
        return float(self.mask.size / max(np.count_nonzero(self.mask), 1))


@dataclass(frozen=True)
class ModelView:
    """A volume as the model takes it: one (virtual) coil, uncentred, its lines along the model's mask axis (a
    multi-coil model: every coil, centred, columns sampled).

    ``kspace`` ``(S, H, W)`` complex64 (multi-coil: ``(S, C, H, W)``); ``acquired`` the ``(H, W)`` uncentred
    acquired mask or None (fully sampled);
    ``line_axis`` the axis of the sampled lines (-1 columns, -2 rows); ``transposed``: H and W of the file were
    swapped so that its sampled lines lie along the model's; ``partial_fourier`` the band of phase encodes acquired
    when asymmetric about DC (its missing lines are unacquired in ``acquired``), else None.
    """

    kspace: np.ndarray
    acquired: np.ndarray | None
    line_axis: int
    transposed: bool
    partial_fourier: PartialFourier | None = None

    @property
    def partial_fourier_only(self) -> bool:
        """Every line of a partial Fourier band acquired: fully sampled apart from the partial Fourier."""
        return self.partial_fourier is not None and self.partial_fourier.covers(self.acquired)

    @property
    def matrix(self) -> tuple[int, int]:
        return int(self.kspace.shape[-2]), int(self.kspace.shape[-1])

    def to_file(self, images: np.ndarray) -> np.ndarray:
        """``(S, H, W)`` images of this view back in the file's orientation."""
        return images.swapaxes(-1, -2) if self.transposed else images


def model_view(volume: RawVolume, line_axis: int | None = None) -> ModelView:
    """Coil-compress ``volume`` to one virtual coil (per volume, from its calibration region), make it uncentred and
    turn it so that its sampled lines lie along ``line_axis``, the model's (None: as they are)."""
    matrix = volume_compression(volume.kspace, volume.mask, centred=volume.centred) if volume.coils > 1 else None
    kspace = virtual_coil(volume.kspace, matrix, volume.centred)
    line_axis = volume.line_axis if line_axis is None else line_axis
    transposed = volume.line_axis != line_axis
    acquired = None if volume.fully_sampled else volume.mask
    partial_fourier = volume.partial_fourier
    if transposed:
        kspace = kspace.swapaxes(-1, -2)
        acquired = None if acquired is None else acquired.T
        partial_fourier = None if partial_fourier is None else partial_fourier.transposed()
    return ModelView(np.ascontiguousarray(kspace, dtype=np.complex64), acquired, line_axis, transposed,
                     partial_fourier)


def choose_sampling(volume: RawVolume, view: ModelView, model: Reconstructor, settings: Settings) -> Sampling:
    """``--mask``/``--acc`` for fully sampled input (within its partial Fourier band: the lines outside it stay
    unacquired), else the acquired mask, else the model's baked mask."""
    if settings.mask_file is not None or settings.acceleration is not None:
        if view.partial_fourier_only:
            sampling = choose_sampling(volume, replace(view, acquired=None, partial_fourier=None), model, settings)
            return Sampling(sampling.mask * view.partial_fourier.phase_lines(view.matrix),
                            f"{sampling.origin} within the partial Fourier band")
        if view.acquired is not None:
            lines = sampled_lines(view.acquired)
            acquired = (f"{lines[1].size} of {view.matrix[lines[0]]} lines" if lines is not None else
                        f"{np.count_nonzero(view.acquired)} of {view.acquired.size} samples")
            raise InputError(f"{volume.source}: already undersampled ({acquired} acquired); --mask and --acc "
                             "undersample fully sampled input only")
        if settings.mask_file is not None:
            return Sampling(load_mask(settings.mask_file, view.matrix), f"mask {settings.mask_file.name}")
        mask = cartesian_mask(settings.mask_kind, settings.acceleration, view.matrix, seed=settings.mask_seed,
                              center_fraction=settings.center_fraction, axis=view.line_axis)
        return Sampling(mask, f"{settings.mask_kind} seed {settings.mask_seed}")
    if view.acquired is not None:
        return Sampling(view.acquired, "acquired")
    if model.mask_baked:
        return Sampling(model.baked_mask(), "baked")
    raise InputError(f"{volume.source}: k-space is fully sampled: undersample it with --acc N [--mask-kind "
                     "random|equispaced] or --mask MASK.npy")


def acceleration_note(model: Reconstructor, acceleration: float, origin: str, tolerance: float = 0.0) -> str | None:
    """A line when ``acceleration`` (of ``origin``, e.g. ``--acc 8``) differs by more than ``tolerance`` (relative)
    from the acceleration the model was trained at (its contract's), else None."""
    trained = model.contract.acceleration
    if trained is None or abs(acceleration / trained - 1) <= tolerance:
        return None
    return (f"{model.path.name} was trained at {trained:g}x, {origin} samples at {acceleration:g}x: expect a worse "
            f"image than a model trained at {acceleration:g}x gives")


def check_kind(volume: RawVolume, model: Reconstructor) -> None:
    """Multi-coil data need a complex model: the virtual coil's image has the coils' phase."""
    if volume.coils > 1 and not model.task_spec.is_complex:
        raise InputError(f"{volume.source}: multi-coil k-space ({volume.coils} coils) needs a complex model "
                         f"(contract output_kind 'complex'); {model.path.name} reconstructs magnitude images "
                         f"(output_kind {model.contract.output_kind!r})")


def check_size(volume: RawVolume, view: ModelView, model: Reconstructor) -> None:
    """One line naming the size the data need and the export command that makes it."""
    if view.matrix == model.image_size:
        return
    height, width = view.matrix
    turned = " (rows and columns swapped so that its sampled lines run as the model's)" if view.transposed else ""
    flags = " --format openvino" if model.path.suffix == ".xml" else ""
    flags += " --bake-mask" if model.mask_baked else ""
    user_model = model.contract.model.source  # a user's MODULE:CLASS
    source, origin = ((f"{user_model} --init JSON --weights FILE",
                       "JSON, FILE: the constructor arguments and weights it was exported with") if user_model else
                      (f"RUN --model {model.role}", "RUN: the run directory it was exported from"))
    raise InputError(
        f"{volume.source}: k-space matrix {height}x{width}{turned} does not fit {model.path.name}, exported for "
        f"{model.image_size[0]}x{model.image_size[1]}; export the model for this size: kdc export {source} "
        f"--size {height} {width}{flags} --out {model.path.stem}_{height}x{width}{model.path.suffix} ({origin})")


def centre_crop(images: np.ndarray, size: tuple[int, int]) -> tuple[np.ndarray, tuple[int, int]]:
    """The central ``size`` of ``(S, H, W)`` images (fastMRI's ``center_crop``) and the offset it starts at."""
    height, width = images.shape[-2:]
    if height < size[0] or width < size[1]:
        raise InputError(f"--crop {size[0]}x{size[1]}: the image is only {height}x{width}")
    top, left = (height - size[0]) // 2, (width - size[1]) // 2
    return images[..., top : top + size[0], left : left + size[1]], (top, left)


def volume_metrics(reference: np.ndarray, image: np.ndarray) -> dict[str, float]:
    return {"psnr": psnr(reference, image), "ssim": ssim(reference, image), "nmse": nmse(reference, image)}


@dataclass
class VolumeResult:
    """What one volume gave: the output volume, its zero-filled image and its reference (None if not known)."""

    output: OutputVolume
    zero_filled: np.ndarray | None  # computed only when there is a reference
    reference: np.ndarray | None
    notes: list[str]
    seconds: float

    def metrics(self) -> dict[str, Any] | None:
        if self.reference is None or self.zero_filled is None:
            return None
        return {**volume_metrics(self.reference, self.output.image),
                "zero_filled": volume_metrics(self.reference, self.zero_filled),
                "acceleration": self.output.provenance.acceleration, "mask": self.output.provenance.mask}


@dataclass
class ModelRun:
    """A volume through the model: ``(S, H, W)`` images in the file's orientation and scale, the zero-filled image
    (computed only when there is a reference), the reference (None if not known), the sampling, the model's seconds
    and the runtime's warnings."""

    image: np.ndarray
    zero_filled: np.ndarray | None
    reference: np.ndarray | None
    sampling: Sampling
    seconds: float
    warned: list[str]
    #: Where the image starts in the file's matrix (an image model's input is cropped to its size).
    offset: tuple[int, int] = (0, 0)


def run_single_coil(volume: RawVolume, model: Reconstructor, settings: Settings) -> ModelRun:
    """kdc's layout: one virtual coil, uncentred, normalised as one volume (the contract's rule)."""
    check_kind(volume, model)
    view = model_view(volume, model.mask_axis)
    check_size(volume, view, model)
    sampling = choose_sampling(volume, view, model, settings)
    kspace = kspace_channels(view.kspace) * sampling.mask
    scale = np.float32(zero_filled_peak(kspace) or 1.0)
    kspace /= scale
    mask = None if model.mask_baked and sampling.origin == "baked" else sampling.mask
    with recorded_warnings() as warned:
        started = time.perf_counter()
        image = np.concatenate([model.reconstruct(kspace[start : start + settings.batch], mask,
                                                  output="magnitude")[:, 0]
                                for start in range(0, volume.slices, settings.batch)])
        seconds = time.perf_counter() - started
    image = view.to_file(np.abs(image) * scale)
    reference = volume.reference
    if reference is None and view.partial_fourier_only:  # the partial Fourier band completed by POCS
        reference = view.to_file(np.abs(ifft2(view.partial_fourier.complete(view.kspace))).astype(np.float32))
    elif reference is None and view.acquired is None:
        reference = view.to_file(np.abs(ifft2(view.kspace)).astype(np.float32))
    zero_filled = None if reference is None else view.to_file(np.abs(ifft2(from_channels(kspace))) * scale)
    return ModelRun(image, zero_filled, reference, sampling, seconds, warned)


def centred_coils(volume: RawVolume, model: Reconstructor, settings: Settings, line_axis: int | None
                  ) -> tuple[ModelView, Sampling, np.ndarray]:
    """Every coil of ``volume`` centred (fastMRI's layout), turned so that its sampled lines lie along
    ``line_axis`` (None: as they are), the sampling, and its mask centred."""
    kspace = volume.kspace if volume.centred else uncentred_to_centred(volume.kspace)
    acquired = None if volume.fully_sampled else volume.mask
    transposed = line_axis is not None and volume.line_axis != line_axis
    if transposed:
        kspace, acquired = kspace.swapaxes(-1, -2), None if acquired is None else acquired.T
    view = ModelView(np.ascontiguousarray(kspace, dtype=np.complex64), acquired, line_axis or volume.line_axis,
                     transposed)
    sampling = choose_sampling(volume, view, model, settings)
    return view, sampling, np.fft.fftshift(sampling.mask).astype(np.float32)


def run_multicoil(volume: RawVolume, model: Reconstructor, settings: Settings) -> ModelRun:
    """A multi-coil model (fastMRI VarNet, ``kspace_layout`` ``coils_last``): every coil, centred, at the file's
    scale, sampled columns (a volume sampled along rows is turned); the output is the root sum of squares."""
    view, sampling, centred_mask = centred_coils(volume, model, settings, -1)
    check_size(volume, view, model)
    lines = sampled_lines(sampling.mask)
    if lines is None or lines[0] != -1:
        raise InputError(f"{volume.source}: {model.path.name} takes whole sampled columns (a 1-D Cartesian mask); "
                         f"the {sampling.origin} mask is not one")
    masked = view.kspace * centred_mask
    with recorded_warnings() as warned:
        started = time.perf_counter()
        image = np.concatenate([model.reconstruct(masked[start : start + settings.batch], centred_mask[0])
                                for start in range(0, volume.slices, settings.batch)])
        seconds = time.perf_counter() - started
    reference = volume.reference
    if reference is None and view.acquired is None:
        reference = view.to_file(root_sum_of_squares(ifft2c(view.kspace)).astype(np.float32))
    zero_filled = None if reference is None else view.to_file(root_sum_of_squares(ifft2c(masked)))
    return ModelRun(view.to_file(image), zero_filled, reference, sampling, seconds, warned)


def run_zero_filled(volume: RawVolume, model: Reconstructor, settings: Settings) -> ModelRun:
    """An image model on the zero-filled image (fastMRI's U-Net, task ``recon_image``), as fastMRI's
    ``UnetDataTransform`` makes it: the coils' zero-filled images centre-cropped to the model's size, their
    magnitude's root sum of squares. The model normalises it in its graph; the output is at the file's scale."""
    view, sampling, centred_mask = centred_coils(volume, model, settings, None)
    height, width = model.image_size
    if view.matrix[0] < height or view.matrix[1] < width:
        raise InputError(f"{volume.source}: k-space matrix {view.matrix[0]}x{view.matrix[1]} is smaller than the "
                         f"{height}x{width} image {model.path.name} takes (fastMRI crops the zero-filled image to it)")
    zero_filled, offset = centre_crop(root_sum_of_squares(ifft2c(view.kspace * centred_mask)), model.image_size)
    zero_filled = np.ascontiguousarray(zero_filled[:, None], dtype=np.float32)
    with recorded_warnings() as warned:
        started = time.perf_counter()
        image = np.concatenate([model.run({model.input_names[0]: zero_filled[start : start + settings.batch]})[
                                    model.output_names[0]][:, 0]
                                for start in range(0, volume.slices, settings.batch)])
        seconds = time.perf_counter() - started
    reference = volume.reference
    if reference is None and view.acquired is None:
        reference = root_sum_of_squares(ifft2c(view.kspace)).astype(np.float32)
    reference = None if reference is None else centre_crop(reference, model.image_size)[0]
    return ModelRun(image, zero_filled[:, 0], reference, sampling, seconds, warned, offset)


#: How a volume goes through a model, by the contract task's ``kspace_layout`` (:mod:`kdc.tasks`).
VOLUME_RUNS: dict[str, Callable[[RawVolume, Reconstructor, Settings], ModelRun]] = {
    "channels": run_single_coil, "coils_last": run_multicoil, "zero_filled": run_zero_filled,
}


@contextlib.contextmanager
def recorded_warnings() -> Iterator[list[str]]:
    """The runtime's warnings inside the block, each once, as lines."""
    lines: list[str] = []
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        yield lines
    lines.extend(dict.fromkeys(str(w.message) for w in caught))


def reconstruct_volume(volume: RawVolume, model: Reconstructor, settings: Settings) -> VolumeResult:
    """Run one volume through the model in batches, in the way its task's layout takes it (:data:`VOLUME_RUNS`)."""
    run = VOLUME_RUNS[model.task_spec.kspace_layout](volume, model, settings)
    image, zero_filled, reference, sampling = run.image, run.zero_filled, run.reference, run.sampling
    geometry = volume.geometry if run.offset == (0, 0) else volume.geometry.cropped(run.offset)
    if settings.crop:
        image, offset = centre_crop(image, FASTMRI_CROP)
        zero_filled = None if zero_filled is None else centre_crop(zero_filled, FASTMRI_CROP)[0]
        reference = None if reference is None else centre_crop(reference, FASTMRI_CROP)[0]
        geometry = geometry.cropped(offset)
    provenance = Provenance(model.name, model.role, model.contract.contract_version,
                            round(sampling.acceleration, 3), sampling.origin, printable(volume.source), model.backend)
    notes = run.warned + ([geometry.note] if geometry.note else [])
    if settings.acceleration is None and (note := acceleration_note(model, sampling.acceleration,
                                                                    f"the {sampling.origin} mask", ACCELERATION_SLACK)):
        notes.append(note)  # --acc is said once, before the first volume
    output = OutputVolume(volume.name, np.ascontiguousarray(image, dtype=np.float32), geometry, provenance)
    return VolumeResult(output, zero_filled, reference, notes, run.seconds)


def no_space(err: OSError) -> bool:
    return err.errno in (errno.ENOSPC, errno.EDQUOT)


def reconstruct_files(model: Reconstructor, inputs: list[Path], out: Path, settings: Settings,
                      progress: Callable[[str], None] = lambda line: None) -> dict[str, Any]:
    """Reconstruct every volume of ``inputs`` into ``out`` (created atomically); return the summary written to
    ``out/metrics.json`` when any volume had a reference."""
    if settings.batch < 1:
        raise InputError(f"--batch must be >= 1, got {settings.batch}")
    writers = writers_for(list(settings.formats))
    if out.exists() and not settings.overwrite:
        raise OutputError(f"{out} exists: choose another --out or pass --overwrite")
    summary: dict[str, Any] = {"model": str(model.path), "backend": model.backend, "volumes": {}}
    if settings.acceleration is not None:
        center_fraction_for(settings.acceleration, settings.center_fraction)  # refused before any file is read
        if note := acceleration_note(model, settings.acceleration, f"--acc {settings.acceleration}"):
            progress(f"warning: {note}")
    try:
        reads = [*inputs, Path(model.path), *([settings.mask_file] if settings.mask_file else [])]
        with atomic_directory(out, overwrite=settings.overwrite, reads=reads) as directory:
            for number, path in enumerate(inputs, 1):
                for volume in read_input(path):
                    summary["volumes"][volume.name] = write_volume(volume, model, settings, writers, directory,
                                                                   f"[{number}/{len(inputs)}]", progress)
            if any("psnr" in entry for entry in summary["volumes"].values()):
                write_json(directory / METRICS_FILE, summary)
    except FileExistsError:
        raise OutputError(f"{out} exists: choose another --out or pass --overwrite") from None
    except OSError as err:
        if no_space(err):
            raise OutputError(f"no space left on the device of {out} ({os.strerror(err.errno)}); nothing was "
                              "written") from None
        raise
    return summary


def write_volume(volume: RawVolume, model: Reconstructor, settings: Settings, writers: list[Writer],
                 directory: Path, counter: str, progress: Callable[[str], None]) -> dict[str, Any]:
    """Reconstruct one volume, write it in every format and report one progress line; return its summary entry."""
    stem = file_stem(volume.name)
    if any(directory.glob(f"{glob.escape(stem)}.*")) or (directory / stem).exists():
        raise InputError(f"{volume.source}: another input already wrote outputs named {volume.name!r}")
    started = time.perf_counter()
    result = reconstruct_volume(volume, model, settings)
    written = [path for writer in writers for path in writer.write(result.output, directory, settings.write)]
    seconds = time.perf_counter() - started
    provenance = result.output.provenance
    metrics = result.metrics()
    quality = f", PSNR {metrics['psnr']:.2f} dB (zero-filled {metrics['zero_filled']['psnr']:.2f})" if metrics else ""
    progress(f"{counter} {volume.source.name}: {volume.slices} slices {volume.matrix[0]}x{volume.matrix[1]}, "
             f"{provenance.acceleration:g}x {provenance.mask}, {seconds:.2f} s ({volume.slices / seconds:.1f} "
             f"slices/s, model {result.seconds:.2f} s){quality} -> {', '.join(w.name for w in writers)}")
    for note in result.notes:
        progress(f"note: {volume.name}: {note}")
    return {"source": str(volume.source), "slices": volume.slices, "seconds": seconds, "model_seconds": result.seconds,
            "files": [str(path.relative_to(directory)) for path in written], **(metrics or {})}
