"""Classical reconstructions scored next to the networks: one registered class per file in this package.

A baseline reconstructs one slice from kdc's undersampled k-space (complex ``(H, W)``, uncentred, orthonormal FFT,
see docs/conventions.md) and its 0/1 ``(H, W)`` mask, with numpy and whatever outside tool it wraps; it needs no
training, only settings (e.g. a regularisation weight), which :meth:`Baseline.settings` reports for the tables.
``kdc evaluate --cs`` and ``benchmarks/quality.py --cs`` score the registered ``cs`` baseline
(:mod:`kdc.compress.baselines.bart`). A ``multicoil`` baseline (``sense-cs``) takes every coil instead: ``(C, H, W)``
k-space read from the dataset's files (:func:`multicoil_inputs`), scored against the root sum of squares of the
fully sampled coils, fastMRI's target.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator, Sequence
from typing import TYPE_CHECKING, Any, ClassVar, TypeVar

import numpy as np

from kdc.errors import KdcError
from kdc.mri.coils import root_sum_of_squares
from kdc.mri.fft import ifft2
from kdc.mri.layout import centre_crop

if TYPE_CHECKING:
    from kdc.data.slices import SliceDataset


class Baseline:
    """A reconstruction without a network; ``row`` names it in the tables."""

    row: ClassVar[str]
    #: Whether :meth:`reconstruct` takes every coil, ``(C, H, W)`` k-space, rather than kdc's single (virtual) coil.
    multicoil: ClassVar[bool] = False

    @classmethod
    def missing(cls) -> str | None:
        """Why the baseline cannot run on this machine (e.g. a tool that is not installed), or ``None``."""
        return None

    def settings(self) -> dict[str, Any]:
        """What the table must record to reproduce the row (regularisation, iterations, ...)."""
        return {}

    def reconstruct(self, kspace: np.ndarray, mask: np.ndarray) -> np.ndarray:
        """Real ``(H, W)`` image from undersampled uncentred complex k-space, ``(H, W)`` (``(C, H, W)`` for a
        ``multicoil`` baseline), and its ``(H, W)`` mask."""
        raise NotImplementedError


BASELINES: dict[str, type[Baseline]] = {}
BaselineClass = TypeVar("BaselineClass", bound=type[Baseline])


def register_baseline(name: str) -> Callable[[BaselineClass], BaselineClass]:
    """Class decorator: make a classical reconstruction selectable by ``name``."""

    def register(cls: BaselineClass) -> BaselineClass:
        BASELINES[name] = cls
        return cls

    return register


def get_baseline(name: str) -> type[Baseline]:
    if name not in BASELINES:
        raise KdcError(f"unknown baseline {name!r}: expected one of {sorted(BASELINES)}")
    return BASELINES[name]


def slice_inputs(item: dict) -> tuple[np.ndarray, np.ndarray]:
    """A dataset item (:class:`kdc.data.slices.SliceDataset`) as complex ``(H, W)`` k-space and ``(H, W)`` mask."""
    kspace = np.asarray(item["kspace"])
    complex_kspace = kspace[0].astype(np.complex64) + 1j * kspace[1]
    return complex_kspace, np.broadcast_to(np.asarray(item["mask"])[0], complex_kspace.shape)


def multicoil_inputs(dataset: SliceDataset, index: int) -> tuple[str, np.ndarray, np.ndarray, np.ndarray]:
    """Slice ``index`` of a :class:`kdc.data.slices.SliceDataset` with every coil: ``(volume, target, kspace, mask)``,
    ``kspace`` the undersampled uncentred ``(C, H, W)`` k-space on the item's scale and ``target`` the root sum of
    squares of the fully sampled coils, cropped as the item's target."""
    from kdc.data.formats import read_slices

    item = dataset[index]
    volume = next(v for v, path in enumerate(dataset.files) if path.stem == item["volume"])
    raw = read_slices(dataset.files[volume], slice(item["slice"], item["slice"] + 1))
    kspace = raw.uncentred()[0] / np.float32(dataset.stats[volume].scale)
    if kspace.shape[-2:] != dataset.mask.shape:
        raise KdcError(f"{dataset.files[volume]}: slice {kspace.shape[-2:]} is not the mask's {dataset.mask.shape}: "
                       "multi-coil baselines need slices of the training size")
    target = centre_crop(root_sum_of_squares(ifft2(kspace)), item["target"].shape[-2:])
    return item["volume"], target, kspace * dataset.mask, dataset.mask


def reconstruct_slices(
    baseline: Baseline, dataset: Sequence[dict], indices: Sequence[int] | None = None
) -> Iterator[tuple[str, np.ndarray, np.ndarray, float]]:
    """Yield ``(volume, target, reconstruction, seconds)`` for the chosen slices (default: all) of ``dataset``."""
    for index in range(len(dataset)) if indices is None else indices:
        if baseline.multicoil:
            volume, target, kspace, mask = multicoil_inputs(dataset, index)
        else:
            item = dataset[index]
            volume, target, (kspace, mask) = item["volume"], np.asarray(item["target"])[0], slice_inputs(item)
        started = time.perf_counter()
        image = baseline.reconstruct(kspace, mask)
        # A baseline reconstructs the whole field of view; the target may be cropped (``--crop``).
        yield volume, target, centre_crop(image, target.shape[-2:]), time.perf_counter() - started


def score_baseline(baseline: Baseline, dataset: Sequence[dict], indices: Sequence[int] | None = None) -> dict:
    """The baseline's table row: metrics as :func:`kdc.compress.evaluate.score`, its settings and seconds per slice."""
    from kdc.compress.evaluate import score

    seconds: list[float] = []

    def timed() -> Iterator[tuple[str, np.ndarray, np.ndarray]]:
        for volume, target, image, elapsed in reconstruct_slices(baseline, dataset, indices):
            seconds.append(elapsed)
            yield volume, target, image

    row = score(timed())
    return {**row, "params": 0, "settings": baseline.settings(), "seconds_per_slice": float(np.mean(seconds))}


# Importing the modules registers their baselines.
from kdc.compress.baselines import bart  # noqa: E402,F401
