"""Teacher cache: the AT and KD stages read the teacher's outputs from a file instead of running it every step.

With a fixed mask and no augmentation the teacher's outputs are a function of the slice. What a stage's loss reads
of them, its ``teacher_summary`` (:mod:`kdc.compress.losses`), is computed once per training slice and stored in
``RUN/cache/teacher-<method>-<key>.npy``: a structured array, one row per slice (fields ``image``, ``f0``, ``f1``...),
written atomically and memory-mapped when read. ``key`` is a SHA-256 of the teacher weights, the dataset (files,
slice indices, acceleration, mask) and the method, so a change to any of them builds a new file (the stale one is
removed). The live teacher runs instead when the cache is off, when the loss has no ``teacher_summary`` or when the
training set's items do not depend on their index alone (not a :class:`SliceDataset`, or one with ``--augment`` or
``--random-masks``).
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader

from kdc._io import atomic_path
from kdc.compress import distributed
from kdc.compress.losses import Outputs
from kdc.data.slices import SliceDataset

FORMAT = "kdc-teacher-cache/1"
#: ``extract(model, batch) -> Outputs``: the reconstruction and the paired features of a network.
Extract = Callable[[nn.Module, dict], Outputs]
log = logging.getLogger("kdc")


@dataclass
class TeacherTargets:
    """The training set of a stage and how its steps get the teacher outputs their loss compares against."""

    train_set: Sequence[dict]
    outputs: Callable[[dict], Outputs]
    cache: Path | None  # None: the live teacher runs every step


class CachedDataset:
    """``dataset`` whose items also carry their row of the cache under ``"teacher"``."""

    def __init__(self, dataset: Sequence[dict], path: Path) -> None:
        self.dataset = dataset
        self.rows = np.load(path, mmap_mode="r")

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, index: int) -> dict[str, Any]:
        row = self.rows[index]
        image, *features = (np.array(row[name]) for name in row.dtype.names)
        return {**self.dataset[index], "teacher": {"image": image, "features": features}}


def cache_key(teacher: nn.Module, dataset: SliceDataset, method: str) -> str:
    """SHA-256 of the teacher weights, the dataset's fingerprint, the method and the cache format."""
    digest = hashlib.sha256(f"{FORMAT}|{method}|{dataset.fingerprint()}\n".encode())
    for name, tensor in sorted(teacher.state_dict().items()):
        weights = tensor.detach().cpu().contiguous()
        digest.update(f"{name}|{weights.dtype}|{tuple(weights.shape)}\n".encode())
        digest.update(weights.numpy().tobytes())
    return digest.hexdigest()


def teacher_targets(
    teacher: nn.Module,
    loss: nn.Module,
    method: str,
    train_set: Sequence[dict],
    extract: Extract,
    cache_dir: Path | None,
    device: str,
) -> TeacherTargets:
    """Cached teacher summaries for ``loss`` when possible (see the module docstring), else the live teacher."""
    summarise = getattr(loss, "teacher_summary", None)
    if cache_dir is None or summarise is None or not (isinstance(train_set, SliceDataset) and train_set.deterministic):

        def live(batch: dict) -> Outputs:
            with torch.no_grad():
                return extract(teacher, batch)

        return TeacherTargets(train_set, live, None)

    path = cache_dir / f"teacher-{method}-{cache_key(teacher, train_set, method)[:16]}.npy"
    if distributed.is_main() and not path.exists():
        log.info("teacher cache: computing %s for %d slices", path.name, len(train_set))
        build(path, teacher, summarise, extract, train_set, device)
        for stale in cache_dir.glob(f"teacher-{method}-*.npy"):
            if stale != path:
                stale.unlink()
    distributed.barrier()

    def cached(batch: dict) -> Outputs:
        stored = batch["teacher"]
        return Outputs(stored["image"].to(device), [f.to(device) for f in stored["features"]])

    return TeacherTargets(CachedDataset(train_set, path), cached, path)


def build(
    path: Path,
    teacher: nn.Module,
    summarise: Callable[[Outputs], Outputs],
    extract: Extract,
    dataset: Sequence[dict],
    device: str,
    batch_size: int = 8,
) -> None:
    """Write the summary of the teacher's outputs for every item of ``dataset`` to ``path`` (atomically)."""
    rows = None
    start = 0
    with atomic_path(path) as tmp:
        for batch in DataLoader(dataset, batch_size=batch_size, shuffle=False):
            inputs = {k: v.to(device) for k, v in batch.items() if isinstance(v, torch.Tensor)}  # extract picks
            with torch.no_grad():
                summary = summarise(extract(teacher, inputs))
            fields = {"image": summary.image, **{f"f{i}": f for i, f in enumerate(summary.features)}}
            if rows is None:
                dtype = np.dtype([(name, np.float32, tuple(t.shape[1:])) for name, t in fields.items()])
                rows = np.lib.format.open_memmap(tmp, mode="w+", dtype=dtype, shape=(len(dataset),))
            stop = start + len(summary.image)
            for name, tensor in fields.items():
                rows[name][start:stop] = tensor.float().cpu().numpy()
            start = stop
        if rows is not None:
            rows.flush()
            del rows
