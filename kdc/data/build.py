"""``kdc data build``: a KD-MRI h5 dataset from real NIfTI brain volumes, split by volume.

Each volume is reoriented to RAS, cut into 2-D slices along ``axis`` (training volumes along every axis of
``train_axes``: more training slices from the same few volumes), zero-padded (centred) to the
image's aspect ratio, resampled with antialiasing to ``(H, W)``, stripped of slices with too little foreground and
scaled so that its maximum is 1. k-space is simulated the way KD-MRI built its data: the uncentred orthonormal FFT
of the magnitude image, undersampled retrospectively with one fixed 1-D Cartesian mask per acceleration.

With ``complex_images`` or ``coils > 1`` the volumes are written as fully sampled **fastMRI** files instead
(``kspace`` centred, ``(S, C, H, W)`` for several coils): each volume's magnitude slices get one smooth random
phase (``complex_images``) and birdcage coil sensitivities (``kdc.mri.simulate``), so that complex and
multi-coil readers and models can be trained and tested on real anatomy.
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib.metadata
import importlib.util
import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

import kdc
from kdc._io import atomic_directory, write_json
from kdc.data.errors import DataError
from kdc.data.formats.limits import check_declared, check_stored
from kdc.data.resize import fit_images
from kdc.mri.fft import fft2, fft2c, ifft2
from kdc.mri.layout import centre_crop
from kdc.mri.masks import MASK_KINDS, MaskKind, cartesian_mask, center_fraction_for
from kdc.mri.simulate import complex_coil_images

#: Slice axis of a RAS-oriented volume.
AXES: dict[str, int] = {"sagittal": 0, "coronal": 1, "axial": 2}
#: A pixel is foreground when it exceeds this fraction of the volume's maximum.
FOREGROUND_LEVEL = 0.1
DTYPES: tuple[str, ...] = ("float32", "float16")
INSTALL_HINT = (
    "install one with `pip install --no-deps nilearn==0.14.1 nimare==0.22.1` or `apt-get install mricron-data` "
    "(`make data` does the first and builds data/brain), or pass --volume PATH.nii.gz"
)


@dataclass(frozen=True)
class Source:
    """A real brain volume shipped inside an installable package."""

    package: str | None  # Python package holding ``path``; None when ``path`` is absolute (a Debian package)
    path: str
    description: str
    install: str


SOURCES: dict[str, Source] = {
    "mni2009a": Source(
        "nilearn",
        "datasets/data/mni_icbm152_t1_tal_nlin_sym_09a_converted.nii.gz",
        "MNI ICBM152 2009a symmetric T1, average of 152 adults, skull-stripped, 1 mm",
        "pip install --no-deps nilearn==0.14.1",
    ),
    "mni152": Source(
        "nimare",
        "resources/templates/tpl-MNI152NLin6Asym_res-01_T1w.nii.gz",
        "FSL MNI152 NLin6Asym T1, average of 152 adults, with skull, 1 mm",
        "pip install --no-deps nimare==0.22.1",
    ),
    "colin27": Source(
        None,
        "/usr/share/mricron/templates/ch2.nii.gz",
        "Colin27 T1: one adult scanned 27 times and averaged, with skull, 1 mm",
        "apt-get install mricron-data",
    ),
}


@dataclass(frozen=True)
class VolumeInput:
    """A NIfTI volume to slice, with the name its h5 file gets and what is known about where it came from."""

    name: str
    path: Path
    origin: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class BuildSettings:
    """How volumes become slices and k-space."""

    shape: tuple[int, int] = (256, 256)
    accelerations: tuple[int, ...] = (4, 5, 8)
    mask_kind: MaskKind = "random"
    seed: int = 0
    val_volumes: int = 1
    min_foreground: float = 0.15
    axis: str = "axial"
    #: Slice axes of the training volumes (each gives one file per volume); None: ``axis`` alone.
    train_axes: tuple[str, ...] | None = None
    slices_per_volume: int | None = None
    dtype: str = "float32"
    targets_only: bool = False
    center_fraction: float | None = None
    complex_images: bool = False
    coils: int = 1

    @property
    def layout(self) -> str:
        """The file layout written: KD-MRI for magnitude single-coil data, else fastMRI (single- or multi-coil)."""
        if self.coils > 1:
            return "fastmri-multicoil"
        return "fastmri" if self.complex_images else "kd-mri"

    def axes(self, split: str) -> tuple[str, ...]:
        """The slice axes of a ``split``'s volumes: ``train_axes`` for training volumes, else ``axis``."""
        return tuple(dict.fromkeys(self.train_axes or (self.axis,))) if split == "train" else (self.axis,)


def locate_source(name: str) -> Path | None:
    """Path of a registered source's NIfTI file if it is installed (its package is found, never imported)."""
    if name not in SOURCES:
        raise DataError(f"--source {name!r}: unknown source, expected one of {sorted(SOURCES)}")
    source = SOURCES[name]
    if source.package is None:
        path = Path(source.path)
    else:
        spec = importlib.util.find_spec(source.package)
        if spec is None or not spec.submodule_search_locations:
            return None
        path = Path(spec.submodule_search_locations[0]) / source.path
    return path if path.is_file() else None


def resolve_inputs(sources: Sequence[str], volumes: Sequence[Path]) -> list[VolumeInput]:
    """Named sources then user volumes; with neither, every registered source that is installed."""
    inputs = []
    for name in dict.fromkeys(sources) if sources else ([] if volumes else list(SOURCES)):
        path = locate_source(name)
        if path is None:
            if sources:
                raise DataError(f"--source {name}: {SOURCES[name].path} not found; install it: {SOURCES[name].install}")
            continue
        inputs.append(VolumeInput(name, path, _source_origin(name)))
    for path in volumes:
        if not Path(path).is_file():
            raise DataError(f"--volume {path}: file not found")
        origin = {"file": str(Path(path).resolve())}
        inputs.append(VolumeInput(_unique_name(_stem(Path(path)), inputs), Path(path), origin))
    if not inputs:
        raise DataError(f"no source volume found: {INSTALL_HINT}")
    return inputs


def _source_origin(name: str) -> dict[str, str]:
    source = SOURCES[name]
    origin = {"source": name, "description": source.description, "file": source.path, "install": source.install}
    if source.package is not None:
        origin["package"] = source.package
        with contextlib.suppress(importlib.metadata.PackageNotFoundError):
            origin["package_version"] = importlib.metadata.version(source.package)
    return origin


def _stem(path: Path) -> str:
    return path.name.removesuffix(".gz").removesuffix(".nii")


def _unique_name(name: str, taken: Sequence[VolumeInput]) -> str:
    names = {item.name for item in taken}
    candidate, counter = name, 1
    while candidate in names:
        counter += 1
        candidate = f"{name}_{counter}"
    return candidate


def load_slices(path: Path, axis: str, shape: tuple[int, int]) -> np.ndarray:
    """``(S, H, W)`` float32 slices of a NIfTI volume along ``axis``, fitted to ``shape``, negatives clipped."""
    import nibabel as nib

    if axis not in AXES:
        raise DataError(f"--axis {axis!r}: expected one of {sorted(AXES)}")
    try:
        image = nib.load(path)  # the header only: the voxels are read below, once their size is checked
        declared = math.prod(image.shape) * image.get_data_dtype().itemsize
        check_declared(f"{path}: NIfTI header", image.shape, itemsize=4)
        check_stored(f"{path}: NIfTI voxels", declared, path.stat().st_size)
        data = nib.as_closest_canonical(image).get_fdata(dtype=np.float32)
    except (nib.filebasedimages.ImageFileError, OSError, EOFError, ValueError) as err:
        raise DataError(f"{path}: not a readable NIfTI volume ({err})") from None
    while data.ndim > 3 and data.shape[-1] == 1:
        data = data[..., 0]
    if data.ndim != 3:
        raise DataError(f"{path}: expected a 3-D volume, got shape {data.shape}")
    if not np.isfinite(data).all():
        raise DataError(f"{path}: volume holds NaN or Inf")
    # RAS: rotating a slice by 90 degrees puts anterior (or superior) at the top, as radiology displays it.
    slices = np.rot90(np.moveaxis(data, AXES[axis], 0), k=1, axes=(1, 2))
    return fit_images(np.clip(slices, 0.0, None), shape)


def select_slices(slices: np.ndarray, min_foreground: float, count: int | None) -> np.ndarray:
    """Indices of slices with enough foreground; ``count`` of them evenly spaced if given."""
    foreground = (slices > FOREGROUND_LEVEL * slices.max()).mean(axis=(1, 2))
    kept = np.flatnonzero(foreground >= min_foreground)
    if count is not None and count < kept.size:
        kept = kept[np.unique(np.round(np.linspace(0, kept.size - 1, count)).astype(int))]
    return kept


def write_volume(path: Path, targets: np.ndarray, masks: dict[int, np.ndarray], dtype: str) -> None:
    """Write one KD-MRI h5 file: ``volfs`` and, per acceleration, ``kspace_volus_{acc}`` and ``img_volus_{acc}``.

    Arrays are ``(H, W, S)`` (slices last). ``img_volus`` is the magnitude of the zero-filled image, as KD-MRI
    stores it; kdc computes the network's input from the k-space itself.
    """
    import h5py

    height, width = targets.shape[1:]
    options = {"compression": "gzip", "shuffle": True, "chunks": (height, width, 1)}
    with h5py.File(path, "w") as file:
        file.create_dataset("volfs", data=np.moveaxis(targets, 0, -1).astype(dtype), **options)
        for acc, mask in masks.items():
            kspace = fft2(targets) * mask
            file.create_dataset(f"kspace_volus_{acc}", data=np.moveaxis(kspace, 0, -1).astype(np.complex64), **options)
            zero_filled = np.abs(ifft2(kspace))
            file.create_dataset(f"img_volus_{acc}", data=np.moveaxis(zero_filled, 0, -1).astype(dtype), **options)


FASTMRI_HEADER = """<?xml version="1.0" encoding="utf-8"?>
<ismrmrdHeader xmlns="http://www.ismrm.org/ISMRMRD">
<experimentalConditions><H1resonanceFrequency_Hz>127000000</H1resonanceFrequency_Hz></experimentalConditions>
<encoding><encodedSpace><matrixSize><x>{height}</x><y>{width}</y><z>1</z></matrixSize>
<fieldOfView_mm><x>{height}</x><y>{width}</y><z>1</z></fieldOfView_mm></encodedSpace>
<reconSpace><matrixSize><x>{height}</x><y>{width}</y><z>1</z></matrixSize>
<fieldOfView_mm><x>{height}</x><y>{width}</y><z>1</z></fieldOfView_mm></reconSpace>
<encodingLimits><kspace_encoding_step_1><minimum>0</minimum><maximum>{last_line}</maximum><center>{centre_line}</center>
</kspace_encoding_step_1></encodingLimits>
<trajectory>cartesian</trajectory></encoding></ismrmrdHeader>"""


def write_fastmri_volume(path: Path, coil_images: np.ndarray, multicoil: bool) -> None:
    """Write one fully sampled fastMRI h5 file of ``(S, C, H, W)`` complex coil images: centred ``kspace``
    ((S, C, H, W), or (S, H, W) single-coil), the 320x320 centre of the root-sum-of-squares image as
    ``reconstruction_rss`` (``reconstruction_esc`` single-coil), an ``ismrmrd_header`` (1 mm pixels) and fastMRI's
    attributes."""
    import h5py

    height, width = coil_images.shape[-2:]
    rss = np.sqrt((np.abs(coil_images) ** 2).sum(axis=1))
    kspace = fft2c(coil_images).astype(np.complex64)
    with h5py.File(path, "w") as file:
        stored = kspace if multicoil else kspace[:, 0]
        file.create_dataset("kspace", data=stored, chunks=(1, *stored.shape[1:]))
        file["reconstruction_rss" if multicoil else "reconstruction_esc"] = centre_crop(rss, (320, 320))
        file["ismrmrd_header"] = FASTMRI_HEADER.format(height=height, width=width, last_line=width - 1,
                                                       centre_line=width // 2)
        file.attrs.update({"acquisition": "simulated", "max": float(rss.max()), "norm": float(np.linalg.norm(rss)),
                           "patient_id": path.stem})


def sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as file:
        for block in iter(lambda: file.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


@contextlib.contextmanager
def staging_dir(out: Path, overwrite: bool, reads: Sequence[Path] = ()) -> Iterator[Path]:
    """Yield an empty directory beside ``out``; it replaces ``out`` only if the block succeeds. ``--overwrite``
    replaces only a dataset kdc wrote, and never one holding ``reads`` (the inputs)."""
    if out.exists() and not (out.is_dir() and not any(out.iterdir())) and not overwrite:
        raise DataError(f"--out {out}: directory exists and is not empty; pass --overwrite or choose another")
    with atomic_directory(out, overwrite=overwrite, reads=reads) as staging:
        yield staging


def build_dataset(
    out: Path, inputs: Sequence[VolumeInput], settings: BuildSettings, overwrite: bool = False, progress: bool = True
) -> dict:
    """Write ``out/{train,val}/NAME.h5``, ``out/masks/mask_{acc}x.npy`` and ``out/dataset.json``; return the latter."""
    from rich.progress import Progress

    _check_settings(settings, len(inputs))
    masks = {} if settings.targets_only else {
        acc: cartesian_mask(settings.mask_kind, acc, settings.shape, settings.seed, settings.center_fraction)
        for acc in settings.accelerations
    }
    records = []
    reads = [item.path for item in inputs]
    with staging_dir(Path(out), overwrite, reads) as staging, Progress(disable=not progress, transient=True) as bar:
        task = bar.add_task("building", total=len(inputs))
        for index, item in enumerate(inputs):
            bar.update(task, description=f"{item.name}")
            split = "val" if index >= len(inputs) - settings.val_volumes else "train"
            axes = settings.axes(split)
            for axis in axes:
                name = item.name if len(axes) == 1 else f"{item.name}-{axis}"
                records.append(_build_volume(staging, split, item, name, axis, masks, settings, settings.seed + index))
            bar.advance(task)
        for acc, mask in masks.items():
            (staging / "masks").mkdir(exist_ok=True)
            np.save(staging / "masks" / f"mask_{acc}x.npy", mask)
        manifest = _manifest(records, masks, settings)
        write_json(staging / "dataset.json", manifest)
    return manifest


def _check_settings(settings: BuildSettings, volume_count: int) -> None:
    for acc in settings.accelerations:
        center_fraction_for(acc, settings.center_fraction)
    if settings.coils < 1:
        raise DataError(f"--coils {settings.coils}: expected 1 or more")
    if settings.mask_kind not in MASK_KINDS:
        raise DataError(f"--mask-kind {settings.mask_kind!r}: expected one of {MASK_KINDS}")
    if settings.dtype not in DTYPES:
        raise DataError(f"--dtype {settings.dtype!r}: expected one of {DTYPES}")
    if not 1 <= settings.val_volumes < volume_count:
        raise DataError(
            f"--val-volumes {settings.val_volumes}: expected 1 to {volume_count - 1} of the {volume_count} volume(s), "
            "so that train and val hold different volumes"
        )
    for option, axis in [("--axis", settings.axis), *(("--train-axis", axis) for axis in settings.train_axes or ())]:
        if axis not in AXES:
            raise DataError(f"{option} {axis!r}: expected one of {sorted(AXES)}")
    if min(settings.shape) < 8:
        raise DataError(f"image size {settings.shape}: expected at least 8x8")


def _build_volume(
    root: Path, split: str, item: VolumeInput, name: str, axis: str, masks: dict[int, np.ndarray],
    settings: BuildSettings, seed: int,
) -> dict:
    """Write ``root/split/name.h5``: ``item``'s slices along ``axis``; return its record of ``dataset.json``."""
    slices = load_slices(item.path, axis, settings.shape)
    if slices.max() <= 0:
        raise DataError(f"{item.path}: volume is all zero")
    kept = select_slices(slices, settings.min_foreground, settings.slices_per_volume)
    if kept.size == 0:
        raise DataError(f"{item.path}: no slice has {settings.min_foreground:.0%} foreground; lower --min-foreground")
    targets = slices[kept] / slices[kept].max()
    # Simulate k-space from what is stored, so that a float16 volfs and its k-space agree.
    targets = targets.astype(settings.dtype).astype(np.float32)
    file = root / split / f"{name}.h5"
    file.parent.mkdir(exist_ok=True)
    if settings.layout == "kd-mri":
        write_volume(file, targets, masks, settings.dtype)
    else:
        coil_images = complex_coil_images(targets, settings.coils, seed, phase=settings.complex_images)
        write_fastmri_volume(file, coil_images, multicoil=settings.coils > 1)
    return {
        "name": name,
        "split": split,
        "axis": axis,
        "file": file.relative_to(root).as_posix(),
        "origin": item.origin,
        "sha256": sha256(item.path),
        "slices": int(kept.size),
        "slice_indices": kept.tolist(),
    }


def _manifest(records: list[dict], masks: dict[int, np.ndarray], settings: BuildSettings) -> dict:
    return {
        "format": "kdc-dataset/1",
        "kdc_version": kdc.__version__,
        "layout": settings.layout,
        "complex": settings.complex_images,
        "coils": settings.coils,
        "center_fraction": settings.center_fraction,
        "image_size": list(settings.shape),
        "axis": settings.axis,
        "train_axes": list(settings.axes("train")),
        "min_foreground": settings.min_foreground,
        "foreground_level": FOREGROUND_LEVEL,
        "slices_per_volume": settings.slices_per_volume,
        "dtype": settings.dtype,
        "mask_kind": settings.mask_kind,
        "seed": settings.seed,
        "accelerations": list(settings.accelerations),
        "masks": {
            str(acc): {"file": f"masks/mask_{acc}x.npy", "sampled_fraction": float(mask.mean())}
            for acc, mask in masks.items()
        },
        "volumes": records,
        "slices": {split: sum(r["slices"] for r in records if r["split"] == split) for split in ("train", "val")},
    }
