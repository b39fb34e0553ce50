"""Undersampling masks: 1-D Cartesian (fastMRI's random and equispaced schemes, along either axis), 2-D random
(variable density) and KD-MRI ``.npy`` masks.

Masks are returned **uncentred** as float32 arrays of shape ``(H, W)``. A 1-D Cartesian mask samples whole lines
along one axis: columns (``axis=-1``, phase encodes along W, fastMRI's knee convention; every row the same) or rows
(``axis=-2``, phase encodes along H, as KD-MRI's brain and cardiac masks; every column the same).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Literal

import numpy as np

from kdc.errors import KdcError

MaskKind = Literal["random", "equispaced", "random2d"]
#: Fraction of fully sampled low-frequency lines per acceleration (fastMRI uses 0.08 at 4x and 0.04 at 8x).
CENTER_FRACTIONS: dict[int, float] = {4: 0.08, 5: 0.06, 8: 0.04}
#: 1-D Cartesian kinds (whole lines) and the 2-D kind (single k-space points).
LINE_KINDS: tuple[str, ...] = ("random", "equispaced")
MASK_KINDS: tuple[str, ...] = (*LINE_KINDS, "random2d")
#: A mask seed: an integer, or a sequence of them (e.g. ``(seed, epoch, slice)`` for a mask per training slice).
Seed = int | Sequence[int]


class MaskError(KdcError):
    """A mask that cannot be used: wrong shape, not binary, unknown acceleration."""


def center_fraction_for(acceleration: int, center_fraction: float | None = None) -> float:
    """``center_fraction`` if given (checked), else fastMRI's fraction for ``acceleration`` (4, 5 or 8)."""
    if center_fraction is not None:
        if not 0 < center_fraction < 1:
            raise MaskError(f"centre fraction {center_fraction}: expected a fraction between 0 and 1")
        return float(center_fraction)
    if acceleration not in CENTER_FRACTIONS:
        raise MaskError(
            f"unknown acceleration {acceleration}x: expected one of {sorted(CENTER_FRACTIONS)}, "
            "or give its centre fraction (--center-fraction, e.g. 0.07 at 6x)"
        )
    return CENTER_FRACTIONS[acceleration]


def cartesian_lines(
    kind: MaskKind, acceleration: int, width: int, seed: Seed = 0, center_fraction: float | None = None
) -> np.ndarray:
    """Centred 1-D line mask of length ``width`` (DC in the middle), as fastMRI's MaskFuncs draw it."""
    center_fraction = center_fraction_for(acceleration, center_fraction)
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
    seed: Seed = 0,
    center_fraction: float | None = None,
    axis: int = -1,
) -> np.ndarray:
    """Uncentred ``(H, W)`` mask: whole columns (``axis=-1``) or whole rows (``axis=-2``) for the line kinds, single
    points for ``random2d``."""
    if kind == "random2d":
        return random_2d_mask(acceleration, shape, seed, center_fraction)
    if axis not in (-1, -2):
        raise MaskError(f"mask axis {axis}: expected -1 (columns sampled) or -2 (rows sampled)")
    lines = np.fft.ifftshift(cartesian_lines(kind, acceleration, shape[axis], seed, center_fraction))
    return np.broadcast_to(lines if axis == -1 else lines[:, None], shape).astype(np.float32)


def random_2d_mask(
    acceleration: int, shape: tuple[int, int], seed: Seed = 0, center_fraction: float | None = None
) -> np.ndarray:
    """Uncentred ``(H, W)`` variable-density mask: a fully sampled centre square of ``center_fraction`` of each
    axis plus points drawn with a Gaussian density, about ``1/acceleration`` of k-space in all."""
    center_fraction = center_fraction_for(acceleration, center_fraction)
    rng = np.random.default_rng(seed)
    axes = [np.fft.fftshift(np.fft.fftfreq(size)) for size in shape]
    radius2 = (axes[0][:, None] / 0.5) ** 2 + (axes[1][None, :] / 0.5) ** 2
    centre = (np.abs(axes[0])[:, None] <= center_fraction / 2) & (np.abs(axes[1])[None, :] <= center_fraction / 2)
    density = np.exp(-radius2 / (2 * 0.3**2))
    wanted = max(shape[0] * shape[1] / acceleration - centre.sum(), 0)
    density *= wanted / max(density[~centre].sum(), 1e-12)
    mask = centre | (rng.uniform(size=shape) < np.clip(density, 0, 1))
    return np.fft.ifftshift(mask).astype(np.float32)


def mask_like(
    mask: np.ndarray, kind: MaskKind, acceleration: int, seed: Seed, center_fraction: float | None = None
) -> np.ndarray:
    """Another draw of ``mask``'s scheme with ``seed``: whole lines along the axis ``mask`` samples (``kind``
    random or equispaced, random for a 2-D kind), or 2-D random points for a 2-D mask; same shape, acceleration
    and centre fraction (fastMRI's per-slice masks)."""
    lines = sampled_lines(mask)
    if lines is None:
        return random_2d_mask(acceleration, mask.shape, seed, center_fraction)
    kind = kind if kind in LINE_KINDS else "random"
    return cartesian_mask(kind, acceleration, mask.shape, seed, center_fraction, axis=lines[0])


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


def mask_from_kspace(sampled: np.ndarray) -> np.ndarray:
    """The float32 ``(H, W)`` mask of k-space whose non-zero samples are ``sampled`` (boolean ``(H, W)``, e.g. any
    slice non-zero): whole columns or whole rows when the samples fill them (a sample that is exactly zero by
    chance must not drop a line), else the samples themselves (a 2-D mask)."""
    sampled = np.asarray(sampled, dtype=bool)
    columns = np.broadcast_to(sampled.any(axis=0), sampled.shape)
    rows = np.broadcast_to(sampled.any(axis=1)[:, None], sampled.shape)
    lines = min(columns, rows, key=np.count_nonzero)
    return (lines if np.count_nonzero(lines) <= 1.01 * np.count_nonzero(sampled) else sampled).astype(np.float32)


def sampled_columns(mask: np.ndarray) -> np.ndarray | None:
    """Indices of sampled columns if ``mask`` is 1-D Cartesian along W (all rows equal), else None."""
    mask = np.asarray(mask)
    if not np.all(mask == mask[:1]):
        return None
    return np.flatnonzero(mask[0])


def sampled_lines(mask: np.ndarray) -> tuple[int, np.ndarray] | None:
    """``(axis, indices)`` of a 1-D Cartesian ``(H, W)`` mask: axis -1 when it samples whole columns (fastMRI),
    -2 when it samples whole rows (KD-MRI's brain and cardiac masks); None for a 2-D mask. Columns win a tie."""
    mask = np.asarray(mask)
    for axis, view in ((-1, mask), (-2, mask.T)):
        lines = sampled_columns(view)
        if lines is not None:
            return axis, lines
    return None


def line_mask_shape(size: tuple[int, int], axis: int) -> tuple[int, int, int, int]:
    """Model-input shape of a 1-D mask along ``axis``: ``(1, 1, 1, W)`` for columns, ``(1, 1, H, 1)`` for rows."""
    shape = [1, 1, 1, 1]
    shape[axis] = size[axis]
    return tuple(shape)  # type: ignore[return-value]


def line_mask_input(mask: np.ndarray, size: tuple[int, int], axis: int, *, centred: bool = False) -> np.ndarray:
    """A 1-D mask along ``axis`` given as one line ``(n,)``, ``(H, W)`` or any shape that squeezes to either ->
    float32 model input of :func:`line_mask_shape`. ``centred=True`` takes a centred mask (DC in the middle)."""
    mask = np.asarray(mask)
    length = size[axis]
    lines, dimension = ("columns", "width") if axis == -1 else ("rows", "height")
    squeezed = mask.reshape([n for n in mask.shape if n != 1] or [1])
    if squeezed.shape == (length,):
        line = squeezed
    elif squeezed.shape == tuple(size):
        found = sampled_lines(squeezed)
        if found is None or found[0] != axis:
            raise MaskError(f"mask is not 1-D Cartesian along the {lines}: this model samples whole {lines}")
        line = np.moveaxis(squeezed, axis, -1)[0]
    else:
        raise MaskError(f"mask has shape {mask.shape}: expected one line of the image {dimension} {length} "
                        f"({length},) or the whole {tuple(size)} mask")
    if np.iscomplexobj(line) or not np.isin(line, (0, 1)).all():
        raise MaskError("mask must hold only 0 and 1")
    line = line.astype(np.float32)
    if centred:
        line = np.fft.ifftshift(line)
    return line.reshape(line_mask_shape(size, axis))


def acceleration_of(mask: np.ndarray) -> float:
    """Effective acceleration: total samples over sampled samples."""
    return float(mask.size / max(np.count_nonzero(mask), 1))
