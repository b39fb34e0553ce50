"""1-D Cartesian undersampling masks (fastMRI's random and equispaced schemes) and KD-MRI ``.npy`` masks.

Masks are returned **uncentred** as float32 arrays of shape ``(H, W)`` with the phase-encode direction along W:
every row is the same, a column is either fully sampled or not.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import numpy as np

from kdc.errors import KdcError

MaskKind = Literal["random", "equispaced"]
#: Fraction of fully sampled low-frequency lines per acceleration (fastMRI uses 0.08 at 4x and 0.04 at 8x).
CENTER_FRACTIONS: dict[int, float] = {4: 0.08, 5: 0.06, 8: 0.04}
MASK_KINDS: tuple[str, ...] = ("random", "equispaced")


class MaskError(KdcError):
    """A mask that cannot be used: wrong shape, not binary, unknown acceleration."""


def center_fraction_for(acceleration: int) -> float:
    if acceleration not in CENTER_FRACTIONS:
        raise MaskError(
            f"unknown acceleration {acceleration}x: expected one of {sorted(CENTER_FRACTIONS)}"
        )
    return CENTER_FRACTIONS[acceleration]


def cartesian_lines(
    kind: MaskKind, acceleration: int, width: int, seed: int = 0, center_fraction: float | None = None
) -> np.ndarray:
    """Centred 1-D line mask of length ``width`` (DC in the middle), as fastMRI's MaskFuncs draw it."""
    if center_fraction is None:
        center_fraction = center_fraction_for(acceleration)
    if acceleration < 1:
        raise MaskError(f"acceleration must be >= 1, got {acceleration}")
    rng = np.random.default_rng(seed)
    num_low = round(width * center_fraction)
    lines = np.zeros(width, dtype=bool)
    if kind == "random":
        prob = (width / acceleration - num_low) / (width - num_low)
        lines = rng.uniform(size=width) < prob
    elif kind == "equispaced":
        adjusted = acceleration * (num_low - width) / (num_low * acceleration - width)
        offset = int(rng.integers(0, max(round(adjusted), 1)))
        picks = np.round(np.arange(offset, width - 1, adjusted)).astype(int)
        lines[picks] = True
    else:
        raise MaskError(f"unknown mask kind {kind!r}: expected one of {MASK_KINDS}")
    pad = (width - num_low + 1) // 2
    lines[pad : pad + num_low] = True
    return lines.astype(np.float32)


def cartesian_mask(
    kind: MaskKind,
    acceleration: int,
    shape: tuple[int, int],
    seed: int = 0,
    center_fraction: float | None = None,
) -> np.ndarray:
    """Uncentred ``(H, W)`` mask sampling whole columns (phase encodes along W)."""
    height, width = shape
    lines = np.fft.ifftshift(cartesian_lines(kind, acceleration, width, seed, center_fraction))
    return np.broadcast_to(lines, (height, width)).copy()


def validate_mask(mask: np.ndarray, shape: tuple[int, int] | None = None, source: str = "mask") -> np.ndarray:
    """Check a mask is 2-D, binary and (if given) of the image's shape; return it as float32."""
    mask = np.asarray(mask)
    if mask.ndim != 2:
        raise MaskError(f"{source}: expected a 2-D (H, W) mask, got shape {mask.shape}")
    if shape is not None and mask.shape != tuple(shape):
        raise MaskError(f"{source}: mask shape {mask.shape} does not match image shape {tuple(shape)}")
    check_sampling(mask, source)
    return mask.astype(np.float32)


def check_sampling(mask: np.ndarray, source: str = "mask") -> None:
    """Raise :class:`MaskError` unless ``mask`` (any shape) holds only 0 and 1 and samples something."""
    if np.iscomplexobj(mask) or not np.all(np.isin(mask, (0, 1))):
        raise MaskError(f"{source}: mask must hold only 0 and 1")
    if not np.any(mask):
        raise MaskError(f"{source}: mask samples nothing")


def load_mask(path: str | Path, shape: tuple[int, int] | None = None) -> np.ndarray:
    """Load a KD-MRI ``.npy`` mask (uncentred, ``(H, W)``) without unpickling anything."""
    path = Path(path)
    if not path.is_file():
        raise MaskError(f"{path}: mask file not found" + (" (it is a directory)" if path.is_dir() else ""))
    try:
        mask = np.load(path, allow_pickle=False)
    except OSError as err:
        raise MaskError(f"{path}: cannot read the mask ({err.strerror or err})") from None
    except (ValueError, EOFError) as err:
        raise MaskError(f"{path}: not a numeric .npy array ({err})") from None
    return validate_mask(mask, shape, source=str(path))


def sampled_columns(mask: np.ndarray) -> np.ndarray | None:
    """Indices of sampled columns if ``mask`` is 1-D Cartesian along W (all rows equal), else None."""
    mask = np.asarray(mask)
    if not np.all(mask == mask[:1]):
        return None
    return np.flatnonzero(mask[0])


def acceleration_of(mask: np.ndarray) -> float:
    """Effective acceleration: total samples over sampled samples."""
    return float(mask.size / max(np.count_nonzero(mask), 1))
