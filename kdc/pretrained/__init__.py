"""Trained models shipped inside the package, and the one place their names are resolved (standard library only).

``pretrained:<run>`` names a run (what ``kdc evaluate`` takes); ``pretrained:<run>-<role>`` with role ``teacher``,
``student`` or ``kd`` names one of its models: its checkpoint for ``kdc export``, its ONNX export for the torch-free
runtime (``kdc bench``, ``kdc reconstruct``). Each run is a directory beside this file, listed in ``index.json``:
run.json, mask.npy, metrics.json, train.log, PROVENANCE.md and per model ``<stem>.pt`` and ``<stem>.onnx``.
``benchmarks/pretrained.py`` builds such a directory from a finished run (docs/pretrained.md).
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from kdc.errors import KdcError

PREFIX = "pretrained:"
DIRECTORY = Path(__file__).parent
INDEX = "index.json"
#: Role in a model name -> file stem of its checkpoint, its export and its row of metrics.json.
ROLES = {"teacher": "teacher", "student": "student", "kd": "kd_student"}
#: A shipped checkpoint is smaller than this (2 MB; the multi-coil teacher is 1.8 MB): the package stays small.
MAX_CHECKPOINT_BYTES = 2_000_000
#: What a command takes: the run directory, a checkpoint (a run resolves to its directory) or an ONNX export.
Artefact = Literal["run", "checkpoint", "onnx"]


@dataclass(frozen=True)
class Pretrained:
    """A shipped run, or one model of it (``role`` set)."""

    run: str
    role: str | None = None
    root: Path = DIRECTORY

    @property
    def name(self) -> str:
        return PREFIX + self.run + (f"-{self.role}" if self.role else "")

    @property
    def directory(self) -> Path:
        return self.root / self.run

    def file(self, suffix: str) -> Path:
        """``<stem><suffix>`` of this model in its run directory."""
        if self.role is None:
            raise KdcError(f"{self.name} is a run: name one of its models ({', '.join(model_names(self.run))})")
        return self.directory / f"{ROLES[self.role]}{suffix}"


def index(root: Path = DIRECTORY) -> dict[str, dict[str, Any]]:
    """``run -> {"description", "image_size"}`` of the shipped runs (empty when none ships)."""
    path = root / INDEX
    return json.loads(path.read_text()) if path.is_file() else {}


def model_names(run: str) -> list[str]:
    return [f"{PREFIX}{run}-{role}" for role in ROLES]


def known_names(root: Path = DIRECTORY) -> list[str]:
    """Every name that resolves: each run, then its models."""
    return [name for run in index(root) for name in (PREFIX + run, *model_names(run))]


def parse(name: str, root: Path = DIRECTORY) -> Pretrained:
    """The run or model ``pretrained:...`` names; an unknown name is a one-line error listing the known ones."""
    runs = index(root)
    wanted = name.removeprefix(PREFIX)
    for run in runs:
        if wanted == run:
            return Pretrained(run, root=root)
        for role in ROLES:
            if wanted == f"{run}-{role}":
                return Pretrained(run, role, root)
    known = ", ".join(known_names(root))
    raise KdcError(f"unknown pretrained model {name!r}: "
                   + (f"expected one of {known}" if known else "none ships with this install"))


def is_pretrained(source: str | os.PathLike[str]) -> bool:
    return os.fspath(source).startswith(PREFIX)


def resolve(source: str | os.PathLike[str], artefact: Artefact, root: Path = DIRECTORY) -> Path:
    """The file or directory a ``pretrained:`` name stands for in a command taking ``artefact``; any other source
    is returned as a path, unchanged."""
    if not is_pretrained(source):
        return Path(source)
    entry = parse(os.fspath(source), root)
    if artefact == "run":
        if entry.role is not None:
            raise KdcError(f"{entry.name} is one model; this command takes a run: {PREFIX}{entry.run}")
        path = entry.directory
    elif artefact == "checkpoint":
        path = entry.directory if entry.role is None else entry.file(".pt")
    else:
        path = entry.file(".onnx")
    if not path.exists():
        raise KdcError(f"{entry.name}: {path} is missing from this install (reinstall kdc)")
    return path


def model_name(source: str | os.PathLike[str]) -> str:
    """What a served or listed model is called: ``<run>-<role>`` for a pretrained name, else the file name without
    its suffix."""
    text = os.fspath(source)
    return text.removeprefix(PREFIX) if is_pretrained(text) else Path(text).stem


def listing(root: Path = DIRECTORY) -> list[dict[str, Any]]:
    """One row per shipped model: name, role, image size, acceleration, params, file sizes, validation PSNR/SSIM and
    the provenance note, read from each run's index entry and metrics.json."""
    rows = []
    for run, entry in index(root).items():
        metrics = json.loads((root / run / "metrics.json").read_text())
        for role, stem in ROLES.items():
            model = Pretrained(run, role, root)
            row = metrics["models"][stem]
            rows.append({
                "name": model.name, "run": run, "role": role, "image_size": entry["image_size"],
                "acceleration": metrics["acceleration"], "params": row["params"],
                "checkpoint_bytes": model.file(".pt").stat().st_size, "onnx_bytes": model.file(".onnx").stat().st_size,
                "psnr": row["psnr"]["mean"], "ssim": row["ssim"]["mean"],
                "provenance": str(model.directory / "PROVENANCE.md"), "description": entry["description"],
            })
    return rows
