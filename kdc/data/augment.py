"""Training-time augmentation: named random transforms of a slice's fully sampled image (``--augment``).

A transform changes the image only; :class:`kdc.data.slices.SliceDataset` then simulates the slice's k-space from
the transformed image and undersamples it with the dataset's one fixed mask, as KD-MRI builds its data. The
aliasing therefore keeps the mask's direction while the anatomy moves under it: the network sees more varied
images, never a different acquisition. Every draw comes from ``(seed, epoch, index)``, so an epoch's items are the
same in any DataLoader worker and after ``--resume``.

Example::

    >>> import numpy as np
    >>> augment = Augmenter(("flip",), seed=0)
    >>> image = np.arange(6.0).reshape(2, 3)
    >>> sorted({augment(image, index).tobytes() for index in range(20)}) == sorted(
    ...     {np.flip(image, axes).tobytes() for axes in [(), (0,), (1,), (0, 1)]})
    True
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from kdc.data.errors import DataError

#: ``transform(image, rng) -> image`` of the same shape, for a real or complex ``(H, W)`` image.
Transform = Callable[[np.ndarray, np.random.Generator], np.ndarray]


@dataclass(frozen=True)
class Augmentation:
    transform: Transform
    square: bool = False  # it swaps height and width, so it needs square images


AUGMENTATIONS: dict[str, Augmentation] = {}


def register(name: str, square: bool = False) -> Callable[[Transform], Transform]:
    """Register a transform as the augmentation ``name``."""

    def add(transform: Transform) -> Transform:
        AUGMENTATIONS[name] = Augmentation(transform, square)
        return transform

    return add


@register("flip")
def random_flips(image: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Flip up-down and left-right, each with probability 1/2."""
    axes = tuple(axis for axis in (0, 1) if rng.random() < 0.5)
    return np.flip(image, axes) if axes else image


@register("rot90", square=True)
def random_quarter_turns(image: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Rotate by 0, 90, 180 or 270 degrees, equally likely (square images)."""
    return np.rot90(image, k=int(rng.integers(4)))


@register("scale")
def random_intensity_scale(image: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Multiply the image by a factor drawn uniformly from [0.5, 1]: scaling each volume to a maximum of 1 puts
    its tissue at a fraction of that maximum set by its few brightest voxels (fat, vessels), which differs between
    scanners and subjects."""
    return image * np.float32(rng.uniform(0.5, 1.0))


class Augmenter:
    """The named transforms, applied in order to each item with draws seeded by ``(seed, epoch, index)``."""

    def __init__(self, names: Sequence[str], seed: int = 0) -> None:
        unknown = [name for name in names if name not in AUGMENTATIONS]
        if unknown:
            raise DataError(f"--augment {unknown[0]!r}: expected one of {sorted(AUGMENTATIONS)}")
        self.names = tuple(dict.fromkeys(names))
        self.seed = seed
        self.epoch = 0

    def check_shape(self, shape: tuple[int, int]) -> None:
        """Refuse transforms the image shape does not allow, in one line."""
        for name in self.names:
            if AUGMENTATIONS[name].square and shape[0] != shape[1]:
                raise DataError(f"--augment {name}: needs square images, the data has {shape[0]}x{shape[1]}")

    def __call__(self, image: np.ndarray, index: int) -> np.ndarray:
        rng = np.random.default_rng((self.seed, self.epoch, index))
        for name in self.names:
            image = AUGMENTATIONS[name].transform(image, rng)
        return np.ascontiguousarray(image)
