"""Where the pixels of a volume are in the patient: the one geometry type readers produce and writers consume.

Coordinates are DICOM's patient system (LPS, millimetres), which ISMRMRD uses too. numpy only.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace

import numpy as np

Vector = tuple[float, float, float]
#: Orientation used when a file carries none: rows along patient x, columns along patient y (an axial slice).
DEFAULT_ROW_DIRECTION: Vector = (1.0, 0.0, 0.0)
DEFAULT_COLUMN_DIRECTION: Vector = (0.0, 1.0, 0.0)
NO_GEOMETRY = "no geometry in the input: 1 mm voxels, origin 0, axial orientation assumed"
#: Largest voxel size taken as real (mm): no scanner's voxel is 10 m; larger ones come from a broken header.
MAX_VOXEL_MM = 1e4


@dataclass(frozen=True)
class Geometry:
    """Voxel grid of an ``(S, H, W)`` volume in patient coordinates.

    ``spacing`` is ``(between rows, between columns, between slices)``: the pixel size along H, along W, and the
    slice distance. ``origin`` is the centre of the first pixel of the first slice. ``row_direction`` is the
    direction of increasing column index (along a row, W), ``column_direction`` that of increasing row index (H),
    as DICOM's ImageOrientationPatient; ``slice_direction`` that of increasing slice index (default: their cross
    product, the slice normal). ``note`` says what was assumed rather than read from the file.
    """

    spacing: Vector = (1.0, 1.0, 1.0)
    origin: Vector = (0.0, 0.0, 0.0)
    row_direction: Vector = DEFAULT_ROW_DIRECTION
    column_direction: Vector = DEFAULT_COLUMN_DIRECTION
    slice_direction: Vector | None = None
    slice_thickness: float | None = None
    note: str | None = NO_GEOMETRY

    @property
    def normal(self) -> np.ndarray:
        """Unit normal of the slices (row direction x column direction)."""
        return np.cross(self.row_direction, self.column_direction)

    @property
    def slice_axis(self) -> np.ndarray:
        """Unit vector from one slice to the next."""
        return self.normal if self.slice_direction is None else np.asarray(self.slice_direction, dtype=float)

    def slice_position(self, index: int) -> Vector:
        """Centre of the first pixel of slice ``index`` (DICOM ImagePositionPatient)."""
        return _vector(np.asarray(self.origin) + index * self.spacing[2] * self.slice_axis)

    def problem(self) -> str | None:
        """What makes the geometry impossible to write (DICOM PixelSpacing, NIfTI pixdim and affine), or None: voxel
        sizes must be positive, finite and at most :data:`MAX_VOXEL_MM`; position and directions finite, the
        directions of non-zero length."""
        sizes = {"PixelSpacing": self.spacing[:2], "SpacingBetweenSlices": self.spacing[2:]}
        if self.slice_thickness is not None:
            sizes["SliceThickness"] = (self.slice_thickness,)
        for name, values in sizes.items():
            if not all(0 < value <= MAX_VOXEL_MM for value in values):  # False for NaN too
                source = "from the file's field of view and matrix" if name == "PixelSpacing" else "as the file says"
                return f"{name} {_listed(values)} mm: expected voxel sizes > 0 and <= {MAX_VOXEL_MM:g} mm ({source})"
        directions = {"row direction": self.row_direction, "column direction": self.column_direction,
                      "slice direction": self.slice_direction or self.normal}
        for name, vector in {"ImagePositionPatient": self.origin, **directions}.items():
            if not np.isfinite(vector).all():
                return f"{name} {_listed(vector)}: expected finite values"
        for name, vector in directions.items():
            if not np.linalg.norm(vector) > 0:
                return f"{name} {_listed(vector)}: expected a direction, got length 0"
        return None

    def cropped(self, offset: tuple[int, int]) -> Geometry:
        """The geometry of the image cut out from row ``offset[0]``, column ``offset[1]`` on."""
        shift = (offset[0] * self.spacing[0] * np.asarray(self.column_direction)
                 + offset[1] * self.spacing[1] * np.asarray(self.row_direction))
        return replace(self, origin=_vector(np.asarray(self.origin) + shift))


def _listed(values: Sequence[float] | np.ndarray) -> str:
    return "[" + ", ".join(f"{float(value):g}" for value in values) + "]"


def _vector(values: Sequence[float] | np.ndarray) -> Vector:
    x, y, z = (float(v) for v in values)
    return (x, y, z)


def slab_geometry(shape: tuple[int, int], pixel_size: tuple[float, float], thickness: float,
                  centres: np.ndarray, row_direction: np.ndarray, column_direction: np.ndarray) -> Geometry:
    """Geometry of ``(H, W)`` slices whose image centres are ``centres`` ``(S, 3)`` (a centred FFT puts the centre at
    pixel ``(H // 2, W // 2)``), with unit ``row_direction`` (along W) and ``column_direction`` (along H).

    Slices must be evenly spaced along one line (a stack); one slice gets ``thickness`` as its slice distance.
    """
    height, width = shape
    rows, columns = np.asarray(row_direction, float), np.asarray(column_direction, float)
    origin = centres[0] - (width // 2) * pixel_size[1] * rows - (height // 2) * pixel_size[0] * columns
    steps = np.diff(centres, axis=0)
    if len(steps) == 0 or not np.linalg.norm(steps, axis=1).any():
        spacing, direction = thickness, None
    else:
        spacing = float(np.linalg.norm(steps[0]))
        direction = _vector(steps[0] / spacing)
    return Geometry((pixel_size[0], pixel_size[1], spacing), _vector(origin), _vector(rows), _vector(columns),
                    direction, thickness, None)
