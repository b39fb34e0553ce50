"""Output writers of ``kdc reconstruct``: one registered writer per format, each in its own module.

A writer takes one reconstructed :class:`OutputVolume` and a directory and writes its files there, each to a
temporary name first. The caller builds the whole output directory under a temporary name and renames it at the
end (:func:`kdc._io.atomic_directory`), so an interrupted run leaves nothing half-written.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from kdc._io import NAME_MAX, fit_name
from kdc.errors import KdcError
from kdc.mri.geometry import Geometry

#: Bytes the stem of an output file may have: a file name with the longest suffix (``.nii.gz``) must fit.
STEM_MAX = NAME_MAX - len(".nii.gz")


@dataclass(frozen=True)
class Provenance:
    """What made the images: written into DICOM series descriptions, NIfTI descriptions and h5 attributes."""

    model: str
    role: str
    contract_version: int
    acceleration: float | None
    mask: str
    source: str
    backend: str = ""

    def describe(self) -> str:
        """One line such as ``kdc student kd_student contract v1 4x random``."""
        acceleration = f"{self.acceleration:g}x" if self.acceleration else "fully sampled"
        return f"kdc {self.model} {self.role} contract v{self.contract_version} {acceleration} {self.mask}"


@dataclass(frozen=True)
class OutputVolume:
    """One reconstructed volume: ``image`` ``(S, H, W)`` float32 magnitude at the scanner's scale."""

    name: str
    image: np.ndarray
    geometry: Geometry
    provenance: Provenance


@dataclass(frozen=True)
class WriteOptions:
    """Settings of the writers that have any: ``dicom_bits`` is 12 or 16 (stored bits of the DICOM pixels)."""

    dicom_bits: int = 12


@dataclass(frozen=True)
class Writer:
    """A registered format: ``write(volume, directory, options)`` returns the paths it wrote; ``modules`` are the
    optional packages it needs (checked before any work starts)."""

    name: str
    write: Callable[[OutputVolume, Path, WriteOptions], list[Path]]
    modules: tuple[str, ...]


WRITERS: dict[str, Writer] = {}


class OutputError(KdcError):
    """An output that cannot be written: unknown format, existing directory, full disk."""


def file_stem(name: str) -> str:
    """The stem of a volume's output files: ``name``, cut short with a hash of it where the name would not fit."""
    return fit_name(name, STEM_MAX)


def placed(volume: OutputVolume) -> Geometry:
    """The geometry of ``volume``, else :class:`OutputError` naming its source and the field that is impossible."""
    problem = volume.geometry.problem()
    if problem:
        raise OutputError(f"{volume.provenance.source}: {problem}; nothing written")
    return volume.geometry


def register_writer(name: str, write: Callable[[OutputVolume, Path, WriteOptions], list[Path]],
                    modules: tuple[str, ...]) -> None:
    if name in WRITERS:
        raise ValueError(f"writer {name!r} is registered twice")
    WRITERS[name] = Writer(name, write, modules)


def writers_for(names: list[str]) -> list[Writer]:
    """The writers of ``names``, else :class:`OutputError` listing the formats known; their packages must import."""
    unknown = [name for name in names if name not in WRITERS]
    if unknown or not names:
        raise OutputError(f"unknown output format {', '.join(unknown) or '(none)'}: expected some of {list(WRITERS)}")
    chosen = [WRITERS[name] for name in dict.fromkeys(names)]
    for writer in chosen:
        for module in writer.modules:
            if importlib.util.find_spec(module) is None:
                raise OutputError(f"--format {writer.name} needs {module}: pip install 'kdc[reconstruct]'")
    return chosen


# The built-in formats register themselves; imported last because they import the names above.
from kdc.runtime.writers import dicom, fastmri_h5, nifti  # noqa: E402,F401  (registration)
