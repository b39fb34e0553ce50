"""The ``torch`` runtime of ``kdc bench``: a kdc checkpoint in PyTorch eager mode, the baseline users run today.

The only module of :mod:`kdc.runtime` that imports torch and kdc.models; :mod:`kdc.runtime.bench` imports it only
when ``--runtime torch`` is asked for.
"""

from __future__ import annotations

from pathlib import Path

import torch

from kdc.models import VDSR, load_checkpoint
from kdc.runtime.bench import Runner
from kdc.runtime.tensors import RuntimeModelError, example_image, example_kspace, example_mask


def open_checkpoint(path: Path, *, threads: int | None, batch: int, size: tuple[int, int] | None) -> Runner:
    """Load a ``.pt`` checkpoint and bind random undersampled k-space (a random image for super-resolution) at
    ``size`` (default: its trained size)."""
    model, meta = load_checkpoint(path)
    size = size or meta.get("image_size")
    if not size:
        raise RuntimeModelError(f"{path}: checkpoint has no image size in its meta; pass --size H W")
    if threads:
        torch.set_num_threads(threads)
    shape = (int(size[0]), int(size[1]))
    if isinstance(model, VDSR):
        inputs = (torch.from_numpy(example_image(batch, shape)),)
    else:
        mask = example_mask(shape[1], float(meta.get("acceleration") or 1))
        inputs = (torch.from_numpy(example_kspace(batch, shape, mask)), torch.from_numpy(mask))

    def call() -> torch.Tensor:
        with torch.inference_mode():
            return model(*inputs)

    backend = f"torch {torch.__version__.split('+')[0]} eager CPU f32"
    return Runner(str(meta.get("role", "unknown")), backend, torch.get_num_threads(), tuple(inputs[0].shape), call)
