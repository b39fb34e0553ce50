"""Training-time augmentation: named random transforms of a slice (``--augment``) and per-slice masks.

Image transforms (flip, rot90, scale, gamma, bias) change the slice's fully sampled image, which stays the target;
:class:`kdc.data.slices.SliceDataset` then simulates the slice's k-space from the transformed image. K-space
transforms (noise) change that simulated k-space only, so the network sees a noisy acquisition and is still scored
against the clean image. The k-space is undersampled with the dataset's one fixed mask (KD-MRI's way: the aliasing
keeps the mask's direction while the anatomy moves under it), or with ``random_masks`` with a new mask for every
slice and epoch (fastMRI's way: one model for the masks a scanner draws). Every draw comes from
``(seed, epoch, index)``, so an epoch's items are the same in any DataLoader worker and after ``--resume``.

Example::

    >>> import numpy as np
    >>> augment = Augmenter(("flip",), seed=0)
    >>> image = np.arange(6.0).reshape(2, 3)
    >>> sorted({augment(image, index)[0].tobytes() for index in range(20)}) == sorted(
    ...     {np.flip(image, axes).tobytes() for axes in [(), (0,), (1,), (0, 1)]})
    True
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from kdc.data.errors import DataError
from kdc.mri.fft import fft2

#: ``transform(array, rng) -> array`` of the same shape: a real or complex ``(H, W)`` image, or for a k-space
#: transform the slice's uncentred fully sampled k-space.
Transform = Callable[[np.ndarray, np.random.Generator], np.ndarray]
#: Signal-to-noise ratios ``noise`` draws from, uniformly in dB: the RMS of the image over the RMS of the complex
#: noise per pixel (orthonormal FFT: the same per k-space sample). 20 dB is a noisy single acquisition, 40 dB
#: nearly clean.
NOISE_SNR_DB = (20.0, 40.0)
#: ``gamma`` draws its exponent log-uniformly from this range.
GAMMA_RANGE = (0.7, 1.5)
#: ``bias`` draws each coefficient of its field's exponent (x, y, x², y², xy on [-1, 1]²) uniformly from ±this.
BIAS_STRENGTH = 0.15
#: Stream of the per-slice mask draws, apart from the transforms' draws of the same ``(seed, epoch, index)``.
MASK_STREAM = 1


@dataclass(frozen=True)
class Augmentation:
    transform: Transform
    square: bool = False  # it swaps height and width, so it needs square images
    kspace: bool = False  # it transforms the simulated k-space (after every image transform), not the image


AUGMENTATIONS: dict[str, Augmentation] = {}


def register(name: str, square: bool = False, kspace: bool = False) -> Callable[[Transform], Transform]:
    """Register a transform as the augmentation ``name``."""

    def add(transform: Transform) -> Transform:
        AUGMENTATIONS[name] = Augmentation(transform, square, kspace)
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


@register("gamma")
def random_gamma(image: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Raise the magnitude to a power drawn log-uniformly from :data:`GAMMA_RANGE` (the phase is kept): the
    contrast between tissues differs between sequences and scanners. On the normalised image (maximum 1) the
    maximum stays 1."""
    gamma = np.exp(rng.uniform(*np.log(GAMMA_RANGE)))
    magnitude = np.abs(image)
    factor = np.power(magnitude, gamma - 1, out=np.zeros_like(magnitude), where=magnitude > 0)
    return (image * factor).astype(image.dtype)


@register("bias")
def random_bias_field(image: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Multiply the image by a smooth field ``exp(a x + b y + c x² + d y² + e xy)`` over ``[-1, 1]²``, each
    coefficient uniform in ±:data:`BIAS_STRENGTH`: a single acquisition's receive-coil shading, which averaged
    templates do not have (up to about ±30 % across the image at most)."""
    y, x = np.meshgrid(*(np.linspace(-1, 1, size) for size in image.shape), indexing="ij")
    coefficients = rng.uniform(-BIAS_STRENGTH, BIAS_STRENGTH, size=5)
    field = np.exp(sum(c * term for c, term in zip(coefficients, (x, y, x * x, y * y, x * y))))
    return (image * field).astype(image.dtype)


@register("noise", kspace=True)
def random_kspace_noise(kspace: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Add white complex Gaussian noise at an SNR drawn uniformly (in dB) from :data:`NOISE_SNR_DB`: a single
    acquisition's thermal noise, which averaged templates do not have. Only the network's input gets it; the
    target stays the clean image."""
    snr_db = rng.uniform(*NOISE_SNR_DB)
    sigma = np.sqrt(np.mean(np.abs(kspace) ** 2)) / 10 ** (snr_db / 20)  # Parseval: the image's RMS
    noise = rng.standard_normal((2, *kspace.shape)) * (sigma / np.sqrt(2))
    return (kspace + (noise[0] + 1j * noise[1])).astype(np.result_type(kspace.dtype, np.complex64))


class Augmenter:
    """The named transforms, applied to each item with draws seeded by ``(seed, epoch, index)``: the image
    transforms in the given order, then the k-space transforms; ``random_masks`` also draws each item's mask."""

    def __init__(self, names: Sequence[str], seed: int = 0, random_masks: bool = False) -> None:
        unknown = [name for name in names if name not in AUGMENTATIONS]
        if unknown:
            raise DataError(f"--augment {unknown[0]!r}: expected one of {sorted(AUGMENTATIONS)}")
        self.names = tuple(dict.fromkeys(names))
        self.seed = seed
        self.random_masks = random_masks
        self.epoch = 0

    def check_shape(self, shape: tuple[int, int]) -> None:
        """Refuse transforms the image shape does not allow, in one line."""
        for name in self.names:
            if AUGMENTATIONS[name].square and shape[0] != shape[1]:
                raise DataError(f"--augment {name}: needs square images, the data has {shape[0]}x{shape[1]}")

    def __call__(self, image: np.ndarray, index: int) -> tuple[np.ndarray, np.ndarray]:
        """Item ``index``'s transformed image (the target) and the uncentred fully sampled k-space the network's
        input is undersampled from: simulated from that image, then k-space transformed."""
        rng = np.random.default_rng((self.seed, self.epoch, index))
        chosen = [AUGMENTATIONS[name] for name in self.names]
        for augmentation in chosen:
            if not augmentation.kspace:
                image = augmentation.transform(image, rng)
        image = np.ascontiguousarray(image)
        kspace = fft2(image)
        for augmentation in chosen:
            if augmentation.kspace:
                kspace = augmentation.transform(kspace, rng)
        return image, kspace

    def mask_seed(self, index: int) -> tuple[int, ...]:
        """Seed of item ``index``'s mask this epoch (``random_masks``)."""
        return (self.seed, self.epoch, index, MASK_STREAM)


def augmenter_of(names: str, seed: int = 0, random_masks: bool = False) -> Augmenter | None:
    """The :class:`Augmenter` of a comma-separated ``--augment`` value (and ``--random-masks``), or None for none."""
    listed = [name.strip() for name in names.split(",") if name.strip()]
    return Augmenter(listed, seed, random_masks) if listed or random_masks else None
