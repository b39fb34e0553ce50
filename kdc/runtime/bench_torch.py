"""The ``torch`` runtime of ``kdc bench``: a kdc checkpoint in PyTorch eager mode, the baseline users run today.

The only module of :mod:`kdc.runtime` that imports torch and kdc.models; :mod:`kdc.runtime.bench` imports it only
when ``--runtime torch`` is asked for.
"""

from __future__ import annotations

from pathlib import Path

import torch

from kdc.models import load_checkpoint
from kdc.runtime.bench import Runner
from kdc.runtime.tensors import RuntimeModelError, example_kspace, example_mask


def open_checkpoint(path: Path, *, threads: int | None, batch: int, size: tuple[int, int] | None) -> Runner:
    """Load a ``.pt`` checkpoint and bind random undersampled k-space at ``size`` (default: its trained size)."""
    model, meta = load_checkpoint(path)
    size = size or meta.get("image_size")
    if not size:
        raise RuntimeModelError(f"{path}: checkpoint has no image size in its meta; pass --size H W")
    if threads:
        torch.set_num_threads(threads)
    mask = example_mask(int(size[1]), float(meta.get("acceleration") or 1))
    kspace = torch.from_numpy(example_kspace(batch, (int(size[0]), int(size[1])), mask))
    mask_tensor = torch.from_numpy(mask)

    def call() -> torch.Tensor:
        with torch.inference_mode():
            return model(kspace, mask_tensor)

    backend = f"torch {torch.__version__.split('+')[0]} eager CPU f32"
    return Runner(str(meta.get("role", "unknown")), backend, torch.get_num_threads(), tuple(kspace.shape), call)
